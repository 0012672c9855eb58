"""``process_pool``'s jobs, and ``map``: input read lazily into jobs, results in order.

The window is :data:`~singleton_proc._workers.chunks.CHUNKS_AHEAD` chunks per
worker in flight or waiting to be read; more input is read as results are,
in the caller's thread. An input that raises raises at its position, after
the results before it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from singleton_proc._base.waits import any_done, wait_until
from singleton_proc._errors import UnpicklableError

from .chunks import CHUNKS_AHEAD, Outcome, Reader, Work
from .errors import WorkerDiedError
from .protocol import Mode, dumps_call, name_of, task_alone

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator, Sequence

    from .chunks import ChunkSizer

__all__ = ["Job", "Lane", "MapFeed", "TaskFuture", "map_results", "next_job"]

_log = logging.getLogger("singleton_proc")
_T = TypeVar("_T")

#: A submitted call's work: its item is the call (see ``protocol.Mode``).
SUBMITTED = Work(mode=Mode.CALL, keep_going=True)
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
class Lane:
    """The jobs of one ``run_in_pool`` call on a warm pool: ``limit`` run at once.

    ``failed``: a job of the call failed, and the call raises: no other
    job of it starts (the call cancels them).
    """

    limit: int
    failed: bool = False

    def allows(self, running: list[Job], n: int) -> bool:
        """Whether a job of this call may go in a pool of ``n`` running ``running``."""
        if self.failed:
            return False
        return self.limit >= n or sum(j.lane is self for j in running) < self.limit


@dataclass(eq=False)
class Job:
    """A submitted call (``Mode.CALL``) or a chunk of a ``map``, and its future."""

    future: Future[Any]
    items: Sequence[Any]
    work: Work = SUBMITTED
    lane: Lane | None = None  # run_in_pool's: at most its n running at once
    base: int = 0  # the index of its first item in its call (map, run_in_pool)
    first: int = 0  # the pool's index of its first item (set when put)
    left: int = 0  # items whose outcome has not come
    values: list[Any] = field(default_factory=list)
    errors: dict[int, BaseException] = field(default_factory=dict)
    seconds: float = 0.0
    values_bytes: int = 0  # its values', pickled (map's chunk sizer learns them)
    payload: int = 0  # its items' bytes, pickled (map's chunk sizer learns them)

    @property
    def end(self) -> int:
        """The pool's index after its last item."""
        return self.first + len(self.items)

    def note(self, outcome: Outcome) -> None:
        """Take in the outcome of some of its items (it may come in pieces)."""
        at = outcome.first - self.first
        self.values[at : at + len(outcome.values)] = outcome.values
        self.errors.update({at + k: error for k, error in outcome.errors.items()})
        self.seconds += outcome.seconds
        self.values_bytes += outcome.values_bytes
        self.left -= len(outcome.values)

    def outcome(self) -> Outcome:
        """Its items' outcome, indexed from 0 (a chunk of a ``map`` or a call)."""
        return Outcome(0, self.values, self.errors, self.seconds, self.values_bytes)

    def fail(self, error: BaseException) -> None:
        """Set ``error`` on the future unless it was cancelled or is done."""
        with contextlib.suppress(InvalidStateError):
            self.future.set_exception(error)

    def named(self, error: BaseException) -> BaseException:
        """``error``; for a call that would not pickle, the error naming which part."""
        if isinstance(error, UnpicklableError) and error.what.startswith("item"):
            fn, args, kwargs = self.items[0]
            try:
                dumps_call(fn, args, kwargs)
            except UnpicklableError as exc:
                return exc
        return error

    def stopped(self, reason: str) -> WorkerDiedError:
        """The error of this job when its worker was stopped under it."""
        if self.work.mode is Mode.CALL:
            fn = self.items[0][0]
            what = f"{name_of(fn)} (task {self.first})"
        else:
            last = self.base + len(self.items) - 1
            what = f"items {self.base}-{last} of its call (map or run_in_pool)"
        return WorkerDiedError(
            f"{what} was stopped before it returned: {reason}; its worker's "
            "process tree was stopped"
        )


