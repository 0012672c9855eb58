"""``run_in_pool`` and ``iter_in_pool``: one function over many items, in workers.

Both drive one ``engine.WorkerPool`` from the caller's thread: pull items
into chunks while a worker can take one and the window allows, collect
outcomes, and hand them on in input order (or as they come). The first
failure is raised at once, with the pool stopped; ``return_exceptions``
puts it in the results instead. Leaving early in any way (an error, Ctrl-C,
closing the generator) stops the workers; the normal end lets them exit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sized
from typing import TYPE_CHECKING, Any

from singleton_proc._base.interrupts import signals_deferred

from .chunks import GATHER_SECONDS, ChunkSizer, Reader
from .options import check_options
from .progress import open_bar
from .protocol import Mode

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator
    from concurrent.futures import Executor

    from .chunks import Outcome, Work
    from .options import PoolOptions, Runner

__all__ = ["iter_in_pool", "run_in_pool"]

#: Ctrl-C presses closer together than this are one request; a call left by
#: Ctrl-C returns once they stop, after 1 s at most (the workers are stopped
#: before: this delays only the traceback).
_REPEAT_WINDOW = 0.1
_REPEAT_CAP = 1.0


def run_in_pool(
    fn: Callable[..., Any],
    items: Iterable[Any] | None = None,
    *,
    n: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    return_exceptions: bool = False,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    start_method: str | None = None,
    progress: bool = False,
    executor: Executor | None = None,
    max_tasks_per_child: int | None = None,
) -> list[Any]:
    """Return ``[fn(x) for x in items]``, computed by ``n`` worker processes.

    With ``items=None``, call ``fn()`` once in each of ``n`` distinct workers
    and return the ``n`` results.

    Args:
        fn: The function (what the script defines, lambdas and closures go
            by value).
        items: The inputs; a sized collection is chunked like
            ``Pool.map``, any other iterable adaptively.
        n: How many workers; default: the CPUs this process may use
            (its affinity and its cgroup's CPU quota).
        chunksize: Items per message to a worker; ``None`` picks one from
            how long items take (small for slow items, large for tiny ones).
        timeout: Seconds each task may run, from when it starts; then its
            worker and the worker's children are killed and replaced, and
            that task fails with ``TaskTimeoutError``.
        return_exceptions: Put each failure (an exception raised,
            ``WorkerDiedError``, ``TaskTimeoutError``) in the results and go
            on, instead of raising the first one and stopping.
        initializer: Called with ``initargs`` in each worker before its
            first task; if it raises, so does this function.
        initargs: Arguments for ``initializer``; ``multiprocessing``
            queues, locks and shared memory are passed as each worker starts.
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None``
            picks a safe one (``fork`` only in a single-threaded parent).
        progress: Show a tqdm bar on stderr counting finished items (the
            ``progress`` extra).
        executor: A running ``process_pool()``: run on its workers, started
            once for many calls (``timeout`` per call; an error or Ctrl-C
            stops this call's work only; its ``initializer``,
            ``start_method`` and ``max_tasks_per_child`` are the pool's).
            Or any other ``concurrent.futures.Executor`` (loky,
            ``dask.distributed``'s ``Client.get_executor()``, ...): same
            order, ``return_exceptions`` and first failure raised at once;
            but no ``timeout``, ``initializer`` or ``start_method``, and
            workers that are the executor's to manage. Either way
            ``items=None`` means ``n`` calls that may share a worker.
        max_tasks_per_child: How many items a worker runs before it is
            replaced by a fresh one (for tasks that leak memory or file
            descriptors); chunks then hold at most that many. ``None``: no
            limit.

    Returns:
        The results in input order.

    Raises:
        Exception: the first exception a task raised (same type, the
            worker's traceback as ``__cause__``), at once; the other tasks
            are cancelled and the workers stopped.
        WorkerDiedError: a worker died (killed, crashed, ``os._exit``); the
            message names the item, the pid and the exit code or signal.
        TaskTimeoutError: a task ran over ``timeout``.
        UnpicklableError: the function, an item, a result or an exception
            cannot be pickled; the message says which.
        KeyboardInterrupt: Ctrl-C; the workers were stopped first.

    Example:
        >>> from singleton_proc import run_in_pool
        >>> run_in_pool(abs, [-1, -2, 3], n=2)
        [1, 2, 3]
    """
    options = check_options(
        fn,
        n=n,
        chunksize=chunksize,
        timeout=timeout,
        return_exceptions=return_exceptions,
        initializer=initializer,
        initargs=initargs,
        start_method=start_method,
        progress=progress,
        executor=executor,
        max_tasks_per_child=max_tasks_per_child,
    )
    if items is None:
        return _in_each(options)
    if not isinstance(items, Sized):
        return list(_flatten(_outcomes(options, Reader(items), None, ordered=True)))
    results: list[Any] = [None] * len(items)
    for outcome in _outcomes(options, Reader(items), len(items), ordered=False):
        first = outcome.first
        results[first : first + len(outcome.values)] = outcome.values
        for offset, error in outcome.errors.items():
            results[first + offset] = error
    return results


def iter_in_pool(
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    n: int | None = None,
    ordered: bool = True,
    chunksize: int | None = None,
    timeout: float | None = None,
    return_exceptions: bool = False,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    start_method: str | None = None,
    progress: bool = False,
    executor: Executor | None = None,
    max_tasks_per_child: int | None = None,
) -> Generator[Any, None, None]:
    """Yield ``fn(x)`` for each of ``items`` as workers compute them, lazily.

    Items are pulled only while a bounded window of them is in flight or
    buffered, so a stalled consumer stalls the producer, and a generator of
    millions of items runs in flat memory. Closing the iterator early (or
    leaving the ``for`` loop by ``break`` and dropping it) stops the workers.
    The arguments are checked at once; the workers start at the first
    ``next()``.

    Args:
        fn: The function (what the script defines, lambdas and closures go
            by value).
        items: Any iterable, consumed lazily.
        n: As for :func:`run_in_pool`.
        ordered: Yield in input order (default), or as results come.
        chunksize: As for :func:`run_in_pool` (default: adaptive).
        timeout: As for :func:`run_in_pool`.
        return_exceptions: Yield each failure instead of raising it.
        initializer: As for :func:`run_in_pool`.
        initargs: As for :func:`run_in_pool`.
        start_method: As for :func:`run_in_pool`.
        progress: As for :func:`run_in_pool`.
        executor: As for :func:`run_in_pool`.
        max_tasks_per_child: As for :func:`run_in_pool`.

    Yields:
        The results, in input order unless ``ordered=False``.

    Raises:
        Exception: as :func:`run_in_pool` does, when the failure comes.

    Example:
        >>> from singleton_proc import iter_in_pool
        >>> total = 0
        >>> for size in iter_in_pool(len, ["a", "bb", "ccc"], n=2):
        ...     total += size  # each result as soon as it is ready
        >>> total
        6
    """
    options = check_options(
        fn,
        n=n,
        chunksize=chunksize,
        timeout=timeout,
        return_exceptions=return_exceptions,
        initializer=initializer,
        initargs=initargs,
        start_method=start_method,
        progress=progress,
        executor=executor,
        max_tasks_per_child=max_tasks_per_child,
    )
    source = Reader(items)  # a TypeError now, not at the first next()
    return _flatten(_outcomes(options, source, None, ordered=bool(ordered)))


def _flatten(outcomes: Iterator[Outcome]) -> Generator[Any, None, None]:
    """The values of ``outcomes``, each error in its item's place.

    Each value is taken out of its outcome as it is handed on: held there (or
    here), a value the consumer dropped would live until the chunk's last is
    read.
    """
    for outcome in outcomes:
        values, errors = deque(outcome.values), outcome.errors
        outcome.values.clear()
        for offset in range(len(values)):
            if offset in errors:
                values.popleft()
                yield errors[offset]
            else:
                yield values.popleft()


def _in_each(options: PoolOptions) -> list[Any]:
    """``fn()`` once in each of ``n`` distinct workers (none queued behind another)."""
    results: list[Any] = [None] * options.n
    source = Reader([None] * options.n)
    for outcome in _outcomes(
        options, source, options.n, ordered=False, mode=Mode.NONE, each=True
    ):
        results[outcome.first] = outcome.errors.get(0, outcome.values[0])
    return results


def _outcomes(
    options: PoolOptions,
    items: Reader,
    length: int | None,
    *,
    ordered: bool,
    mode: Mode = Mode.ONE,
    each: bool = False,
) -> Generator[Outcome, None, None]:
    """Run ``items`` through a pool; yield the outcomes (raising the first failure).

    Args:
        options: The checked arguments.
        items: The items, read lazily.
        length: How many there are, when known (chunks are then sized like
            ``Pool.map``'s at most, and no more workers than items start).
        ordered: Yield in input order rather than as they come.
        mode: How items are called (see ``protocol.Mode``).
        each: One item per worker, each worker one item.
    """
    workers = options.n if length is None else min(options.n, length)
    if workers == 0:
        return
    sizer = ChunkSizer(1 if each else options.chunksize, workers, length,
                       options.max_tasks_per_child)  # fmt: skip
    bar = None
    pool, work = options.start(workers, mode, each=each)
    try:
        feed = _Feed(items, sizer, work, windowed=length is None)
        # After the workers start: tqdm's monitor thread would rule out fork.
        bar = open_bar(options.progress, length, getattr(options.fn, "__name__", None))
        waiting: dict[int, Outcome] = {}  # ordered: outcomes ahead of their turn
        while feed.fill(pool) or not pool.idle():
            for outcome in pool.collect():
                if outcome.errors and not options.return_exceptions:
                    raise outcome.errors[min(outcome.errors)]  # noqa: TRY301  (the pool stops below)
                feed.sizer.observe(outcome)
                bar.update(len(outcome.values))
                if not ordered:
                    feed.handed += len(outcome.values)
                    yield outcome
                    continue
                waiting[outcome.first] = outcome
                while feed.handed in waiting:
                    ready = waiting.pop(feed.handed)
                    feed.handed += len(ready.values)
                    yield ready
        pool.close()
    except BaseException as leaving:
        _stop(pool, leaving)
        raise
    finally:
        if bar is not None:
            bar.close()


def _stop(pool: Runner, leaving: BaseException) -> None:
    """Stop the workers of a call left early (an error, Ctrl-C, an early close).

    The stop holds Ctrl-C off and lets it land at its end. When the call is
    left by a ``KeyboardInterrupt``, the presses that follow it (a user
    hammering Ctrl-C, key repeat) are the same request: they are dropped
    until none has come for :data:`_REPEAT_WINDOW`, so that the user sees
    one ``KeyboardInterrupt`` with one short traceback, not a chain of them
    or a traceback cut short while it prints.
    """
    try:
        pool.terminate()
    except KeyboardInterrupt:
        if not isinstance(leaving, KeyboardInterrupt):
            raise
    if isinstance(leaving, KeyboardInterrupt):
        _drop_repeated_presses()


def _drop_repeated_presses() -> None:
    """Wait until no Ctrl-C came for :data:`_REPEAT_WINDOW` (at most 1 s); drop them."""
    deadline = time.monotonic() + _REPEAT_CAP
    while time.monotonic() < deadline:
        try:
            with signals_deferred():
                time.sleep(_REPEAT_WINDOW)
        except KeyboardInterrupt:
            continue  # another press of the same burst
        return


class _Feed:
    """Pulls items into chunks for the pool, within the window."""

    def __init__(
        self, items: Reader, sizer: ChunkSizer, work: Work, *, windowed: bool
    ) -> None:
        """Feed ``items`` in chunks ``sizer`` sizes, to run as ``work``."""
        self.sizer = sizer
        self.handed = 0  # items handed on to the caller
        self._items = items
        self._work = work
        self._window = sizer.window if windowed else None
        # a sized input is never slow to read; a stream may be
        self._within = GATHER_SECONDS if windowed else None
        self._pulled = 0
        self._exhausted = False

    def fill(self, pool: Runner) -> bool:
        """Put chunks while the pool takes them; whether items may remain."""
        while not self._exhausted and pool.wants():
            room = self.sizer.size()
            if self._window is not None:
                room = min(room, self._window - (self._pulled - self.handed))
                if room <= 0:
                    break
            batch = self._items.take(room, within=self._within)
            if self._items.error is not None:
                raise self._items.error
            if not batch:
                self._exhausted = True
                break
            pool.put(self._pulled, batch, self._work)
            self.sizer.observe_payload(pool.last_payload, len(batch))
            self._pulled += len(batch)
        return not self._exhausted
