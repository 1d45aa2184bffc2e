"""The pool of sandbox worker processes, seen from the service.

Callers queue their calls; each worker has a thread of its own in the service that
takes every call waiting when the worker becomes free and carries them to it in one
frame (a batch). The worker runs them one after the other, each under its own CPU and
memory limits, and answers each as soon as it has run, so the service holds every
decision to its own wall-clock deadline. A decision that overruns, runs out of memory
or kills its worker fails alone: the worker is replaced, and the decisions of its
batch that had not run yet are queued again, first in line, for the next worker.

Threads call ``call()``; the HTTP service calls ``acall()`` from its event loop, which
waits for the answer without tying up a thread. Both share one FIFO queue, so neither
kind can starve the other.

A service with an event loop hands the workers to it (``drive_from``): the loop then
writes the frames and reads the answers itself (loop_driver.py), so a decision costs no
thread hand-offs, and the threads above are gone. Faults (a timeout, a crash, a worker to
replace) are still dealt with in a thread of their own, away from the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
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
import weakref
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
from policy_runtime.sandbox.loop_driver import LoopDriver

log = logging.getLogger(__name__)

# Time the parent allows on top of a policy's own limit for the pipe round trip.
_IPC_GRACE_SECONDS = 0.25
_START_TIMEOUT_SECONDS = 60.0
# Errors after which a worker is replaced rather than reused.
_RECYCLE_AFTER = (Timeout, MemoryLimit)
# Remembered shas per worker; must not exceed the worker's own cache size.
_KNOWN_SHAS = 100
# At most this many calls, and about this many bytes of them, go to a worker in one frame.
_MAX_BATCH = 64
_MAX_BATCH_BYTES = 1 << 20
# A worker that closed its answers' pipe has this long to exit before it is killed.
_EXIT_WAIT_SECONDS = 5.0
# A worker that cannot be started is tried again after this long.
_RESPAWN_DELAY_SECONDS = 1.0


class PoolBusy(Exception):
    """No worker became free within the queue timeout."""


class PoolClosed(Exception):
    """The pool has been shut down."""


def _worker_env() -> dict[str, str]:
    # Workers get no secrets: not the API token, not the database URI.
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
    return {k: os.environ[k] for k in keep if k in os.environ}


class _Crashed(Exception):
    """The worker closed its pipe: it is gone."""


@dataclass(eq=False)  # identity semantics: workers live in sets
class _Worker:
    proc: subprocess.Popen
    known: set[str] = field(default_factory=set)
    frames: protocol.FrameAssembler = field(default_factory=protocol.FrameAssembler)
    last_size: int = 0  # bytes of the last answer received

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send_payload(self, payload: bytes) -> None:
        assert self.proc.stdin is not None
        protocol.write_frame(self.proc.stdin.fileno(), payload)

    @functools.cached_property
    def pipe_buffer_bytes(self) -> int:
        """What the pipe to the worker holds unread (one page where it cannot be read)."""
        assert self.proc.stdin is not None
        try:
            return fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_GETPIPE_SZ)
        except (AttributeError, OSError):  # not Linux
            return 4096

    def buffered_answer(self) -> bytes | None:
        """The next whole answer among the bytes received so far (its size noted)."""
        payload = self.frames.next()
        if payload is not None:
            self.last_size = len(payload)
        return payload

    def receive(self, deadline: float | None) -> dict | None:
        """The next answer, None if the worker died; raises TimeoutError past the deadline
        and FrameError or ValueError for an answer that cannot be read."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            payload = self.buffered_answer()
            if payload is not None:
                return protocol.decode(payload)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                readable, _, _ = select.select([fd], [], [], max(0.0, remaining))
                if not readable:
                    raise TimeoutError
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self.frames.add(chunk)

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
    # the cluster a decision is for: the policy's module state is kept per URI and scope
    scope: str = ""
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
    # bytes of the worker's encoded answer (None: not known): a bound on the result's size
    size: int | None = field(default=None, compare=False)


def _output(answer: dict) -> dict:
    output = answer.get("output")
    return output if isinstance(output, dict) else {}


