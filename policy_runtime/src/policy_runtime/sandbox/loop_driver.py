"""The pool's workers driven from an event loop (``WorkerPool.drive_from``).

Without it, each worker has a thread in the service that carries calls to it, and every
decision an event loop waits for crosses two threads: the loop wakes the worker's thread,
which wakes the loop again with the answer, each time also taking the interpreter lock
from the other. Here the loop itself writes a worker's frame and reads its answers as
they come (its reader on the worker's pipe), so a decision costs the loop one write and
one read, and calls that arrive while a worker is busy still travel to it in one frame.

Only the happy path runs on the loop. A call past its deadline, a worker that died, sent
an unreadable answer or asked to be replaced: the worker is handed to the pool's fault
handling in a thread of its own (it kills and waits for processes) and its replacement
comes back to the loop. Calls from other threads still go through the pool's queue; the
loop is woken to take them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policy_runtime.errors import PolicyError
from policy_runtime.sandbox import protocol

if TYPE_CHECKING:
    from policy_runtime.sandbox.pool import WorkerPool, _Job, _Worker

log = logging.getLogger(__name__)

# A frame that fits the worker's pipe buffer (64 KiB on Linux, unless the system ran short
# of pipe memory) is written from the loop: the worker has read everything sent before (it
# reads a whole frame before it runs it), so the buffer is empty and the write cannot
# block. Larger frames are written from a thread.
_INLINE_WRITE_MAX_BYTES = 32 * 1024


@dataclass(eq=False)
class _Trip:
    """One frame of calls on its way through a worker: the answers come back in order."""

    worker: _Worker
    jobs: list[_Job]
    index: int = 0  # the call whose answer comes next
    over: bool = False  # finished, or handed to the fault handling (see end())
    deadline: float = 0.0  # loop time by which the next answer is due
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    timer_at: float = 0.0  # when the timer fires: at or before the deadline

    def end(self) -> None:
        self.over = True
        if self.timer is not None:
            self.timer.cancel()


class LoopDriver:
    """Carries the pool's calls to its workers from one event loop."""

    def __init__(self, pool: WorkerPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._idle: list[_Worker] = []
        self._trips: dict[_Worker, _Trip] = {}
        self._wake_scheduled = False  # guarded by the pool's lock
        self._stopped = False
        self._thread: int | None = None  # the loop's thread, once known
        with contextlib.suppress(RuntimeError):  # no loop runs in this thread
            if asyncio.get_running_loop() is loop:
                self._thread = threading.get_ident()

    def in_loop_thread(self) -> bool:
        return self._thread == threading.get_ident()

    # -- from any thread --------------------------------------------------------------
    def adopt(self, worker: _Worker) -> None:
        """Take ``worker`` (a worker thread's, or a replacement) into the loop."""
        try:
            self._loop.call_soon_threadsafe(self._adopt, worker)
        except RuntimeError:  # the loop is closed: no one will use the worker
            self._pool._drop(worker)

    def wake(self) -> None:
        """Calls are queued: take them on the loop's next turn. Called with the pool's
        lock held; calls queued before that turn travel together."""
        if self._wake_scheduled:
            return
        self._wake_scheduled = True
        try:
            if self.in_loop_thread():
                self._loop.call_soon(self._woken)
            else:
                self._loop.call_soon_threadsafe(self._woken)
        except RuntimeError:  # the loop is closed; close() fails what is queued
            self._wake_scheduled = False

    def stop(self) -> None:
        """Let go of every worker; the calls they were running fail (the pool is closed).
        Waits for the loop to do it, when called from another thread while it runs."""
        if self.in_loop_thread() or not self._loop.is_running():
            self._stop()
            return
        done = threading.Event()

        def stop_and_signal() -> None:
            try:
                self._stop()
            finally:
                done.set()

        try:
            self._loop.call_soon_threadsafe(stop_and_signal)
        except RuntimeError:  # the loop is closed, and its readers with it
            return
        done.wait(timeout=5)

    # -- on the loop ------------------------------------------------------------------
    def _adopt(self, worker: _Worker) -> None:
        self._thread = threading.get_ident()
        if self._stopped:
            self._pool._drop(worker)
            return
        self._loop.add_reader(_answers_fd(worker), self._readable, worker)
        self._idle.append(worker)
        self._dispatch()

    def _woken(self) -> None:
        with self._pool._lock:
            self._wake_scheduled = False
        self._dispatch()

    def _dispatch(self) -> None:
        """Every idle worker takes the calls waiting, while there are some."""
        while self._idle and not self._stopped:
            with self._pool._lock:
                batch = self._pool._take_batch()
            if not batch:
                return
            worker = self._idle[-1]
            try:
                jobs, payload = self._pool._encode_batch(worker, batch)
            except BaseException:  # the last line of defence: no caller waits forever
                log.exception("sandbox pool: a batch could not be encoded")
                for job in batch:
                    self._pool._fail(job, PolicyError("the sandbox pool failed to send the call"))
                continue
            if not jobs:  # none could be encoded: each has failed already
                continue
            self._idle.pop()
            self._send(_Trip(worker, jobs), payload)

    def _send(self, trip: _Trip, payload: bytes) -> None:
        worker = trip.worker
        self._trips[worker] = trip
        fits = min(worker.pipe_buffer_bytes, _INLINE_WRITE_MAX_BYTES) - protocol.HEADER_BYTES
        if len(payload) <= fits:
            self._arm(trip)
            try:
                worker.send_payload(payload)
            except OSError:  # the worker is gone before it read the calls
                self._fault(trip, self._pool._crashed, 0)
            return
        # The deadlines run once the worker has the frame (see _sent). A copy of the
        # pipe's descriptor: if the worker is replaced meanwhile, its number may be reused
        # for the replacement's pipe, which must not get the rest.
        assert worker.proc.stdin is not None
        fd = os.dup(worker.proc.stdin.fileno())
        sent = self._loop.run_in_executor(None, _write_and_close, fd, payload)
        sent.add_done_callback(functools.partial(self._sent, trip))

    def _sent(self, trip: _Trip, sent: asyncio.Future) -> None:
        if trip.over:
            return
        if sent.exception() is not None:
            self._fault(trip, self._pool._crashed, trip.index)
        else:  # the first call's deadline runs from the moment the worker has its frame
            self._arm(trip)

    def _arm(self, trip: _Trip) -> None:
        """The deadline of the call whose answer comes next. A timer set for an earlier
        call that is due no later is kept (see _expired): most answers then cost no new
        timer."""
        job = trip.jobs[trip.index]
        trip.deadline = (
            self._loop.time() + job.call.timeout_seconds + self._pool.ipc_grace_seconds
        )
        if trip.timer is None or trip.deadline < trip.timer_at:
            self._set_timer(trip)

    def _set_timer(self, trip: _Trip) -> None:
        if trip.timer is not None:
            trip.timer.cancel()
        trip.timer_at = trip.deadline
        trip.timer = self._loop.call_at(trip.deadline, self._expired, trip)

    def _expired(self, trip: _Trip) -> None:
        trip.timer = None
        if trip.over:
            return
        if self._loop.time() < trip.deadline:  # answers came: the next is due later
            self._set_timer(trip)
            return
        self._fault(trip, self._pool._timed_out, trip.index)

    def _readable(self, worker: _Worker) -> None:
        trip = self._trips.get(worker)
        try:
            chunk = os.read(_answers_fd(worker), 1 << 20)
        except OSError:
            chunk = b""
        if trip is None:  # an idle worker died (or spoke out of turn): replace it
            if worker in self._idle:
                self._idle.remove(worker)
            self._loop.remove_reader(_answers_fd(worker))
            reason = "unreadable answer" if chunk else "crash"
            self._pool._recover(functools.partial(self._pool._retire, worker, reason))
            return
        if not chunk:
            self._fault(trip, self._pool._crashed, trip.index)
            return
        worker.frames.add(chunk)
        answered = trip.index
        while not trip.over:
            try:
                payload = worker.buffered_answer()
                if payload is None:
                    break
                answer = protocol.decode(payload)
            except (protocol.FrameError, ValueError, RecursionError):
                self._fault(trip, self._pool._unreadable, trip.index)
                return
            retire = self._pool._take_answer(worker, trip.jobs[trip.index], answer)
            if retire:  # the worker stopped the batch after this call
                self._fault(trip, self._pool._retired, trip.index, retire)
                return
            trip.index += 1
            if trip.index == len(trip.jobs):
                self._finish(trip)
                return
        if trip.index != answered and not trip.over:
            self._arm(trip)  # the next call's deadline runs from the last answer

    def _finish(self, trip: _Trip) -> None:
        trip.end()
        del self._trips[trip.worker]
        self._idle.append(trip.worker)
        self._dispatch()

    def _fault(self, trip: _Trip, handler: Callable[..., object], *args: object) -> None:
        """Hand the worker and its trip to the pool's fault handling (``handler``)."""
        trip.end()
        self._trips.pop(trip.worker, None)
        self._loop.remove_reader(_answers_fd(trip.worker))
        self._pool._recover(functools.partial(handler, trip.worker, trip.jobs, *args))

    def _stop(self) -> None:
        self._stopped = True
        for worker in [*self._idle, *self._trips]:
            with contextlib.suppress(RuntimeError):  # the loop is closed, its readers gone
                self._loop.remove_reader(_answers_fd(worker))
        self._idle.clear()
        for trip in list(self._trips.values()):
            trip.end()
            self._pool._requeue(trip.jobs[trip.index:])  # the pool is closed: they fail
        self._trips.clear()


def _answers_fd(worker: _Worker) -> int:
    assert worker.proc.stdout is not None
    return worker.proc.stdout.fileno()


def _write_and_close(fd: int, payload: bytes) -> None:
    try:
        protocol.write_frame(fd, payload)
    finally:
        os.close(fd)