class MapFeed:
    """A ``map``'s input, read into chunks within the window, and its jobs."""

    def __init__(self, owner: object, *, post: Callable[[Job, str], None],
                 withdraw: Callable[[list[Job]], None], width: int, work: Work,
                 items: Reader, sizer: ChunkSizer) -> None:  # fmt: skip
        """Feed ``items``, run as ``work``, to ``post`` (``owner``'s manager's).

        ``withdraw`` takes back the jobs not started when the map is left.

        ``owner``, the executor, is kept alive meanwhile: an abandoned executor
        is shut down when collected. The window is ``width`` workers wide.
        """
        self.owner, self.post, self.width = owner, post, width
        self.withdraw = withdraw
        self.work = work
        self.items, self.sizer = items, sizer
        self.jobs: deque[Job] = deque()
        self.error: Exception | None = None  # the input raised: after the rest
        self._exhausted = False
        self._posted = 0  # items sent

    def fill(self) -> None:
        """Send chunks until the window is full or the input ends."""
        while not self._exhausted and len(self.jobs) < CHUNKS_AHEAD * self.width:
            batch = self.items.take(self.sizer.size())
            self.error = self.items.error  # raised after the items before it
            self._exhausted = self.error is not None or not batch
            if not batch:
                return
            job = Job(Future(), batch, self.work, base=self._posted)
            self.post(job, _MAP_AFTER_SHUTDOWN)
            self.jobs.append(job)
            self._posted += len(batch)


def next_job(inbox: Iterable[Job], running: list[Job], n: int) -> Job | None:
    """The first job of ``inbox`` that may go in a pool of ``n`` running ``running``.

    A submitted call needs a free worker; while one waits, the others go in
    only as it could (no more than ``n`` in the pool), so that a long ``map``
    cannot pass it for ever. A ``run_in_pool`` call's job waits while its
    lane does not allow it (see :class:`Lane`).
    """
    room = len(running) < n
    call_waits = False
    for job in inbox:
        if job.work.mode is Mode.CALL:
            if room:
                return job
            call_waits = True
        elif (room or not call_waits) and (
            job.lane is None or job.lane.allows(running, n)
        ):
            return job
    return None


def map_results(feed: MapFeed, deadline: float | None) -> Iterator[Any]:
    """A ``map``'s results in order, reading more input as they are read.

    Chained in C from each chunk's values: tiny tasks come by the million a
    second, and a Python step per result would cost a map a quarter of
    its time. Dropping the iterator early cancels what has not started.
    """
    return itertools.chain.from_iterable(_chunk_results(feed, deadline))


def _chunk_results(
    feed: MapFeed, deadline: float | None
) -> Generator[Iterator[Any], None, None]:
    """Each chunk's results, in order; a failure is raised after those before it."""
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
            values, errors = outcome.values, outcome.errors
            del job, outcome
            error = errors[min(errors)] if errors else None
            yield handed_out(values[: min(errors)] if errors else values)
            if error is not None:
                raise error
        if feed.error is not None:
            raise feed.error
    finally:
        if feed.jobs:
            feed.withdraw(list(feed.jobs))


_END = object()
#: The largest chunk whose values are let go one by one (see ``handed_out``).
LET_GO_EACH = 64


def handed_out(values: list[Any]) -> Iterator[Any]:
    """Iterate a chunk's ``values`` in C, each let go as it is handed on.

    Held in the list, a value the caller dropped would live until the
    chunk's last is read: ``values`` is emptied as it goes (``list.pop``).
    But for a chunk of more than :data:`LET_GO_EACH` values: their items
    took under a third of a millisecond each (chunks are sized to take
    about 20 ms), and popping each would cost a map of tiny tasks a tenth
    of its time; those are let go with their chunk, once it is read.
    """
    if len(values) > LET_GO_EACH:
        return iter(values)
    values.append(_END)
    values.reverse()
    return iter(values.pop, _END)
