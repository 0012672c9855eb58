"""``run_in_pool(..., executor=process_pool())``: a call on a warm pool's own workers.

:class:`WarmPool` offers what ``map`` asks of a pool (``wants``, ``put``,
``collect``, ``idle``, ``close``, ``terminate``) on the manager thread of a
running ``process_pool``: each chunk is a job beside the executor's other
work, so the call starts no worker and pays no start-up. What the call's
own pool would give, it keeps: ``timeout=`` (a stuck worker's tree is killed
and replaced in the pool), the first failure raised at once, and leaving
early (an error, Ctrl-C) stopping this call's chunks only: the ones waiting
are dropped, the workers running one are stopped and replaced, and the pool
stays usable.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from singleton_proc._base.interrupts import signals_deferred
from singleton_proc._base.waits import done_ones

from .chunks import CHUNKS_AHEAD, Outcome
from .executor_jobs import Job, Lane, TaskFuture

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Future

    from .chunks import Work
    from .executor_thread import Manager

__all__ = ["WarmPool"]

_AFTER_SHUTDOWN = (
    "the process_pool given as executor= is shut down: call run_in_pool "
    "and iter_in_pool inside its with block"
)


class WarmPool:
    """Our pool's interface for ``map``, on a running ``process_pool``'s workers.

    Args:
        manager: The pool's manager (it owns the workers).
        workers: How many of its workers this call may keep busy at once.
    """

    def __init__(self, manager: Manager, workers: int) -> None:
        """Nothing is sent yet."""
        self._manager = manager
        self._lane = Lane(workers)
        self._ahead = CHUNKS_AHEAD * workers
        #: The estimated pickled size of the last chunk's items (0: unknown), from
        #: those the pool has packed so far.
        self.last_payload = 0
        self._bytes_per_item = 0.0
        self._jobs: dict[Future[Any], Job] = {}

    def wants(self) -> bool:
        """Whether another chunk should be sent now."""
        return len(self._jobs) < self._ahead

    def put(self, first: int, items: Sequence[Any], work: Work) -> None:
        """Send ``items`` (indices ``first``... of this call) as one job.

        Noted before it is sent, Ctrl-C held off between: a job sent is
        always one :meth:`terminate` drops.
        """
        job = Job(TaskFuture(), items, work, self._lane, base=first)
        with signals_deferred():
            self._jobs[job.future] = job
            try:
                self._manager.post(job, _AFTER_SHUTDOWN)
            except BaseException:
                del self._jobs[job.future]
                raise
        self.last_payload = round(self._bytes_per_item * len(items))

    def idle(self) -> bool:
        """Whether no chunk of this call is in the pool."""
        return not self._jobs

    def collect(self) -> list[Outcome]:
        """Wait until a chunk is done; the outcomes in (indexed as in this call)."""
        if not self._jobs:  # a caller's bug: waiting would be for ever
            raise RuntimeError("collect() with nothing in flight")
        outcomes = []
        for future in done_ones(list(self._jobs)):
            job = self._jobs.pop(future)
            if job.payload:
                self._bytes_per_item = job.payload / len(job.items)
            if future.cancelled():  # by shutdown(cancel_futures=True)
                raise RuntimeError(_AFTER_SHUTDOWN)
            done: Outcome = future.result()
            outcomes.append(dataclasses.replace(done, first=job.base))
        return outcomes

    def close(self) -> None:
        """Nothing to do: the workers are the pool's."""

    def terminate(self) -> None:
        """Drop this call's chunks: stop the workers running one (they are replaced).

        Ctrl-C and SIGTERM are held off until that is done.
        """
        with signals_deferred():
            jobs = list(self._jobs.values())
            self._jobs.clear()
            self._manager.cancel(jobs)
