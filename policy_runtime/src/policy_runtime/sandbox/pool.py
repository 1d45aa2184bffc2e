"""The pool of sandbox worker processes, seen from the service.

Each evaluation takes an idle worker, sends it one request and waits for the answer with
a wall-clock deadline. A worker that overruns, runs out of memory or dies is killed and
replaced in the background, and the caller gets a typed error; the pool keeps serving.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policy_runtime.errors import (
    MemoryLimit,
    PolicyError,
    PolicyRuntimeError,
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


class PoolBusy(Exception):  # noqa: N818
    """No worker became free within the queue timeout."""


class PoolClosed(Exception):  # noqa: N818
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

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


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
        # LIFO keeps the most recently used (warmest) workers busy.
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
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
        self._idle.put(worker)

    def _replace(self, worker: _Worker, reason: str) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()
        self._on_restart(reason)
        log.warning("sandbox worker %s replaced: %s", worker.pid, reason)
        threading.Thread(target=self._add_worker, daemon=True).start()

    # -- calls ------------------------------------------------------------------------
    def _acquire(self) -> _Worker:
        if self._closed:
            raise PoolClosed("the sandbox pool is shut down")
        try:
            return self._idle.get(timeout=self.queue_timeout_seconds)
        except queue.Empty:
            raise PoolBusy(
                f"all {self.size} sandbox workers stayed busy for "
                f"{self.queue_timeout_seconds:g} s; retry later or raise AIOS_POOL_SIZE"
            ) from None

    def call(self, call: PolicyCall) -> Any:
        """Run one call in a worker; return its result or raise a typed error."""
        worker = self._acquire()
        try:
            answer = self._exchange(worker, call)
        except TimeoutError:
            self._replace(worker, "timeout")
            raise Timeout(
                f"the policy did not finish within {call.timeout_seconds:g} s and was stopped"
            ) from None
        except OSError:  # the pipe broke: the worker is gone
            answer = None
        except BaseException:
            self._replace(worker, "interrupted")
            raise
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
        if answer.get("ok"):
            self._idle.put(worker)
            return answer["result"]
        error = error_from_dict(answer.get("error") or {})
        if isinstance(error, _RECYCLE_AFTER):
            self._replace(worker, error.type_name.lower())
        else:
            self._idle.put(worker)
        raise error

    def _exchange(self, worker: _Worker, call: PolicyCall) -> dict | None:
        sha = call.sha256
        message = {
            "op": call.op,
            "sha": sha,
            "source": None if sha in worker.known else call.source,
            "timeout": call.timeout_seconds,
            "memory_mb": call.memory_mb,
            "rule_id": call.rule_id,
            "settings": call.settings,
            "parameters": call.parameters,
            "input_data": call.input_data,
            "context": call.context,
            "action": call.action,
            "data": call.data,
        }
        deadline = time.monotonic() + call.timeout_seconds + _IPC_GRACE_SECONDS
        for _ in range(2):
            worker.send(message)
            answer = worker.receive(deadline)
            if answer is None or not answer.get("need_source"):
                break
            message["source"] = call.source  # the worker evicted it: send it once more
        if answer is not None and "error" not in answer:
            worker.known.add(sha)
            if len(worker.known) > _KNOWN_SHAS:
                worker.known.clear()
        return answer


def run_call(pool: WorkerPool, call: PolicyCall) -> tuple[bool, Any, float]:
    """``(ok, result or error dict, duration_ms)`` of one call, never raising typed errors."""
    started = time.perf_counter()
    try:
        result = pool.call(call)
        ok = True
    except PolicyRuntimeError as exc:
        result = exc.to_dict()
        ok = False
    return ok, result, (time.perf_counter() - started) * 1000
