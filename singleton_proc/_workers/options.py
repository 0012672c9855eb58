"""The options of ``run_in_pool`` and ``iter_in_pool``: checked once, then run on.

Every argument is checked when the function is called, before a worker
starts, and an error names the argument that is wrong. The checked options
then start the runner: our own ``WorkerPool``, or an ``ExecutorPool`` on
the caller's ``executor=``.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from singleton_proc._base import validate

from .caller_executor import ExecutorPool
from .cpus import usable_cpus
from .engine import WorkerPool
from .progress import require_tqdm

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from .chunks import Outcome
    from .protocol import Mode

__all__ = [
    "PoolOptions",
    "Runner",
    "check_options",
    "check_workers",
]


class Runner(Protocol):
    """What runs the chunks: our ``WorkerPool``, or an ``ExecutorPool``."""

    def wants(self) -> bool: ...
    def put(self, first: int, items: list[Any], *, mode: Mode = ...) -> None: ...
    def idle(self) -> bool: ...
    def collect(self) -> list[Outcome]: ...
    def close(self) -> None: ...
    def terminate(self) -> None: ...

    #: Bytes of the last chunk put, pickled (0: unknown).
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

    def pool(self, workers: int, *, each: bool = False) -> Runner:
        """Start a pool of ``workers`` with these options (or use the executor).

        ``each``: every worker runs one item (``fn()`` in each of ``n``).
        """
        if self.executor is not None:
            return ExecutorPool(
                self.executor, self.fn, workers, keep_going=self.return_exceptions
            )
        return WorkerPool(
            self.fn,
            workers,
            initializer=self.initializer,
            initargs=self.initargs,
            start_method=self.start_method,
            timeout=self.timeout,
            keep_going=self.return_exceptions,
            max_tasks=1 if each else self.max_tasks_per_child,
        )


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
    return PoolOptions(
        fn=fn,
        n=check_workers(n, timeout, initializer, executor),
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


def check_workers(
    n: int | None,
    timeout: float | None,
    initializer: object,
    executor: Executor | None = None,
    *,
    name: str = "n",
) -> int:
    """Check what every pool takes (``process_pool`` too); return ``n``.

    ``n`` defaults to the executor's worker count when it says (see
    :func:`_workers_of`), else to the CPUs this process may use; ``name``
    is how the caller spelled it.
    """
    if initializer is not None and not callable(initializer):
        raise TypeError(
            f"initializer must be callable or None, not {type(initializer).__name__}"
        )
    validate.task_timeout(timeout)
    if n is None:
        n = _workers_of(executor) or usable_cpus()
    return validate.worker_count(n, name)


def _workers_of(executor: Executor | None) -> int | None:
    """How many calls ``executor`` runs at once, where it says so.

    ``max_workers`` (the stdlib's executors, loky's); for dask.distributed's
    ``Client.get_executor()``, the threads of its cluster's workers.
    """
    count = getattr(executor, "_max_workers", None)
    if count is None:
        nthreads = getattr(getattr(executor, "_client", None), "nthreads", None)
        if callable(nthreads):
            with contextlib.suppress(Exception):  # a cluster that cannot answer
                count = sum(nthreads().values())
    return count if isinstance(count, int) and count > 0 else None


def _check_executor(
    executor: object, timeout: float | None, ours: Mapping[str, object]
) -> None:
    """``executor`` must be an Executor, without the options of our own pool.

    ``ours``: those options by name, ``None`` where not given.
    """
    if not isinstance(executor, Executor):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (or None for our "
            f"own pool), not {type(executor).__name__}"
        )
    if timeout is not None:
        raise ValueError(
            "timeout= needs our own pool (executor=None): another executor "
            "cannot kill a task that runs too long"
        )
    for name, value in ours.items():
        if value is not None:
            raise ValueError(
                f"{name}= configures our own pool; with executor=, configure "
                "the executor itself"
            )
