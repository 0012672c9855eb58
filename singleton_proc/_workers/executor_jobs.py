"""``process_pool``'s jobs, and ``map``: input read lazily into jobs, results in order.

The window is :data:`~singleton_proc._workers.chunks.CHUNKS_AHEAD` chunks per
worker in flight or waiting to be read; more input is read as results are,
in the caller's thread. An input that raises raises at its position, after
the results before it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from singleton_proc._base.waits import any_done, wait_until

from .chunks import CHUNKS_AHEAD
from .errors import WorkerDiedError
from .protocol import Mode, name_of, task_alone

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from .chunks import ChunkSizer, Outcome

__all__ = ["Job", "MapFeed", "TaskFuture", "map_results"]

_log = logging.getLogger("singleton_proc")
_T = TypeVar("_T")

_MAP_AFTER_SHUTDOWN = (
    "the process_pool was shut down before its map() results were read (map "
    "sends its input as they are read): read them inside the with block"
)


class TaskFuture(Future[_T]):
    """A submitted task's future: whatever a done-callback raises is logged.

    ``concurrent.futures`` logs an ``Exception`` from a callback and lets
    anything else (``SystemExit``) escape into the thread that settles the
    future: ours runs the whole pool. Here that is logged too, and reaches
    no other future; a Ctrl-C in the main thread stays a Ctrl-C.
    """

    def add_done_callback(self, fn: Callable[[Future[_T]], object]) -> None:
        """Call ``fn(self)`` once done (now, if done), logging what it raises."""
        super().add_done_callback(functools.partial(_call_logged, fn))


def _call_logged(fn: Callable[[Future[Any]], object], future: Future[Any]) -> None:
    """``fn(future)``; what it raises is logged, but for a Ctrl-C (main thread)."""
    try:
        fn(future)
    except BaseException as exc:
        if (
            not task_alone(exc)
            and threading.current_thread() is threading.main_thread()
        ):
            raise
        _log.exception("exception calling callback for %r", future)


@dataclass(eq=False)
class Job:
    """A submitted call (``Mode.CALL``) or a chunk of a ``map``, and its future."""

    future: Future[Any]
    items: list[Any]
    fn: Callable[..., Any] | None = None
    mode: Mode = Mode.CALL
    first: int = 0  # the pool's index of its first item (set when put)
    left: int = 0  # items whose outcome has not come
    values: list[Any] = field(default_factory=list)
    errors: dict[int, BaseException] = field(default_factory=dict)
    seconds: float = 0.0
    payload: int = 0  # bytes, pickled (map's chunk sizer learns from it)

    def stopped(self, reason: str) -> WorkerDiedError:
        """The error of this job when its worker was stopped under it."""
        if self.mode is Mode.CALL:
            fn = self.items[0][0]
            what = f"{name_of(fn)} (task {self.first})"
        else:
            what = f"items {self.first}-{self.first + len(self.items) - 1} of a map()"
        return WorkerDiedError(
            f"{what} was stopped before it returned: {reason}; its worker's "
            "process tree was stopped"
        )


class MapFeed:
    """A ``map``'s input, read into chunks within the window, and its jobs."""

    def __init__(self, owner: object, *, post: Callable[[Job, str], None],
                 width: int, fn: Callable[..., Any], mode: Mode,
                 items: Iterator[Any], sizer: ChunkSizer) -> None:  # fmt: skip
        """Feed ``items``, called in ``mode``, to ``post`` (``owner``'s manager's).

        ``owner``, the executor, is kept alive meanwhile: an abandoned executor
        is shut down when collected. The window is ``width`` workers wide.
        """
        self.owner, self.post, self.width = owner, post, width
        self.fn, self.mode = fn, mode
        self.items, self.sizer = items, sizer
        self.jobs: deque[Job] = deque()
        self.error: Exception | None = None  # the input raised: after the rest
        self._exhausted = False

    def fill(self) -> None:
        """Send chunks until the window is full or the input ends."""
        while not self._exhausted and len(self.jobs) < CHUNKS_AHEAD * self.width:
            batch: list[Any] = []
            try:  # one by one: the items before a failure are kept
                for item in itertools.islice(self.items, self.sizer.size()):
                    batch.append(item)  # noqa: PERF402
            except Exception as exc:  # noqa: BLE001  (raised in its place)
                self.error = exc
            self._exhausted = self.error is not None or not batch
            if not batch:
                return
            job = Job(Future(), batch, self.fn, self.mode)
            self.post(job, _MAP_AFTER_SHUTDOWN)
            self.jobs.append(job)


def map_results(feed: MapFeed, deadline: float | None) -> Generator[Any, None, None]:
    """Yield a ``map``'s results in order, reading more input as they are read."""
    try:
        while feed.jobs:
            job = feed.jobs[0]
            wait = None if deadline is None else deadline - time.monotonic()
            wait_until(any_done([job.future]), wait)
            outcome: Outcome = job.future.result(0)  # or TimeoutError
            feed.jobs.popleft()
            feed.sizer.observe(outcome)
            feed.sizer.observe_payload(job.payload, len(job.items))
            feed.fill()
            # Each value is let go as it is handed on: held here, a value
            # the caller dropped would live until the chunk's last is read.
            values, errors = deque(outcome.values), outcome.errors
            del job, outcome
            for offset in range(len(values)):
                if offset in errors:
                    raise errors[offset]
                yield values.popleft()
        if feed.error is not None:
            raise feed.error
    finally:
        for job in feed.jobs:
            job.future.cancel()
