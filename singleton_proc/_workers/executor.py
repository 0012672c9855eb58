"""``process_pool``: a ``concurrent.futures`` executor on the pool engine.

A manager thread (``executor_thread``) owns one ``engine.WorkerPool``;
``submit`` and ``map`` queue jobs for it. ``map`` reads its input in the
caller's thread, a bounded window ahead. Shutdown, and interpreter exit with
an executor still open, let the work finish; an exception leaving the
``with`` block (Ctrl-C too) stops the workers at once.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Sized
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, TypeVar

from singleton_proc._base import validate

from .chunks import ChunkSizer, Reader, Work
from .cpus import check_workers
from .engine import WorkerPool
from .executor_jobs import Job, MapFeed, TaskFuture, map_results
from .executor_thread import Manager
from .protocol import Mode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType
    from typing import ParamSpec

    _P = ParamSpec("_P")

__all__ = ["PoolExecutor", "process_pool"]

_T = TypeVar("_T")
_AFTER_SHUTDOWN = "cannot schedule new futures after shutdown"


class PoolExecutor(Executor):
    """A ``concurrent.futures`` executor on worker processes: see :func:`process_pool`.

    Exported so that programs can annotate with it; made by
    :func:`process_pool` only.

    Attributes:
        n: How many workers.
        start_method: How they are started.
        max_tasks_per_child: How many tasks a worker runs before it is
            replaced (``None``: no limit).

    Example:
        >>> from singleton_proc import PoolExecutor, process_pool
        >>> def squares(pool: PoolExecutor) -> list[int]:
        ...     return list(pool.map(pow, range(4), [2] * 4))
        >>> with process_pool(2) as pool:
        ...     squares(pool)
        [0, 1, 4, 9]
    """

    def __init__(self, pool: WorkerPool, n: int) -> None:
        """Run ``pool`` (made by :func:`process_pool`) from a manager thread."""
        self._manager = manager = Manager(pool, n)
        self.n = self._max_workers = n  # the latter as ProcessPoolExecutor's
        self.start_method = pool.start_method
        self.max_tasks_per_child = pool.max_tasks
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
        future: Future[_T] = TaskFuture()
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
        So read the results inside the ``with`` block. Each result is let go
        as it is read, but those of a chunk of more than 64 (tiny) items go
        with their chunk.

        Args:
            fn: A picklable function.
            *iterables: Its arguments; with several, ``fn(a, b, ...)``.
            timeout: Seconds from this call within which each result must be
                ready, or the iterator raises ``TimeoutError``.
            chunksize: Items per message to a worker; ``None`` adapts it.

        Returns:
            The results; the first failing item raises when it is reached,
            and leaving early cancels the chunks not started.

        Raises:
            UnpicklableError: ``fn`` will not pickle (at once: it is pickled
                once for all the items).
        """
        fixed = None if chunksize is None else validate.chunk_size(chunksize)
        timeout = validate.wait_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        lengths = [len(it) for it in iterables if isinstance(it, Sized)]
        length = min(lengths) if lengths and len(lengths) == len(iterables) else None
        items = Reader(
            iterables[0] if len(iterables) == 1 else zip(*iterables, strict=False)
        )
        mode = Mode.ONE if len(iterables) == 1 else Mode.STAR
        sizer = ChunkSizer(fixed, self.n, length, self.max_tasks_per_child)
        feed = MapFeed(
            self,
            post=self._manager.post,
            withdraw=functools.partial(self._manager.cancel, stop=False),
            width=self.n,
            work=Work(fn, mode, keep_going=True).pickled(),
            items=items,
            sizer=sizer,
        )
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
            except BaseException as exc:
                self._manager.terminate(
                    "shutdown(wait=True) was interrupted",
                    interrupted=isinstance(exc, KeyboardInterrupt),
                )
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
            self._manager.terminate(
                f"the with block was left by {exc_type.__name__}",
                interrupted=issubclass(exc_type, KeyboardInterrupt),
            )


def process_pool(
    n: int | None = None,
    *,
    max_workers: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    start_method: str | None = None,
    timeout: float | None = None,
    max_tasks_per_child: int | None = None,
) -> PoolExecutor:
    """Start ``n`` worker processes behind a ``concurrent.futures`` executor.

    ``submit``, ``map`` (chunked automatically, its input read lazily) and
    ``shutdown`` work as in ``concurrent.futures``, on the runtime of
    :func:`run_in_pool`: a dead worker fails only its own task and is
    replaced, logging records reach this process's handlers, no worker
    outlives this process. Leaving the ``with`` block normally waits for the
    work; leaving it by an exception or Ctrl-C cancels what waits and stops
    the workers at once (the running tasks fail with ``WorkerDiedError``).
    At interpreter exit, an executor still open finishes the work submitted
    to it, as ``ProcessPoolExecutor`` does, unless Ctrl-C ended the program
    or comes meanwhile: then its workers are stopped at once.

    Args:
        n: How many workers; default: the CPUs this process may use.
        max_workers: ``n`` as ``ProcessPoolExecutor`` spells it (not both).
        initializer: Called with ``initargs`` in each worker before its
            first task; if it raises, the tasks fail with that exception and
            ``submit`` raises ``BrokenProcessPool``.
        initargs: Arguments for ``initializer``; ``multiprocessing`` queues,
            locks, events, semaphores and shared values and arrays among them
            are passed as each worker starts, as ``ProcessPoolExecutor``
            passes them (made for the pool's start method).
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None``
            picks a safe one (never ``fork``: a thread runs the pool).
        timeout: Seconds each task may run, from when it starts; then its
            worker's tree is killed and the task fails with ``TaskTimeoutError``.
        max_tasks_per_child: How many tasks (a ``map`` item is one) a worker
            runs before it is replaced by a fresh one, as in
            ``ProcessPoolExecutor``; ``None``: no limit.

    Returns:
        The executor, also a context manager.

    Raises:
        ValueError: ``n``, ``timeout`` or ``start_method`` is wrong (named).
        TypeError: ``n`` is not an int, both ``n`` and ``max_workers`` are
            given, or ``initializer`` is not callable.
        UnpicklableError: the initializer or its arguments will not pickle.

    Example:
        >>> from singleton_proc import process_pool
        >>> with process_pool(4, timeout=60) as pool:
        ...     future = pool.submit(pow, 2, 10)
        ...     squares = list(pool.map(pow, range(10), [2] * 10))
        >>> future.result(), squares[-1]
        (1024, 81)
    """
    if n is not None and max_workers is not None:
        raise TypeError(
            "process_pool() takes n or max_workers (the same thing), not both"
        )
    name = "n" if max_workers is None else "max_workers"
    workers = check_workers(
        max_workers if n is None else n, timeout, initializer, name=name
    )
    pool = WorkerPool(None, workers, initializer=initializer, initargs=initargs,
                      start_method=start_method, timeout=timeout,
                      max_tasks=validate.tasks_per_worker(max_tasks_per_child),
                      threaded=True)  # fmt: skip
    try:
        return PoolExecutor(pool, workers)
    except BaseException:  # pragma: no cover - no thread to own it: still ours
        pool.terminate()
        raise
