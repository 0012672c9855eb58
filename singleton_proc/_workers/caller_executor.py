"""``executor=``: the chunks of ``run_in_pool`` and ``iter_in_pool`` on any Executor.

:class:`ExecutorPool` offers what ``map`` asks of our own pool (``wants``,
``put``, ``collect``, ``idle``, ``close``, ``terminate``) on top of a
``concurrent.futures.Executor`` (loky, ``dask.distributed``'s
``Client.get_executor()``, a ``ProcessPoolExecutor``...): each chunk becomes
one submitted call of :func:`apply_chunk`, so results keep their order, the
first failure is raised at once (or, with ``return_exceptions``, takes its
item's place), and the window of items in flight stays bounded. What only
our pool can give: a timeout that kills a stuck task, naming the item a
dead worker ran, and the promise that no worker outlives the call; the
executor's owner decides what happens to its workers.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from singleton_proc._base.waits import done_ones

from .child_loop import caller
from .chunks import CHUNKS_AHEAD, Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from concurrent.futures import Executor, Future

    from .chunks import Work
    from .protocol import Mode

__all__ = ["ExecutorPool", "apply_chunk"]


def apply_chunk(
    fn: Callable[..., Any],
    items: Sequence[Any],
    mode: Mode,
    keep_going: bool,
    _first: int = 0,
) -> tuple[list[Any], dict[int, BaseException], float]:
    """In the executor's worker: call ``fn`` on each item.

    Returns the values, the exceptions by offset (with ``keep_going``; else
    the first one is raised, ending the chunk), and the seconds it took.
    ``_first``, the index of the chunk's first item, is not used here: it
    makes each submitted call distinct, so that an executor that merges
    identical calls (dask's ``pure=True``, its default) still runs ``fn()``
    ``n`` times when ``items`` is ``None``.
    """
    began = time.perf_counter()
    call = caller(fn, mode)
    values: list[Any] = []
    errors: dict[int, BaseException] = {}
    for offset, item in enumerate(items):
        try:
            values.append(call(item))
        except Exception as exc:
            if not keep_going:
                raise
            errors[offset] = exc
            values.append(None)
    return values, errors, time.perf_counter() - began


class ExecutorPool:
    """Our pool's interface for ``map``, on a caller's executor.

    A work that keeps going (``return_exceptions``) gives each failing item
    its error, and each item of a chunk that fails as a whole (its worker
    died) that chunk's.

    Args:
        executor: Where chunks run; it is neither shut down nor waited for.
        fn: The function items are given to.
        workers: How many chunks may run at once (the executor's workers).
    """

    def __init__(
        self, executor: Executor, fn: Callable[..., Any], workers: int
    ) -> None:
        """Remember the executor; nothing is submitted yet."""
        self._executor = executor
        self._fn = fn
        self._ahead = CHUNKS_AHEAD * workers
        #: Unknown: the executor pickles the chunk (see ``ChunkSizer``).
        self.last_payload = 0
        #: future: (first, count, keep_going)
        self._running: dict[Future[Any], tuple[int, int, bool]] = {}

    def wants(self) -> bool:
        """Whether another chunk should be submitted now."""
        return len(self._running) < self._ahead

    def put(self, first: int, items: Sequence[Any], work: Work) -> None:
        """Submit ``items`` (indices ``first``...), run as ``work``, as one call."""
        future = self._executor.submit(
            apply_chunk, self._fn, items, work.mode, work.keep_going, first
        )
        self._running[future] = (first, len(items), work.keep_going)

    def idle(self) -> bool:
        """Whether no chunk is running."""
        return not self._running

    def collect(self) -> list[Outcome]:
        """Wait for at least one chunk to finish; their outcomes."""
        if not self._running:  # a caller's bug: waiting would be for ever
            raise RuntimeError("collect() with nothing in flight")
        return [self._outcome(future) for future in done_ones(list(self._running))]

    def _outcome(self, future: Future[Any]) -> Outcome:
        """A finished chunk's outcome; a failure as the error of its items."""
        first, count, keep_going = self._running.pop(future)
        error = future.exception()
        if error is None:
            values, errors, seconds = future.result()
            return Outcome(first, values, errors, seconds)
        if keep_going:  # the chunk failed as a whole: a dead worker
            return Outcome(first, [None] * count, dict.fromkeys(range(count), error))
        return Outcome(first, [None], {0: error})

    def close(self) -> None:
        """Nothing to do: the executor is its owner's."""

    def terminate(self) -> None:
        """Cancel the chunks that have not started (running ones cannot be)."""
        for future in self._running:
            future.cancel()
        self._running.clear()
