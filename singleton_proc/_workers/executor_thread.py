"""``process_pool``'s manager thread: the only one that touches its ``WorkerPool``.

Callers queue jobs (a submitted call, or a chunk of a ``map``) in a locked
inbox and wake the thread by a byte on a pipe it waits on beside its workers
(``step(also=)``), written only when the inbox turns non-empty and no byte is
pending. A job goes to the pool when a worker is free for it, so its future
can be cancelled until then.

Only the process that started a pool may use or stop it: a child forked
meanwhile has a copy of this object but no thread behind it, and the workers
are its parent's. There, queuing a job raises, and shutdown, stop and garbage
collection do nothing, at once.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import Pipe
from typing import TYPE_CHECKING

from singleton_proc._base.interrupts import signals_deferred
from singleton_proc._base.waits import wait_until
from singleton_proc._errors import UnpicklableError

# Its exit handler stops every pool at once: registered before ours, it runs
# after ours, once the executors have finished their work.
from . import pool_registry  # noqa: F401
from .chunks import CHUNKS_AHEAD, Outcome
from .executor_jobs import next_job
from .protocol import Mode

if TYPE_CHECKING:
    from .engine import WorkerPool
    from .executor_jobs import Job

__all__ = ["Manager"]

_log = logging.getLogger("singleton_proc")
#: How long stopping waits for the manager thread (it reacts within
#: milliseconds unless a logging handler or a done-callback blocks it).
_JOIN_BOUND = 30.0
#: Ctrl-C pressed again this soon after the press that stops a pool is the
#: same press: a burst (a terminal signals every process of the group, a
#: key pressed repeatedly) gives one ``KeyboardInterrupt``.
_SAME_PRESS = 0.1
#: The managers whose thread runs (in the process that started them).
_live: set[Manager] = set()


class Manager:
    """The state callers share with the manager thread, and the thread itself."""

    def __init__(self, pool: WorkerPool, n: int) -> None:
        """Start the thread that runs ``pool`` (of ``n`` workers) from now on."""
        self.n = n
        self.owner = os.getpid()
        # Reentrant: a finalizer (shutdown of an executor collected as garbage)
        # may run in any thread, at any allocation, the lock held or not.
        self._lock = threading.RLock()
        self._inbox: deque[Job] = deque()
        self._wake_r, self._wake_w = Pipe(duplex=False)
        self._woken = False  # a byte is in the pipe
        self._closing = False  # no new jobs; end once the work is done
        self._stop_reason: str | None = None  # stop now, and why
        self._broken: BaseException | None = None
        #: Calls left early: (their jobs, whether to stop running ones, done).
        self._cancels: list[tuple[list[Job], bool, threading.Event]] = []
        self._running: list[Job] = []  # in the pool (manager thread only)
        self._next = 0  # the pool's index for the next item
        # Set as the thread ends: waiting on it may be interrupted (Ctrl-C)
        # safely, unlike Thread.join (before 3.13, an interrupted join can
        # mark a running thread as ended: bpo-45274's fix).
        self._ended = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(pool,), name="singleton_proc-process_pool",
            daemon=True)  # fmt: skip
        _live.add(self)
        self.thread.start()

    def ours(self) -> bool:
        """Whether this process started the pool (not a child forked since).

        Checked before the lock is taken: the manager thread may have held it
        when the child was forked, and in the child nobody ever releases it.
        """
        return os.getpid() == self.owner

    def post(self, job: Job, refusal: str) -> None:
        """Queue ``job`` for the pool, or raise ``RuntimeError(refusal)`` if closed."""
        if not self.ours():
            raise RuntimeError(
                f"this process_pool belongs to process {self.owner}, which this "
                "process was forked from: its workers are not ours to use; start "
                "a process_pool here"
            )
        with self._lock:
            if self._broken is not None:
                raise BrokenProcessPool(
                    f"the process_pool is broken ({type(self._broken).__name__}: "
                    f"{self._broken}); start a new one"
                ) from self._broken
            if self._closing:
                raise RuntimeError(refusal)
            self._inbox.append(job)
            if len(self._inbox) == 1:
                self._wake()

    def shutdown(self, *, cancel: bool) -> None:
        """Take no new jobs; end once the work is done (``cancel``: the queued too)."""
        if not self.ours():
            return
        dropped: list[Job] = []
        with self._lock:
            self._closing = True
            if cancel:
                dropped, self._inbox = list(self._inbox), deque()
            self._wake()
        for job in dropped:
            job.future.cancel()

    def terminate(self, reason: str, *, interrupted: bool = False) -> None:
        """Cancel what waits, stop every worker's tree now, end the thread.

        Ctrl-C and SIGTERM are held off until the workers are gone: cut
        short, the stop would leave them running, and the caller's thread
        would not wait for the end. One that came meanwhile is raised at the
        end, unless the stop answers a Ctrl-C already (``interrupted``):
        then a Ctrl-C is the same press, repeated, and one
        ``KeyboardInterrupt`` is on its way. The hold then lasts at least
        :data:`_SAME_PRESS`, so that a burst of presses does not land in the
        printing of that one's traceback.
        """
        if not self.ours():
            return
        began = time.monotonic()
        try:
            with signals_deferred():
                with self._lock:
                    self._closing = True
                    self._stop_reason = self._stop_reason or reason
                    dropped, self._inbox = list(self._inbox), deque()
                    self._wake()
                for job in dropped:
                    job.future.cancel()
                self.join(_JOIN_BOUND)
                if interrupted:
                    time.sleep(max(0.0, began + _SAME_PRESS - time.monotonic()))
        except KeyboardInterrupt:
            if not interrupted:
                raise

    def cancel(self, jobs: list[Job], *, stop: bool = True) -> None:
        """Drop ``jobs`` (a call left early): those queued, and those not started.

        With ``stop``, the workers running one have their trees stopped (and
        are replaced); else they run on (a ``map`` left early). The pool's
        other work goes on. This returns once the manager thread has done it
        (at most :data:`_JOIN_BOUND`), Ctrl-C and SIGTERM held off meanwhile:
        no chunk of ``jobs`` starts after (unless called on that thread). If
        the call is left by a ``KeyboardInterrupt``, a Ctrl-C held off is the
        same press, repeated: dropped.
        """
        if not self.ours():
            return
        done = threading.Event()
        pressed = isinstance(sys.exc_info()[1], KeyboardInterrupt)
        try:
            with signals_deferred():
                with self._lock:
                    if self._wake_w.closed:  # the thread has ended, or is ending
                        return
                    self._inbox = deque(job for job in self._inbox if job not in jobs)
                    self._cancels.append((jobs, stop, done))
                    self._wake()
                for job in jobs:
                    job.future.cancel()
                if threading.current_thread() is self.thread:  # pragma: no cover
                    return  # a finalizer: the thread drops them when it is back
                if not wait_until(done.wait, _JOIN_BOUND):  # pragma: no cover
                    _log.warning(
                        "process_pool's thread did not cancel within %g s", _JOIN_BOUND
                    )
        except KeyboardInterrupt:
            if not pressed:
                raise

    def join(self, timeout: float | None) -> None:
        """Wait for the thread to end (not from the thread itself: a callback).

        Without a timeout, a Ctrl-C ends the wait (see
        :func:`~singleton_proc._base.waits.wait_until`): the caller then stops
        the pool.
        """
        if threading.current_thread() is self.thread or not self.ours():
            return
        if wait_until(self._ended.wait, timeout):
            self.thread.join()  # it is returning
        else:  # pragma: no cover - a done-callback or a logging handler hangs
            _log.warning("process_pool's thread did not end within %g s", timeout)

    def _wake(self) -> None:
        """(The lock held.) Make the manager thread look at the inbox and flags."""
        if not self._woken and not self._wake_w.closed:
            self._woken = True
            self._wake_w.send_bytes(b"!")

    def _run(self, pool: WorkerPool) -> None:
        """Serve jobs until shut down or stopped; then end cleanly."""
        try:
            self._serve(pool)
        except BaseException as exc:  # noqa: BLE001  (the pool broke: say so)
            self._break(pool, exc)
        finally:
            with self._lock:
                self._closing = True
                self._wake_r.close()
                self._wake_w.close()
                cancels, self._cancels = self._cancels, []
            _live.discard(self)
            self._ended.set()
            for *_, done in cancels:
                done.set()

    def _serve(self, pool: WorkerPool) -> None:
        """Feed the pool and settle futures until the end."""
        also = [self._wake_r]
        while True:
            with self._lock:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
                self._woken = False
                reason = self._stop_reason
                cancels, self._cancels = self._cancels, []
            try:
                for jobs, stop, _ in cancels:
                    self._drop(pool, jobs, stop=stop)
            finally:
                for *_, dropped in cancels:
                    dropped.set()
            if reason is not None:
                pool.terminate()
                for job in self._running:
                    job.fail(job.stopped(reason))
                return
            self._feed(pool)
            with self._lock:
                done = self._closing and not self._inbox
            if done and not self._running:
                pool.close()
                return
            self._settle(pool, pool.step(also))

    def _feed(self, pool: WorkerPool) -> None:
        """Put queued jobs in the pool; skip those cancelled.

        In the order they came, but for a job that must wait, while those
        behind it go on. A submitted call waits for a free worker, so that
        its future can be cancelled until then. The chunks of a ``map`` or
        a ``run_in_pool`` call go in up to :data:`CHUNKS_AHEAD` per worker,
        so that one waits pickled as a worker finishes (a call left early
        withdraws those not started); one whose call has its ``n`` running,
        or has failed, waits.
        """
        while len(self._running) < CHUNKS_AHEAD * self.n:
            with self._lock:
                job = next_job(self._inbox, self._running, self.n)
                if job is None:
                    return
                self._inbox.remove(job)
            if not job.future.set_running_or_notify_cancel():
                continue
            job.first, job.left = self._next, len(job.items)
            job.values = [None] * job.left
            self._next += job.left
            self._running.append(job)
            shift = 0 if job.work.mode is Mode.CALL else job.base - job.first
            work = dataclasses.replace(job.work, shift=shift) if shift else job.work
            try:
                pool.put(job.first, job.items, work)
            except UnpicklableError as exc:  # an item of a call: that call fails
                self._running.remove(job)
                if job.lane is not None:
                    job.lane.failed = True
                job.fail(exc)
                continue
            job.payload = pool.last_payload

    def _drop(self, pool: WorkerPool, jobs: list[Job], *, stop: bool) -> None:
        """Drop the chunks of those of ``jobs`` in the pool (see :meth:`cancel`)."""
        mine = [job for job in self._running if job in jobs]
        going = pool.cancel([(job.first, job.end) for job in mine], running=stop)
        for job in mine:  # one that runs on whole gets its outcome; the rest fail
            if (job.first, job.end) not in going:
                self._running.remove(job)
                job.fail(job.stopped("the call it belongs to was left"))

    def _settle(self, pool: WorkerPool, outcomes: list[Outcome]) -> None:
        """Note each outcome in its job; resolve the jobs made whole.

        The outcomes are let go on return: no value stays referenced by
        this thread once its future has it.
        """
        for outcome in outcomes:
            self._note(pool, outcome)

    def _note(self, pool: WorkerPool, outcome: Outcome) -> None:
        """Note ``outcome`` in its job (it may come in pieces); resolve it if whole.

        A job that does not keep going is whole at its first failure: the
        rest of its items, if any still wait or run, are dropped.
        """
        at = outcome.first
        job = next((j for j in self._running if j.first <= at < j.end), None)
        if job is None:  # resolved already, by an earlier failure or a cancel
            return
        job.note(outcome)
        if job.left and (job.work.keep_going or not outcome.errors):
            return
        if outcome.errors and not job.work.keep_going and job.lane is not None:
            job.lane.failed = True
        if job.left:
            pool.cancel([(job.first, job.end)])
        self._running.remove(job)
        if job.work.mode is not Mode.CALL:
            job.future.set_result(job.outcome())
        elif 0 in job.errors:
            job.future.set_exception(job.named(job.errors[0]))
        else:
            job.future.set_result(job.values[0])

    def _break(self, pool: WorkerPool, error: BaseException) -> None:
        """The pool cannot go on (an initializer raised): fail every job with it."""
        with self._lock:
            self._broken, self._closing = error, True
            jobs, self._inbox = [*self._inbox, *self._running], deque()
        self._running = []
        pool.terminate()
        for job in jobs:
            job.fail(error)


def _finish_all_at_exit() -> None:
    """At interpreter exit, let the executors still open finish the work submitted.

    As ``ProcessPoolExecutor`` does: a program that submits and ends without
    waiting still gets its work done. A Ctrl-C stops them at once instead,
    whether it ended the program (an unhandled ``KeyboardInterrupt``) or
    comes while they finish; so does anything else that ends the wait (a
    SIGTERM handler's ``SystemExit``), which is then raised.
    """
    managers = list(_live)
    if not managers:
        return
    try:
        if not _ended_by_ctrl_c():
            # A Ctrl-C inside a logging handler can leave its lock held,
            # and the manager threads log as they stop the workers.
            with signals_deferred():
                _log.debug(
                    "interpreter exit waits for the work submitted to %d "
                    "process_pool(s); Ctrl-C stops it", len(managers))  # fmt: skip
            for manager in managers:
                manager.shutdown(cancel=False)
            for manager in managers:
                manager.join(None)
            return
    except KeyboardInterrupt:
        pass
    except BaseException:
        for manager in managers:
            manager.terminate("the interpreter's wait for the work was cut short")
        raise
    for manager in managers:
        manager.terminate("the interpreter is exiting on Ctrl-C", interrupted=True)


def _ended_by_ctrl_c() -> bool:
    """Whether the program ends by an unhandled ``KeyboardInterrupt``.

    The interpreter notes an exception it prints as unhandled in
    ``sys.last_value`` (and ``sys.last_exc`` from Python 3.12) before exit
    handlers run.
    """
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return isinstance(last, KeyboardInterrupt)


atexit.register(_finish_all_at_exit)