@dataclass(eq=False)
class _Job:
    """A queued call and the future its caller waits on."""

    call: PolicyCall
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    started: bool = False  # taken into a batch once: it can no longer be withdrawn
    send_source: bool = False  # the worker asked for the code


def _timeout(call: PolicyCall) -> Timeout:
    return Timeout(f"the policy did not finish within {call.timeout_seconds:g} s and was stopped")


class WorkerPool:
    """A fixed number of sandbox workers shared by all callers (thread-safe)."""

    ipc_grace_seconds = _IPC_GRACE_SECONDS

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
        # Calls waiting for a worker, first come first served (threads and coroutines).
        self._jobs: deque[_Job] = deque()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._batches = 0
        self._batched_calls = 0
        self._relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Relay] = (
            weakref.WeakKeyDictionary()
        )
        # Set by drive_from(): the event loop that runs the workers instead of the threads.
        self._driver: LoopDriver | None = None

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> WorkerPool:
        started = [threading.Event() for _ in range(self.size)]
        workers: list[_Worker | None] = [None] * self.size

        def first(index: int) -> None:
            try:
                workers[index] = self._spawn()
            except (OSError, RuntimeError) as exc:
                log.error("cannot start a sandbox worker: %s", exc)
            started[index].set()

        spawners = [threading.Thread(target=first, args=(i,)) for i in range(self.size)]
        for thread in spawners:
            thread.start()
        for thread in spawners:
            thread.join()
        if any(worker is None for worker in workers):
            for worker in workers:
                if worker is not None:
                    worker.kill()
            self.close()
            raise RuntimeError("the sandbox workers could not be started; see the log above")
        with self._lock:
            self._all.update(w for w in workers if w is not None)
        for worker in workers:
            thread = threading.Thread(
                target=self._serve, args=(worker,), name="sandbox-worker", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def drive_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let ``loop`` (running, in another thread or this one) carry the calls to the
        workers from now on; each worker thread hands its worker over once its batch is
        done. The loop's thread must not use the blocking ``call()`` afterwards, and the
        loop must run until the pool is closed: it also takes in replaced workers."""
        with self._lock:
            if self._driver is not None or self._closed:
                return
            self._driver = LoopDriver(self, loop)
            self._ready.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            driver = self._driver
        if driver is not None:  # the loop lets go of the workers first
            driver.stop()
        with self._lock:
            workers = list(self._all)
            self._all.clear()
            jobs = list(self._jobs)
            self._jobs.clear()
            self._ready.notify_all()
        for job in jobs:
            self._fail(job, PoolClosed("the sandbox pool is shut down"))
        for worker in workers:
            worker.kill()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        with self._lock:
            return sorted(w.pid for w in self._all)

    def batch_stats(self) -> tuple[int, int]:
        """(frames sent to workers, calls they carried) since the pool started."""
        return self._batches, self._batched_calls

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
        except (TimeoutError, OSError, ValueError, protocol.FrameError):
            hello = None
        if not hello or not hello.get("ready"):
            worker.kill()
            raise RuntimeError(f"sandbox worker {proc.pid} failed to start")
        return worker

    def _respawn(self) -> _Worker | None:
        """A new worker for this thread; None once the pool is closed."""
        while True:
            with self._lock:
                if self._closed:
                    return None
            try:
                worker = self._spawn()
            except (OSError, RuntimeError) as exc:
                log.error("cannot start a sandbox worker: %s", exc)
                time.sleep(_RESPAWN_DELAY_SECONDS)
                continue
            with self._lock:
                if not self._closed:
                    self._all.add(worker)
                    return worker
            worker.kill()
            return None

    def _drop(self, worker: _Worker) -> None:
        """A worker the pool no longer uses, now that it is closing."""
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def _retire(self, worker: _Worker, reason: str) -> None:
        with self._lock:
            live = worker in self._all  # else close() took it: no replacement to report
            self._all.discard(worker)
        worker.kill()
        if live:
            self._on_restart(reason)
            log.warning("sandbox worker %s replaced: %s", worker.pid, reason)

    # -- the thread of one worker ------------------------------------------------------
    def _serve(self, worker: _Worker | None) -> None:
        """Carry waiting calls to ``worker`` until the pool closes, replacing it as needed."""
        while worker is not None:
            batch = self._next_batch()
            if batch is None:
                break
            if not batch:  # an event loop drives the workers now: it takes this one
                assert self._driver is not None
                self._driver.adopt(worker)
                return
            try:
                healthy = self._run_batch(worker, batch)
            except BaseException as exc:  # the last line of defence: no caller waits forever
                log.exception("sandbox worker %s: batch failed", worker.pid)
                for job in batch:
                    self._fail(job, PolicyError(f"the sandbox pool failed ({type(exc).__name__})"))
                with self._lock:
                    retire = worker in self._all
                if retire:
                    self._retire(worker, "interrupted")
                healthy = False
            if not healthy:
                worker = self._respawn()
        if worker is not None:
            self._drop(worker)

    def _next_batch(self) -> list[_Job] | None:
        """Every call waiting (up to _MAX_BATCH), once there is one; None when closed, an
        empty batch once an event loop drives the workers."""
        with self._lock:
            while True:
                if self._closed:
                    return None
                if self._driver is not None:
                    return []
                batch = self._take_batch()
                if batch:
                    return batch
                self._ready.wait()

    def _take_batch(self) -> list[_Job]:
        """The calls waiting (up to _MAX_BATCH), taken off the queue; call with the lock."""
        batch: list[_Job] = []
        while self._jobs and len(batch) < _MAX_BATCH:
            job = self._jobs.popleft()
            if job.started or job.future.set_running_or_notify_cancel():
                job.started = True
                batch.append(job)
        return batch

    def _wake(self) -> None:
        """Calls are waiting: a worker thread, or the driving loop, takes them. Call with
        the lock."""
        self._ready.notify()
        if self._driver is not None:
            self._driver.wake()

    def _requeue(self, jobs: list[_Job]) -> None:
        """Calls that did not run: first in line again, for the next free worker."""
        if not jobs:
            return
        with self._lock:
            if not self._closed:
                self._jobs.extendleft(reversed(jobs))
                self._wake()
                return
        for job in jobs:
            self._fail(job, PoolClosed("the sandbox pool is shut down"))

    @staticmethod
    def _fail(job: _Job, error: BaseException) -> None:
        if job.started or job.future.set_running_or_notify_cancel():
            job.started = True
            if not job.future.done():
                job.future.set_exception(error)

    @staticmethod
    def _message(worker: _Worker, job: _Job, sent: set[str]) -> dict:
        call = job.call
        sha = call.sha256
        send = job.send_source or (sha not in worker.known and sha not in sent)
        if send:
            sent.add(sha)
        return {
            "op": call.op,
            "sha": sha,
            "source": call.source if send else None,
            "timeout": call.timeout_seconds,
            "memory_mb": call.memory_mb,
            "rule_id": call.rule_id,
            "scope": call.scope,
            "settings": call.settings,
            "parameters": call.parameters,
            "input_data": call.input_data,
            "context": call.context,
            "action": call.action,
            "data": call.data,
            "keep_context": call.keep_context,
        }

    def _encode_batch(self, worker: _Worker, batch: list[_Job]) -> tuple[list[_Job], bytes]:
        """The jobs that go in this frame and the frame; the unencodable fail here, the
        ones over the size budget are queued again."""
        sent: set[str] = set()
        parts: list[bytes] = []
        jobs: list[_Job] = []
        size = 0
        for index, job in enumerate(batch):
            if jobs and size > _MAX_BATCH_BYTES:
                self._requeue(batch[index:])
                break
            try:
                part = protocol.encode(self._message(worker, job, sent))
            except (ValueError, RecursionError) as exc:  # nothing reaches the worker
                # ValueError: UnencodableMessage, or code that is no valid text (its sha)
                reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
                self._fail(job, InvalidInput(
                    f"the call cannot be passed to the sandbox ({reason}): send only JSON "
                    "values (finite numbers, valid UTF-8 text)"
                ))
                continue
            parts.append(part)
            jobs.append(job)
            size += len(part)
        if jobs:
            self._batches += 1
            self._batched_calls += len(jobs)
        return jobs, b'{"batch":[' + b",".join(parts) + b"]}"

    def _run_batch(self, worker: _Worker, batch: list[_Job]) -> bool:
        """Run ``batch`` on ``worker``, settling every job or queueing it again; False when
        the worker was retired."""
        jobs, payload = self._encode_batch(worker, batch)
        if not jobs:
            return True
        try:
            worker.send_payload(payload)
        except OSError:  # the worker is gone before it read the calls
            return self._crashed(worker, jobs, 0)
        started = time.monotonic()
        for index, job in enumerate(jobs):
            deadline = started + job.call.timeout_seconds + self.ipc_grace_seconds
            try:
                answer = worker.receive(deadline)
            except TimeoutError:
                return self._timed_out(worker, jobs, index)
            except OSError:
                answer = None
            except (protocol.FrameError, ValueError, RecursionError):
                return self._unreadable(worker, jobs, index)
            if answer is None:
                return self._crashed(worker, jobs, index)
            started = time.monotonic()
            retire = self._take_answer(worker, job, answer)
            if retire:  # the worker stopped the batch after this call
                return self._retired(worker, jobs, index, retire)
        return True

    def _take_answer(self, worker: _Worker, job: _Job, answer: object) -> str | None:
        """Settle ``job`` from the worker's answer (or queue it again when the worker needs
        its code once more); the reason to retire the worker, if it must go."""
        if not isinstance(answer, dict):
            answer = {}
        if answer.get("need_source"):  # the worker evicted it: send it once more
            job.send_source = True
            self._requeue([job])
            return None
        if "error" not in answer:
            worker.known.add(job.call.sha256)
            if len(worker.known) > _KNOWN_SHAS:
                worker.known.clear()
        return self._settle(job, answer, worker.last_size)

    def _retired(self, worker: _Worker, jobs: list[_Job], index: int, reason: str) -> bool:
        """The worker must go after ``jobs[index]``, which it answered: the rest run again."""
        self._retire(worker, reason)
        self._requeue(jobs[index + 1:])
        return False

    def _timed_out(self, worker: _Worker, jobs: list[_Job], index: int) -> bool:
        """``jobs[index]`` overran its deadline: it fails, the worker goes, the rest run
        again."""
        self._retire(worker, "timeout")
        self._fail(jobs[index], _timeout(jobs[index].call))
        self._requeue(jobs[index + 1:])
        return False

    def _unreadable(self, worker: _Worker, jobs: list[_Job], index: int) -> bool:
        # Workers never send such answers; this is the backstop: the worker is not
        # trusted again.
        self._retire(worker, "unreadable answer")
        self._fail(jobs[index], PolicyError(
            "the sandbox worker sent an answer that cannot be read; "
            "the policy's result was discarded"
        ))
        self._requeue(jobs[index + 1:])
        return False

    def _recover(self, fault: Callable[[], object]) -> None:
        """For the driving loop, in a thread of its own: deal with a worker's fault (one of
        the handlers above, which retire the worker and settle or requeue its calls), then
        hand a new worker to the loop."""

        def run() -> None:
            try:
                fault()
            except BaseException:  # the last line of defence: the pool keeps its size
                log.exception("sandbox pool: a worker's fault could not be dealt with")
            worker = self._respawn()
            if worker is not None:
                assert self._driver is not None
                self._driver.adopt(worker)

        threading.Thread(target=run, name="sandbox-recovery", daemon=True).start()

    def _crashed(self, worker: _Worker, jobs: list[_Job], index: int) -> bool:
        """The worker died running ``jobs[index]``: that call fails, the rest run again."""
        try:
            code = worker.proc.wait(timeout=_EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:  # closed its pipe but lives on: it goes now
            worker.kill()
            code = worker.proc.returncode
        job = jobs[index]
        if code == -signal.SIGXCPU:
            self._retire(worker, "timeout")
            self._fail(job, Timeout("the policy used more CPU time than its limit allows"))
        else:
            self._retire(worker, "crash")
            self._fail(job, PolicyError(
                f"the sandbox worker stopped unexpectedly (exit status {code}); "
                "the policy was not evaluated"
            ))
        self._requeue(jobs[index + 1:])
        return False

    @staticmethod
    def _settle(job: _Job, answer: dict, size: int) -> str | None:
        """Complete the job from the worker's answer; the reason to retire the worker, if
        the call left state behind that the next caller must not meet."""
        retire = "recycle" if answer.get("recycle") else None
        if job.future.done():  # failed already: the pool closed while it ran
            return retire
        if answer.get("ok") and "result" in answer:
            job.future.set_result(
                CallAnswer(answer["result"], _output(answer), answer.get("context"), size)
            )
            return retire
        error = error_from_dict(answer.get("error") or {})
        error.output = _output(answer)  # type: ignore[attr-defined]
        if retire is None and isinstance(error, _RECYCLE_AFTER):
            retire = error.type_name.lower()
        job.future.set_exception(error)
        return retire

    # -- calls ------------------------------------------------------------------------
    def _submit(self, call: PolicyCall) -> _Job:
        job = _Job(call)
        with self._lock:
            if self._closed:
                raise PoolClosed("the sandbox pool is shut down")
            self._jobs.append(job)
            self._wake()
        return job

    def _busy(self) -> PoolBusy:
        return PoolBusy(
            f"all {self.size} sandbox workers stayed busy for "
            f"{self.queue_timeout_seconds:g} s; retry later or raise AIOS_POOL_SIZE"
        )

    def call(self, call: PolicyCall) -> Any:
        """Run one call in a worker; return its result or raise a typed error."""
        return self.call_answer(call).result

    async def acall(self, call: PolicyCall) -> Any:
        """call() for an event loop: no thread waits while the policy runs."""
        return (await self.acall_answer(call)).result

    def call_answer(self, call: PolicyCall) -> CallAnswer:
        """call(), with the policy's printed output, log records and kept context. A
        typed error raised for the policy carries its output as ``error.output``."""
        driver = self._driver
        if driver is not None and driver.in_loop_thread():
            # it would wait for an answer only this thread can read
            raise RuntimeError("call() from the loop that drives the pool: use acall()")
        future = self._submit(call).future
        try:
            return future.result(timeout=self.queue_timeout_seconds)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # still queued: withdrawn
                raise self._busy() from None
        return future.result()  # running: its own deadline ends it

    async def acall_answer(self, call: PolicyCall) -> CallAnswer:
        """call_answer() for an event loop."""
        loop = asyncio.get_running_loop()
        relay = self._relays.get(loop)
        if relay is None:
            relay = self._relays[loop] = _Relay(loop)
        answer: asyncio.Future[CallAnswer] = loop.create_future()
        future = self._submit(call).future

        def on_queue_timeout() -> None:
            if future.cancel() and not answer.done():
                answer.set_exception(self._busy())

        future.add_done_callback(functools.partial(relay.post, answer))
        # A plain timer rather than asyncio.wait_for(), which costs more per call.
        timer = loop.call_later(self.queue_timeout_seconds, on_queue_timeout)
        try:
            return await answer
        except asyncio.CancelledError:
            future.cancel()  # withdrawn if still queued; a running call just finishes
            raise
        finally:
            timer.cancel()


class _Relay:
    """Hands answers from the workers' threads to one event loop, waking it once for all
    the answers that arrive together rather than once per answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Future, concurrent.futures.Future]] = []
        self._thread = threading.get_ident()  # made by acall_answer(), on the loop's thread

    def post(self, answer: asyncio.Future, done: concurrent.futures.Future) -> None:
        if done.cancelled():
            return
        if self._thread == threading.get_ident():  # settled by the loop itself
            _deliver_one(answer, done)
            return
        with self._lock:
            self._pending.append((answer, done))
            if len(self._pending) > 1:  # a wake-up is already on its way
                return
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody waits
            with self._lock:
                self._pending.clear()

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for answer, done in pending:
            _deliver_one(answer, done)


def _deliver_one(answer: asyncio.Future, done: concurrent.futures.Future) -> None:
    if answer.done():  # the caller gave up
        return
    exc = done.exception()
    if exc is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(done.result())
