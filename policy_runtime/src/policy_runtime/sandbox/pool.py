"""The pool of sandbox worker processes, seen from the service.

Each evaluation takes an idle worker, sends it one request and waits for the answer with
a wall-clock deadline. A worker that overruns, runs out of memory or dies is killed and
replaced in the background, and the caller gets a typed error; the pool keeps serving.

Threads call ``call()``; the HTTP service calls ``acall()`` from its event loop, which
waits for the worker's answer without tying up a thread. Both share one FIFO of
waiting callers, so neither kind can starve the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policy_runtime.errors import (
    InvalidInput,
    MemoryLimit,
    PolicyError,
    Timeout,
    error_from_dict,
)
from policy_runtime.sandbox import protocol

log = logging.getLogger(__name__)

# Time the parent allows on top of a policy's own limit for the pipe round trip.
_IPC_GRACE_SECONDS = 0.25
_START_TIMEOUT_SECONDS = 60.0
# Errors after which a worker is replaced rather than reused.
_RECYCLE_AFTER = (Timeout, MemoryLimit)
# Remembered shas per worker; must not exceed the worker's own cache size.
_KNOWN_SHAS = 100
# Requests larger than a pipe buffer are written from a thread, not the event loop.
_PIPE_BUFFER_BYTES = 64 * 1024


class PoolBusy(Exception):
    """No worker became free within the queue timeout."""


class PoolClosed(Exception):
    """The pool has been shut down."""


def _worker_env() -> dict[str, str]:
    # Workers get no secrets: not the API token, not the database URI.
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
    return {k: os.environ[k] for k in keep if k in os.environ}


@dataclass(eq=False)  # identity semantics: workers live in sets
class _Worker:
    proc: subprocess.Popen
    known: set[str] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: dict) -> None:
        assert self.proc.stdin is not None
        protocol.write_frame(self.proc.stdin.fileno(), protocol.encode(message))

    def receive(self, deadline: float | None) -> dict | None:
        """The next answer, None if the worker died; raises TimeoutError past the deadline."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        if deadline is not None:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(0.0, remaining))
            if not readable:
                raise TimeoutError
        payload = protocol.read_frame(fd)
        return None if payload is None else protocol.decode(payload)

    async def send_async(self, message: dict) -> None:
        assert self.proc.stdin is not None
        payload = protocol.encode(message)
        if len(payload) < _PIPE_BUFFER_BYTES:  # fits the idle worker's pipe: never blocks
            protocol.write_frame(self.proc.stdin.fileno(), payload)
        else:
            await asyncio.to_thread(protocol.write_frame, self.proc.stdin.fileno(), payload)

    async def receive_async(self, deadline: float) -> dict | None:
        """receive() for the event loop: read as data arrives, never blocking the loop."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes | None] = loop.create_future()
        frames = protocol.FrameAssembler()

        def on_readable() -> None:
            if answer.done():
                return
            try:
                chunk = os.read(fd, 1 << 20)  # readable: returns at once
                payload = frames.feed(chunk) if chunk else None
            except (OSError, protocol.FrameError) as exc:
                answer.set_exception(exc)
                return
            if not chunk or payload is not None:
                answer.set_result(payload)

        def on_deadline() -> None:
            if not answer.done():
                answer.set_exception(TimeoutError())

        loop.add_reader(fd, on_readable)
        # A plain timer rather than asyncio.wait_for(), which costs more per call.
        timer = loop.call_later(max(0.0, deadline - time.monotonic()), on_deadline)
        try:
            payload = await answer
        finally:
            timer.cancel()
            loop.remove_reader(fd)
        return None if payload is None else protocol.decode(payload)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@dataclass(frozen=True)
class PolicyCall:
    """One request to the sandbox."""

    op: str  # "eval", "check" or "manage"
    source: str
    timeout_seconds: float
    memory_mb: int
    rule_id: str = ""
    settings: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    input_data: Any = None
    context: dict = field(default_factory=dict)
    action: str = ""
    data: Any = None
    # eval: also return ``context`` as the policy left it (CallAnswer.context)
    keep_context: bool = False

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


@dataclass(frozen=True)
class CallAnswer:
    """A call's result with what came along: what the policy printed and logged
    (``{"printed": str, "logs": [...]}``) and, when asked for, its context."""

    result: Any
    output: dict = field(default_factory=dict)
    context: Any = None


def _output(answer: dict) -> dict:
    output = answer.get("output")
    return output if isinstance(output, dict) else {}


class WorkerPool:
    """A fixed number of sandbox workers shared by all callers (thread-safe)."""

    def __init__(
        self,
        size: int,
        max_memory_mb: int,
        *,
        queue_timeout_seconds: float = 10.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("the pool needs at least one worker")
        self.size = size
        self.max_memory_mb = max_memory_mb
        self.queue_timeout_seconds = queue_timeout_seconds
        self._on_restart = on_restart or (lambda reason: None)
        # A stack: the most recently used (warmest) worker goes out first.
        self._idle: list[_Worker] = []
        # Callers waiting for a worker, first come first served (threads and coroutines).
        self._waiters: deque[concurrent.futures.Future[_Worker]] = deque()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> WorkerPool:
        threads = [threading.Thread(target=self._add_worker) for _ in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(self._all) < self.size:
            self.close()
            raise RuntimeError("the sandbox workers could not be started; see the log above")
        return self

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            waiters = list(self._waiters)
            self._waiters.clear()
        for waiter in waiters:
            if waiter.set_running_or_notify_cancel():
                waiter.set_exception(PoolClosed("the sandbox pool is shut down"))
        for worker in workers:
            worker.kill()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        with self._lock:
            return sorted(w.pid for w in self._all)

    def _spawn(self) -> _Worker:
        proc = subprocess.Popen(
            [
                sys.executable, "-I", "-W", "ignore", "-m", "policy_runtime.sandbox.worker",
                "--max-memory-mb", str(self.max_memory_mb),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_worker_env(),
            close_fds=True,
        )
        worker = _Worker(proc)
        try:
            hello = worker.receive(time.monotonic() + _START_TIMEOUT_SECONDS)
        except TimeoutError:
            hello = None
        if not hello or not hello.get("ready"):
            worker.kill()
            raise RuntimeError(f"sandbox worker {proc.pid} failed to start")
        return worker

    def _add_worker(self) -> None:
        try:
            worker = self._spawn()
        except (OSError, RuntimeError) as exc:
            log.error("cannot start a sandbox worker: %s", exc)
            return
        with self._lock:
            if self._closed:
                worker.kill()
                return
            self._all.add(worker)
        self._release(worker)

    def _replace(self, worker: _Worker, reason: str) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()
        self._on_restart(reason)
        log.warning("sandbox worker %s replaced: %s", worker.pid, reason)
        threading.Thread(target=self._add_worker, daemon=True).start()

    # -- handing workers out -----------------------------------------------------------
    def _take_or_wait(self) -> _Worker | concurrent.futures.Future[_Worker]:
        """An idle worker, or a future that a released worker will complete."""
        with self._lock:
            if self._closed:
                raise PoolClosed("the sandbox pool is shut down")
            if self._idle and not self._waiters:
                return self._idle.pop()
            waiter: concurrent.futures.Future[_Worker] = concurrent.futures.Future()
            self._waiters.append(waiter)
            return waiter

    def _release(self, worker: _Worker) -> None:
        """Hand a healthy worker to the longest waiting caller, else make it idle."""
        with self._lock:
            if self._closed:
                self._all.discard(worker)
            while self._waiters and not self._closed:
                waiter = self._waiters.popleft()
                if waiter.set_running_or_notify_cancel():  # False: that caller gave up
                    waiter.set_result(worker)
                    return
            if not self._closed:
                self._idle.append(worker)
                return
        worker.kill()  # returned after close()

    def _busy(self) -> PoolBusy:
        return PoolBusy(
            f"all {self.size} sandbox workers stayed busy for "
            f"{self.queue_timeout_seconds:g} s; retry later or raise AIOS_POOL_SIZE"
        )

    def _acquire(self) -> _Worker:
        taken = self._take_or_wait()
        if isinstance(taken, _Worker):
            return taken
        try:
            return taken.result(timeout=self.queue_timeout_seconds)
        except concurrent.futures.TimeoutError:
            if taken.cancel():
                raise self._busy() from None
            return taken.result()  # a worker arrived as we gave up: use it

    async def _acquire_async(self) -> _Worker:
        taken = self._take_or_wait()
        if isinstance(taken, _Worker):
            return taken
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(taken)), self.queue_timeout_seconds
            )
        except (TimeoutError, asyncio.CancelledError) as exc:
            if taken.cancel():
                if isinstance(exc, TimeoutError):
                    raise self._busy() from None
                raise
            worker = taken.result()  # a worker arrived as we gave up
            if isinstance(exc, asyncio.CancelledError):
                self._release(worker)
                raise
            return worker

    # -- calls ------------------------------------------------------------------------
    def call(self, call: PolicyCall) -> Any:
        """Run one call in a worker; return its result or raise a typed error."""
        return self.call_answer(call).result

    async def acall(self, call: PolicyCall) -> Any:
        """call() for an event loop: no thread waits while the policy runs."""
        return (await self.acall_answer(call)).result

    def call_answer(self, call: PolicyCall) -> CallAnswer:
        """call(), with the policy's printed output, log records and kept context. A
        typed error raised for the policy carries its output as ``error.output``."""
        worker = self._acquire()
        try:
            answer = self._exchange(worker, call)
        except BaseException as exc:  # _failed() decides
            answer = self._failed(worker, call, exc)
        return self._settle(worker, answer)

    async def acall_answer(self, call: PolicyCall) -> CallAnswer:
        """call_answer() for an event loop."""
        worker = await self._acquire_async()
        try:
            answer = await self._exchange_async(worker, call)
        except BaseException as exc:  # _failed() decides
            answer = self._failed(worker, call, exc)
        return self._settle(worker, answer)

    def _failed(self, worker: _Worker, call: PolicyCall, exc: BaseException) -> None:
        """Handle an exchange that broke off; None (a dead worker) when that is what it was."""
        if isinstance(exc, TimeoutError):
            self._replace(worker, "timeout")
            raise Timeout(
                f"the policy did not finish within {call.timeout_seconds:g} s and was stopped"
            ) from None
        if isinstance(exc, OSError):  # the pipe broke: the worker is gone
            return None
        if isinstance(exc, protocol.UnencodableMessage):  # nothing reached the worker
            self._release(worker)
            raise InvalidInput(
                f"the call cannot be passed to the sandbox ({exc}): send only JSON values "
                "(finite numbers, valid UTF-8 text)"
            ) from None
        if isinstance(exc, (protocol.FrameError, ValueError, RecursionError)):
            # The answer cannot be read (workers never send such answers; this is the
            # backstop): the worker is not trusted again.
            self._replace(worker, "unreadable answer")
            raise PolicyError(
                "the sandbox worker sent an answer that cannot be read; "
                "the policy's result was discarded"
            ) from None
        self._replace(worker, "interrupted")  # e.g. the caller was cancelled mid-call
        raise exc

    def _settle(self, worker: _Worker, answer: dict | None) -> CallAnswer:
        """The worker's answer as a result or a typed error; the worker goes back or away."""
        if answer is None:
            code = worker.proc.wait()
            if code == -signal.SIGXCPU:
                self._replace(worker, "timeout")
                raise Timeout("the policy used more CPU time than its limit allows")
            self._replace(worker, "crash")
            raise PolicyError(
                f"the sandbox worker stopped unexpectedly (exit status {code}); "
                "the policy was not evaluated"
            )
        # A worker asks to be replaced when a call left state behind that the next
        # caller must not meet (retained memory, changed shared state).
        recycle = bool(answer.get("recycle"))
        if answer.get("ok"):
            if recycle:
                self._replace(worker, "recycle")
            else:
                self._release(worker)
            return CallAnswer(answer["result"], _output(answer), answer.get("context"))
        error = error_from_dict(answer.get("error") or {})
        error.output = _output(answer)  # type: ignore[attr-defined]
        if recycle:
            self._replace(worker, "recycle")
        elif isinstance(error, _RECYCLE_AFTER):
            self._replace(worker, error.type_name.lower())
        else:
            self._release(worker)
        raise error

    @staticmethod
    def _message(worker: _Worker, call: PolicyCall) -> dict:
        return {
            "op": call.op,
            "sha": call.sha256,
            "source": None if call.sha256 in worker.known else call.source,
            "timeout": call.timeout_seconds,
            "memory_mb": call.memory_mb,
            "rule_id": call.rule_id,
            "settings": call.settings,
            "parameters": call.parameters,
            "input_data": call.input_data,
            "context": call.context,
            "action": call.action,
            "data": call.data,
            "keep_context": call.keep_context,
        }

    @staticmethod
    def _remember(worker: _Worker, call: PolicyCall, answer: dict | None) -> None:
        if answer is not None and "error" not in answer:
            worker.known.add(call.sha256)
            if len(worker.known) > _KNOWN_SHAS:
                worker.known.clear()

    def _exchange(self, worker: _Worker, call: PolicyCall) -> dict | None:
        message = self._message(worker, call)
        deadline = time.monotonic() + call.timeout_seconds + _IPC_GRACE_SECONDS
        for _ in range(2):
            worker.send(message)
            answer = worker.receive(deadline)
            if answer is None or not answer.get("need_source"):
                break
            message["source"] = call.source  # the worker evicted it: send it once more
        self._remember(worker, call, answer)
        return answer

    async def _exchange_async(self, worker: _Worker, call: PolicyCall) -> dict | None:
        message = self._message(worker, call)
        deadline = time.monotonic() + call.timeout_seconds + _IPC_GRACE_SECONDS
        for _ in range(2):
            await worker.send_async(message)
            answer = await worker.receive_async(deadline)
            if answer is None or not answer.get("need_source"):
                break
            message["source"] = call.source
        self._remember(worker, call, answer)
        return answer
