"""``process_pool``: a ``concurrent.futures`` executor on the pool engine.

A manager thread owns one ``_pool.WorkerPool`` (only it touches it). Callers
queue jobs (a submitted call, or a chunk of a ``map``) in a locked inbox and
wake it by a byte on a pipe it waits on beside its workers (``step(also=)``),
written only when the inbox turns non-empty and no byte is pending. A job
goes to the pool when a worker is free for it, so its future can be
cancelled until then. ``map`` reads its input in the caller's thread, a
bounded window ahead. Shutdown lets the work finish; an exception leaving the
``with`` block (Ctrl-C too), or interpreter exit, stops the workers at once.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Sized
from concurrent.futures import Executor, Future, InvalidStateError
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import Pipe
from typing import TYPE_CHECKING, Any, TypeVar

from . import _platform
from ._chunks import ChunkSizer, Outcome
from ._executor_map import Job, MapFeed, map_results
from ._pool import WorkerPool
from ._pool_options import check_workers, positive
from ._wire import UnpicklableError, dumps_call

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType
    from typing import ParamSpec

    _P = ParamSpec("_P")

__all__ = ["PoolExecutor", "process_pool"]

_T = TypeVar("_T")
_log = logging.getLogger("singleton_proc")
#: How long stopping waits for the manager thread (it reacts within
#: milliseconds unless a logging handler or a done-callback blocks it).
_JOIN_BOUND = 30.0
_AFTER_SHUTDOWN = "cannot schedule new futures after shutdown"
#: The managers whose thread runs (a forked child has none).
_live: set[_Manager] = set()
_platform.at_fork(after_in_child=_live.clear)


class _Manager:
    """The state callers share with the manager thread, and the thread itself."""

    def __init__(self, pool: WorkerPool, n: int) -> None:
        """Start the thread that runs ``pool`` (of ``n`` workers) from now on."""
        self.n = n
        # Reentrant: a finalizer (shutdown of an executor collected as garbage)
        # may run in any thread, at any allocation, the lock held or not.
        self._lock = threading.RLock()
        self._inbox: deque[Job] = deque()
        self._wake_r, self._wake_w = Pipe(duplex=False)
        self._woken = False  # a byte is in the pipe
        self._closing = False  # no new jobs; end once the work is done
        self._stop_reason: str | None = None  # stop now, and why
        self._broken: BaseException | None = None
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

    def post(self, job: Job, refusal: str) -> None:
        """Queue ``job`` for the pool, or raise ``RuntimeError(refusal)`` if closed."""
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
        dropped: list[Job] = []
        with self._lock:
            self._closing = True
            if cancel:
                dropped, self._inbox = list(self._inbox), deque()
            self._wake()
        for job in dropped:
            job.future.cancel()

    def terminate(self, reason: str) -> None:
        """Cancel what waits, stop every worker's tree now, end the thread."""
        with self._lock:
            self._closing = True
            self._stop_reason = self._stop_reason or reason
            dropped, self._inbox = list(self._inbox), deque()
            self._wake()
        for job in dropped:
            job.future.cancel()
        self.join(_JOIN_BOUND)

    def join(self, timeout: float | None) -> None:
        """Wait for the thread to end (not from the thread itself: a callback)."""
        if threading.current_thread() is self.thread:
            return
        if self._ended.wait(timeout):
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
            _live.discard(self)
            self._ended.set()

    def _serve(self, pool: WorkerPool) -> None:
        """Feed the pool and settle futures until the end."""
        also = [self._wake_r]
        while True:
            with self._lock:
                while self._wake_r.poll():
                    self._wake_r.recv_bytes()
                self._woken = False
                reason = self._stop_reason
            if reason is not None:
                pool.terminate()
                for job in self._running:
                    _fail(job.future, job.stopped(reason))
                return
            self._feed(pool)
            with self._lock:
                done = self._closing and not self._inbox
            if done and not self._running:
                pool.close()
                return
            for outcome in pool.step(also):
                self._settle(outcome)

    def _feed(self, pool: WorkerPool) -> None:
        """Put queued jobs while a worker is free; skip those cancelled."""
        while len(self._running) < self.n:
            with self._lock:
                if not self._inbox:
                    return
                job = self._inbox.popleft()
            if not job.future.set_running_or_notify_cancel():
                continue
            job.first, job.left = self._next, len(job.items)
            job.values = [None] * job.left
            self._next += job.left
            self._running.append(job)
            pool.put(job.first, job.items, job.fn, job.mode)
            job.payload = pool.last_payload

    def _settle(self, outcome: Outcome) -> None:
        """Note ``outcome`` in its job (it may come in pieces); resolve it if whole."""
        at = outcome.first
        job = next(j for j in self._running if j.first <= at < j.first + len(j.items))
        at -= job.first
        job.values[at : at + len(outcome.values)] = outcome.values
        job.errors.update({at + k: error for k, error in outcome.errors.items()})
        job.seconds += outcome.seconds
        job.left -= len(outcome.values)
        if job.left:
            return
        self._running.remove(job)
        if job.mode != "call":
            job.future.set_result(Outcome(0, job.values, job.errors, job.seconds))
        elif 0 in job.errors:
            job.future.set_exception(_named(job, job.errors[0]))
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
            _fail(job.future, error)


def _fail(future: Future[Any], error: BaseException) -> None:
    """Set ``error`` on ``future`` unless it was cancelled or is done."""
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)


def _named(job: Job, error: BaseException) -> BaseException:
    """``error``, or for a call that would not pickle, the error naming which part."""
    if isinstance(error, UnpicklableError) and error.what.startswith("item"):
        fn, args, kwargs = job.items[0]
        try:
            dumps_call(fn, args, kwargs)
        except UnpicklableError as exc:
            return exc
    return error


