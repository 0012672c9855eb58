"""The options of ``run_in_pool`` and ``iter_in_pool``: checked once, then run on.

Every argument is checked when the function is called, before a worker
starts, and an error names the argument that is wrong. The checked options
then start the runner: our own ``WorkerPool``; a ``WarmPool`` on the
workers of a running ``process_pool()`` given as ``executor=``; or an
``ExecutorPool`` on any other executor.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from singleton_proc._base import validate

from .caller_executor import ExecutorPool
from .chunks import Work
from .cpus import check_workers
from .engine import WorkerPool
from .executor import PoolExecutor
from .progress import require_tqdm
from .warm_pool import WarmPool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .chunks import Outcome
    from .protocol import Mode

__all__ = ["PoolOptions", "Runner", "check_options"]


class Runner(Protocol):
    """What runs the chunks: a ``WorkerPool``, ``WarmPool`` or ``ExecutorPool``."""

    def wants(self) -> bool: ...
    def put(self, first: int, items: Sequence[Any], work: Work) -> None: ...
    def idle(self) -> bool: ...
    def collect(self) -> list[Outcome]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...

    #: Bytes of the last chunk's items, pickled (0: unknown).
    last_payload: int


@dataclass(frozen=True)
class PoolOptions:
    """What both functions take, checked."""

    fn: Callable[..., Any]
    n: int
    chunksize: int | None
    timeout: float | None
    return_exceptions: bool
    initializer: Callable[..., Any] | None
    initargs: tuple[Any, ...]
    start_method: str | None
    progress: bool
    executor: Executor | None
    max_tasks_per_child: int | None

    def start(
        self, workers: int, mode: Mode, *, each: bool = False
    ) -> tuple[Runner, Work]:
        """Start a runner of ``workers`` with these options, and say how items run.

        Our own pool and another executor are given ``fn`` once, at the
        start; a running ``process_pool()`` gets it with the work, pickled
        once for the whole call, before anything is sent. ``each``: every
        worker runs one item (``fn()`` in each of ``n``).

        Raises:
            UnpicklableError: ``fn`` will not pickle (a warm pool's call).
        """
        work = Work(None, mode, self.return_exceptions)
        if isinstance(self.executor, PoolExecutor):
            work = dataclasses.replace(work, fn=self.fn, timeout=self.timeout)
            manager = self.executor._manager  # noqa: SLF001  (our own)
            return WarmPool(manager, workers), work.pickled()
        if self.executor is not None:
            return ExecutorPool(self.executor, self.fn, workers), work
        pool = WorkerPool(
            self.fn,
            workers,
            initializer=self.initializer,
            initargs=self.initargs,
            start_method=self.start_method,
            timeout=self.timeout,
            max_tasks=1 if each else self.max_tasks_per_child,
        )
        return pool, work


def check_options(
    fn: Callable[..., Any],
    *,
    n: int | None,
    chunksize: int | None,
    timeout: float | None,
    return_exceptions: bool,
    initializer: Callable[..., Any] | None,
    initargs: Iterable[Any],
    start_method: str | None,
    progress: bool,
    executor: Executor | None,
    max_tasks_per_child: int | None,
) -> PoolOptions:
    """Check the arguments; raise naming the one that is wrong."""
    initargs = tuple(initargs)
    if executor is not None:
        ours = {"initializer": initializer, "initargs": initargs or None,
                "start_method": start_method,
                "max_tasks_per_child": max_tasks_per_child}  # fmt: skip
        _check_executor(executor, timeout, ours)
    if progress:
        require_tqdm()
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    workers = check_workers(n, timeout, initializer, executor)
    if isinstance(executor, PoolExecutor):
        workers = min(workers, executor.n)  # no more than the pool has
    return PoolOptions(
        fn=fn,
        n=workers,
        chunksize=None if chunksize is None else validate.chunk_size(chunksize),
        timeout=timeout,
        return_exceptions=bool(return_exceptions),
        initializer=initializer,
        initargs=initargs,
        start_method=start_method,
        progress=bool(progress),
        executor=executor,
        max_tasks_per_child=validate.tasks_per_worker(max_tasks_per_child),
    )


def _check_executor(
    executor: object, timeout: float | None, ours: Mapping[str, object]
) -> None:
    """``executor`` must be an Executor, without the options of our own pool.

    ``ours``: those options by name, ``None`` where not given. A
    ``process_pool()`` has them already: they are its own.
    """
    if not isinstance(executor, Executor):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (or None for our "
            f"own pool), not {type(executor).__name__}"
        )
    warm = isinstance(executor, PoolExecutor)
    if timeout is not None and not warm:
        raise ValueError(
            "timeout= needs our own workers (executor=None or a process_pool()): "
            "another executor cannot kill a task that runs too long"
        )
    for name, value in ours.items():
        if value is not None and warm:
            raise ValueError(
                f"{name}= is the process_pool's own, set when it started: pass "
                f"it to process_pool(), or leave executor= out"
            )
        if value is not None:
            raise ValueError(
                f"{name}= configures our own pool; with executor=, configure "
                "the executor itself"
            )
