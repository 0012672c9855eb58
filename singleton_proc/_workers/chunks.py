"""Chunks: consecutive items sent to a worker in one message, how many, the answer.

Sending items one at a time costs a round trip each, which makes tiny
tasks hundreds of times slower (``ProcessPoolExecutor.map``'s default);
one huge chunk per worker balances badly and makes a stream wait. The size
adapts to how long items take in the workers: it starts at one item, and
from then on aims for chunks of about 20 ms, so tiny items travel by the
thousand and slow ones one by one. A sized input caps it at ``Pool.map``'s
choice (four chunks per worker); a stream at 2,000 items, which also
bounds the window of items in flight; and so that its items, and its
results, take about 1 MB pickled at most (:data:`MESSAGE_BYTES`).

A ``range``, list or tuple is read in slices of itself (:class:`Reader`):
a chunk of a range pickles in a few bytes and its worker makes the ints, so
the parent, which a map of tiny tasks keeps busiest, neither builds nor
pickles the items.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from singleton_proc._errors import UnpicklableError

from .child_loop import HEADER, STOP, chunk_message
from .protocol import Mode, dumps, dumps_checked, loads, rebuild, task_alone

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "CHUNKS_AHEAD",
    "GATHER_SECONDS",
    "MESSAGE_BYTES",
    "STOP_MESSAGE",
    "Chunk",
    "ChunkSizer",
    "Outcome",
    "Packer",
    "Reader",
    "Work",
    "failed",
    "unpack",
]

#: What tells a pool worker to exit.
STOP_MESSAGE = STOP.to_bytes(HEADER, "little", signed=True)

#: About how large a chunk's items, or its results, may be pickled: a
#: message that size crosses a pipe in well under a millisecond, the chunks
#: in flight hold a few MB, and results come back in pieces the parent
#: unpickles while workers compute. (Timing alone would not see it: a task
#: returning 1 KB in 0.1 µs, over a million items on 2 workers, made chunks
#: of 125,000 results, 125 MB each.)
MESSAGE_BYTES = 1024 * 1024
#: Chunks submitted ahead per worker where chunks cannot wait ready in the
#: parent (another executor, ``process_pool().map``).
CHUNKS_AHEAD = 2
#: How long a chunk should take in a worker; and how long a chunk of a
#: stream may wait for its items to come.
_TARGET_SECONDS = GATHER_SECONDS = 0.02
#: The largest chunk of a stream (input of unknown length).
_STREAM_CAP = 2000
#: Chunks per worker that ``Pool.map`` makes of a sized input; and the
#: chunks per worker a stream's window holds.
_CHUNKS_PER_WORKER = 4


@dataclass(frozen=True)
class Work:
    """What a call's items are given to, and how: the same for all its chunks.

    Attributes:
        fn: The function, when the work brings it (a call on a warm pool, a
            ``process_pool().map``); ``None`` where the runner has it already.
        mode: How each item is called (see ``protocol.Mode``).
        keep_going: Whether a worker goes on with the chunk after an item
            raised (``return_exceptions``), or stops there.
        timeout: Seconds each item may run; ``None``: the pool's timeout.
        payload: ``fn`` pickled for a worker, once for the whole call (empty
            until :meth:`pickled`, and for the pool's own function).
        shift: What turns the pool's index of an item into the one its
            call knows, in messages (a call on a pool that ran others).
    """

    fn: Callable[..., Any] | None = None
    mode: Mode = Mode.ONE
    keep_going: bool = False
    timeout: float | None = None
    payload: bytes = b""
    shift: int = 0

    def pickled(self) -> Work:
        """This work with ``fn`` pickled (by value if the script defines it).

        Once per call, not per chunk: a function pickled by value costs far
        more than a chunk of plain items.

        Raises:
            UnpicklableError: ``fn`` will not pickle (``what``: "the function").
        """
        body = dumps_checked(self.fn, (), "the function")
        return dataclasses.replace(self, payload=body)


@dataclass(eq=False)
class Chunk:
    """Consecutive items of one call.

    Attributes:
        first: The index of the first item in the whole input.
        items: The items: a list, or a slice of the caller's range, list or
            tuple (see :class:`Reader`).
        work: How they are called.
        id: The pool's number for it (the board shows it while it runs).
        payload: Its message to the worker, pickled.
        items_bytes: How much of ``payload`` its items take (what grows
            with them: the function and the framing left out).
        ran_before: Whether its item already ran once, in a worker that died
            before the result came back (such a chunk holds one item, which
            never runs a third time; see ``deaths``).
    """

    first: int
    items: Sequence[Any]
    work: Work
    id: int = 0
    payload: bytes = b""
    items_bytes: int = 0
    ran_before: bool = False

    @property
    def end(self) -> int:
        """The index after its last item."""
        return self.first + len(self.items)


class Packer:
    """Makes one pool's chunks: numbered, and pickled for its workers."""

    def __init__(self, *, timed: bool) -> None:
        """Chunks whose workers time each item (``timed``: the pool has a timeout)."""
        self._ids = itertools.count(1)
        self._timed = timed

    def chunk(self, first: int, items: Sequence[Any], work: Work, *,
              ran_before: bool = False) -> Chunk:  # fmt: skip
        """A new chunk of ``items`` (indices ``first``...), its payload pickled.

        ``work`` has its function pickled already (:meth:`Work.pickled`), if
        it brings one.

        Raises:
            UnpicklableError: naming the item (or the function) that will
                not pickle.
        """
        chunk = Chunk(first, items, work, next(self._ids), ran_before=ran_before)
        timed = self._timed or work.timeout is not None
        message = (work.mode, items, work.keep_going, timed)
        shown = first + work.shift
        parts = ((f"item {shown + i}", item) for i, item in enumerate(items))
        body = dumps_checked(message, parts, f"items {shown}-{shown + len(items) - 1}")
        chunk.payload = chunk_message(chunk.id, work.payload, body)
        chunk.items_bytes = len(body) - _framing(work.mode, work.keep_going, timed)
        return chunk

    def piece(
        self, lost: Chunk, first: int, items: Sequence[Any], *, ran_before: bool
    ) -> Chunk:
        """Some items of a lost chunk, packed again to run elsewhere."""
        return self.chunk(first, items, lost.work, ran_before=ran_before)


#: The inputs a :class:`Reader` slices.
_SLICED = (range, list, tuple)


class Reader:
    """A call's input, read lazily a chunk at a time.

    A ``range`` is read in slices, each a ``range`` too: whatever its
    length, it pickles in a few bytes, and the worker makes the ints (on
    200,000 tiny tasks, half of the parent's work was building the items
    and pickling them). A list or tuple is sliced too, in C, where reading
    it item by item cost a map of tiny tasks 4% of its time. Any other
    iterable is read item by item.

    Attributes:
        error: What the input raised, if it did: the items read before it
            are still returned, and the caller reads no further.

    Example:
        >>> reader = Reader(range(10))
        >>> reader.take(4), reader.take(4), reader.take(4)
        (range(0, 4), range(4, 8), range(8, 10))
        >>> len(reader.take(4))  # its end
        0
        >>> Reader([1, 2, 3]).take(2), Reader(iter("abc")).take(2)
        ([1, 2], ['a', 'b'])
    """

    def __init__(self, items: Iterable[Any]) -> None:
        """Read ``items``; a ``TypeError`` now if it is not iterable."""
        exact = type(items) in _SLICED  # a subclass may iterate otherwise
        self._sliced = items if isinstance(items, _SLICED) and exact else None
        self._items = iter(() if self._sliced is not None else items)
        self._read = 0
        self.error: Exception | None = None

    def take(self, count: int, *, within: float | None = None) -> Sequence[Any]:
        """Up to ``count`` more items; empty once the input has ended.

        ``within``: seconds to stop after (a slow stream, whose items come
        one by one, then does not hold back those it has given).
        """
        if self._sliced is not None:
            batch = self._sliced[self._read : self._read + count]
            self._read += len(batch)
            if len(batch) < count:  # its end: read no further, as an iterator
                self._sliced = batch[:0]  # would not (a list may grow meanwhile)
            return batch
        read: list[Any] = []
        try:  # items read before a failure are kept
            if within is None:
                read.extend(itertools.islice(self._items, count))
            else:
                deadline = time.monotonic() + within
                for item in itertools.islice(self._items, count):
                    read.append(item)
                    if time.monotonic() >= deadline:
                        break
        except Exception as exc:  # noqa: BLE001  (the caller raises it in its place)
            self.error = exc
        return read


@functools.cache
def _framing(mode: Mode, keep_going: bool, timed: bool) -> int:
    """The bytes of a chunk's body without its items.

    Left out of what the chunk sizer learns: counted in, they would make a
    chunk of one small item look a hundred times its size, and the next
    chunks far smaller than the items allow.
    """
    return len(dumps((mode, [], keep_going, timed)))


@dataclass
class Outcome:
    """The answer for consecutive items.

    Attributes:
        first: The index of the first item.
        values: One value per item (``None`` where an error stands).
        errors: Offset in ``values`` to the exception of that item.
        seconds: How long the chunk ran in its worker (0 when unknown).
        values_bytes: How many bytes its values took, pickled, on their way
            back (0 when unknown).
    """

    first: int
    values: list[Any]
    errors: dict[int, BaseException] = field(default_factory=dict)
    seconds: float = 0.0
    values_bytes: int = 0


def failed(first: int, count: int, error: BaseException) -> Outcome:
    """The outcome of ``count`` items that all failed with ``error``."""
    return Outcome(first, [None] * count, dict.fromkeys(range(count), error))


def unpack(chunk: Chunk, done: tuple[Any, ...], *, pool_name: str, pid: int) -> Outcome:
    """A chunk's answer from worker ``pid``: its values unpickled, its errors rebuilt.

    ``done`` is the worker's ``("done", ...)`` message without its kind:
    ``(values, errors, seconds)``. Values that cannot be unpickled here
    fail every item of the chunk with an ``UnpicklableError`` that says
    so, never a raw error.
    """
    values, errors, seconds = done
    try:
        results = loads(values)
    except BaseException as exc:  # named, never raised raw (SystemExit too)
        if not task_alone(exc):
            raise
        shown = chunk.first + chunk.work.shift
        error = UnpicklableError(
            f"the results of {pool_name} on items {shown}-"
            f"{shown + len(chunk.items) - 1} from worker {pid} "
            f"could not be unpickled here ({type(exc).__name__}: {exc}); "
            "return plain data",
            what="the result",
        )
        error.__cause__ = exc
        return failed(chunk.first, len(chunk.items), error)
    raised = {offset: rebuild(report) for offset, report in errors}
    return Outcome(chunk.first, results, raised, seconds, len(values))


class ChunkSizer:
    """Picks the size of the next chunk from the time items took so far.

    Args:
        fixed: The user's ``chunksize``, used as is; or ``None`` to adapt.
        workers: How many workers share the input.
        length: How many items there are, when known.
        limit: The most items a chunk may hold, if any.

    Example:
        >>> sizer = ChunkSizer(None, workers=2, length=200_000, limit=None)
        >>> sizer.size()
        1
        >>> sizer.observe(Outcome(0, [1], seconds=1e-6))
        >>> sizer.size()  # 1 µs an item: 20 ms of work a chunk
        20000
        >>> sizer.observe(Outcome(0, [1], seconds=1e-8))
        >>> sizer.size()  # faster still: Pool.map's choice, 200_000 / (2 * 4), caps it
        25000
    """

    def __init__(
        self, fixed: int | None, workers: int, length: int | None, limit: int | None
    ) -> None:
        """Start with one item per chunk, unless ``fixed``; never above ``limit``.

        ``limit``: a worker's budget of tasks (``max_tasks_per_child``).
        """
        if length is None:
            self._cap = _STREAM_CAP
        else:
            self._cap = max(1, math.ceil(length / (workers * _CHUNKS_PER_WORKER)))
        if limit is not None:
            self._cap = min(self._cap, limit)
            fixed = None if fixed is None else min(fixed, limit)
        self._fixed = fixed
        self._size = fixed or 1
        self._items_cap = self._results_cap = self._cap
        #: Items in flight or buffered, at most (for streams).
        self.window = _CHUNKS_PER_WORKER * workers * (fixed or self._cap)

    def size(self) -> int:
        """How many items the next chunk should hold."""
        return self._size

    def observe(self, outcome: Outcome) -> None:
        """Learn from how long ``outcome``'s chunk took, and what its values weigh."""
        if self._fixed is not None or not outcome.values or outcome.seconds <= 0:
            return  # no timing: a death, a timeout, an item that would not pickle
        count = len(outcome.values)
        if outcome.values_bytes > 0:
            self._results_cap = max(1, MESSAGE_BYTES * count // outcome.values_bytes)
        per_item = outcome.seconds / count
        by_time = int(_TARGET_SECONDS / per_item) if per_item > 0 else self._cap
        caps = (self._cap, self._items_cap, self._results_cap)
        self._size = max(1, min(*caps, by_time))

    def observe_payload(self, nbytes: int, count: int) -> None:
        """Learn how many bytes ``count`` items take, pickled."""
        if self._fixed is None and nbytes > 0:
            self._items_cap = max(1, MESSAGE_BYTES * count // nbytes)