class PoolExecutor(Executor):
    """A ``concurrent.futures`` executor on worker processes: see :func:`process_pool`.

    Attributes:
        n: How many workers.
        start_method: How they are started.
    """

    def __init__(self, pool: WorkerPool, n: int) -> None:
        """Run ``pool`` (made by :func:`process_pool`) from a manager thread."""
        self._manager = manager = _Manager(pool, n)
        self.n = n
        self.start_method = pool.start_method
        # Dropped without shutdown: let the work finish, then end.
        weakref.finalize(self, manager.shutdown, cancel=False).atexit = False

    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]:
        """Run ``fn(*args, **kwargs)`` in a worker; return its future.

        The future gets the value, or what the call raised (same type, the
        worker's traceback as ``__cause__``), ``WorkerDiedError`` if its
        worker died, ``TaskTimeoutError`` past the pool's ``timeout``, or
        ``UnpicklableError`` naming what would not pickle. It can be
        cancelled until a worker is free to take it.

        Raises:
            RuntimeError: after shutdown.
            BrokenProcessPool: the initializer raised (the cause).
        """
        future: Future[_T] = Future()
        self._manager.post(Job(future, [(fn, args, kwargs)]), _AFTER_SHUTDOWN)
        return future

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
    ) -> Iterator[_T]:
        """``fn`` over the items of ``iterables`` (zipped), the results in order.

        Unlike ``concurrent.futures``, which reads all the input at once,
        this reads it lazily, in the caller's thread: two chunks per worker
        are in flight or wait to be read, and more is read as results are.
        So read the results inside the ``with`` block.

        Args:
            fn: A picklable function.
            *iterables: Its arguments; with several, ``fn(a, b, ...)``.
            timeout: Seconds from this call within which each result must be
                ready, or the iterator raises ``TimeoutError``.
            chunksize: Items per message to a worker; ``None`` adapts it.

        Returns:
            The results; the first failing item raises when it is reached,
            and leaving early cancels the chunks not started.
        """
        fixed = None if chunksize is None else positive("chunksize", chunksize)
        deadline = None if timeout is None else time.monotonic() + timeout
        lengths = [len(it) for it in iterables if isinstance(it, Sized)]
        length = min(lengths) if lengths and len(lengths) == len(iterables) else None
        items = (
            iter(iterables[0]) if len(iterables) == 1 else zip(*iterables, strict=False)
        )
        mode = "one" if len(iterables) == 1 else "star"
        feed = MapFeed(self, fn, mode, items, ChunkSizer(fixed, self.n, length))
        feed.fill()
        return map_results(feed, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no new tasks; free the workers once the work is done.

        Args:
            wait: Wait until the work is done and the workers are gone.
                Interrupted (Ctrl-C), the workers are stopped at once.
            cancel_futures: Cancel the tasks no worker has started.
        """
        self._manager.shutdown(cancel=cancel_futures)
        if wait:
            try:
                self._manager.join(None)
            except BaseException:
                self._manager.terminate("shutdown(wait=True) was interrupted")
                raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Normally, ``shutdown(wait=True)``; by an exception, stop the workers now."""
        if exc_type is None:
            self.shutdown(wait=True)
        else:
            self._manager.terminate(f"the with block was left by {exc_type.__name__}")


def process_pool(
    n: int | None = None,
    *,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    start_method: str | None = None,
    timeout: float | None = None,
) -> PoolExecutor:
    """Start ``n`` worker processes behind a ``concurrent.futures`` executor.

    ``submit``, ``map`` (chunked automatically, its input read lazily) and
    ``shutdown`` work as in ``concurrent.futures``, on the runtime of
    :func:`run_in_pool`: a dead worker fails only its own task and is
    replaced, logging records reach this process's handlers, no worker
    outlives this process. Leaving the ``with`` block normally waits for the
    work; leaving it by an exception or Ctrl-C cancels what waits and stops
    the workers at once (the running tasks fail with ``WorkerDiedError``), as
    does interpreter exit for an executor still running.

    Args:
        n: How many workers; default: the CPUs this process may use.
        initializer: Called with ``initargs`` in each worker before its
            first task; if it raises, the tasks fail with that exception and
            ``submit`` raises ``BrokenProcessPool``.
        initargs: Arguments for ``initializer``.
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None``
            picks a safe one (never ``fork``: a thread runs the pool).
        timeout: Seconds each task may run, from when it starts; then its
            worker's tree is killed and the task fails with ``TaskTimeoutError``.

    Returns:
        The executor, also a context manager.

    Raises:
        ValueError: ``n``, ``timeout`` or ``start_method`` is wrong (named).
        TypeError: ``n`` is not an int, or ``initializer`` not callable.
        UnpicklableError: the initializer or its arguments will not pickle.

    Example:
        >>> from singleton_proc import process_pool
        >>> with process_pool(4, timeout=60) as pool:  # doctest: +SKIP
        ...     future = pool.submit(pow, 2, 10)
        ...     squares = list(pool.map(pow, range(10), [2] * 10))
        >>> future.result()  # doctest: +SKIP
        1024
    """
    workers = check_workers(n, timeout, initializer)
    pool = WorkerPool(None, workers, initializer=initializer, initargs=initargs,
                      start_method=start_method, timeout=timeout,
                      keep_going=True, threaded=True)  # fmt: skip
    try:
        return PoolExecutor(pool, workers)
    except BaseException:  # pragma: no cover - no thread to own it: still ours
        pool.terminate()
        raise


def _stop_all_at_exit() -> None:
    """At interpreter exit, stop the executors still running (bounded)."""
    for manager in list(_live):
        manager.terminate("the interpreter is exiting")


atexit.register(_stop_all_at_exit)
