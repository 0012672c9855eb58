"""The pool worker: a loop that runs chunks of items until it is told to stop.

A pool worker is set up like a one-call worker (``bootstrap.prepare``: SIGINT
ignored, dying with its parent, logging forwarded), runs the initializer,
then reads chunks from its pipe and answers each in order. Besides the
pipe, it shares a small board with the parent: the chunk it runs, the
offset of the item in that chunk, and (when tasks have a timeout) when that
item started; the offset is :data:`UNPACKING` before the first item and
:data:`SENDING` after the last. The parent reads the board to name the
item a dead worker was running (or whose result it was sending) and to
time a task from when it started, at no cost of messages. A worker that
cannot send (its parent died, or a task closed the pipe) exits quietly at
once (see ``bootstrap.Channel``).

Messages from the parent: a chunk (see :func:`chunk_message`), or the id
:data:`STOP` alone. The worker says ``("ready",)`` once its initializer has
run (the parent sends nothing before: a large chunk would block it while
the initializer logs). Answers, one per chunk, in the order the chunks
came (besides ``("log", record)``)::

    ("done", values, errors, seconds)  values pickled; errors: [(offset, report)]
    ("stopped", offset, *report)   the item at offset failed; the rest did not run
    ("unreadable", *report)        the chunk could not be unpickled here
    ("init", *report)              the function or the initializer failed

where a report is ``protocol.report_exception``'s tuple.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

from .bootstrap import prepare, unpicklable_result, unpickling_failed
from .logforward import forward
from .protocol import Kind, Mode, dumps, loads, report_exception, with_inherited

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from multiprocessing.connection import Connection

    from .bootstrap import Channel, WorkerSettings
    from .protocol import Inherited

__all__ = [
    "BOARD_SIZE",
    "CHUNK",
    "HEADER",
    "OFFSET",
    "SENDING",
    "STARTED",
    "STOP",
    "UNPACKING",
    "UNTRACKED",
    "caller",
    "chunk_message",
    "serve",
]

#: The board: three signed 64-bit integers.
BOARD_SIZE = 3
#: Board fields: the running chunk's id, the item's offset in it, and when
#: the item started (``time.monotonic_ns()``, only when tasks are timed).
CHUNK, OFFSET, STARTED = range(BOARD_SIZE)

#: The size of each number that opens a message to a worker (see
#: :func:`chunk_message`); the id :data:`STOP` alone tells it to exit.
HEADER = 8
STOP = 0
#: The board's offset while the worker unpickles a chunk (before any item),
#: and once every item ran, while it pickles and sends the chunk's answer (a
#: result whose pickling kills the worker is then blamed on the chunk, not
#: taken for a chunk that never started).
UNPACKING = -1
SENDING = -2
#: The board's offset while the rest of a chunk of tiny items runs in C,
#: untracked (see ``_call_each``): after :data:`SAMPLE` items that took less
#: than :data:`TINY_NS` each.
UNTRACKED = -3
SAMPLE = 8
TINY_NS = 2_000


def caller(fn: Callable[..., Any], mode: Mode) -> Callable[[Any], Any]:
    """The function that runs one item in ``mode``."""
    if mode is Mode.ONE:
        return fn
    if mode is Mode.NONE:
        return lambda _item: fn()
    if mode is Mode.STAR:
        return lambda item: fn(*item)
    return lambda item: item[0](*item[1], **item[2])  # Mode.CALL


def chunk_message(chunk_id: int, fn: bytes, body: bytes) -> bytes:
    """A chunk's message to a worker.

    The chunk's id and the size of ``fn`` (:data:`HEADER` bytes each,
    little-endian), ``fn`` (its call's function, pickled once for all its
    chunks; empty: the pool's own), then ``body``, ``(mode, items,
    keep_going, timed)`` pickled. The function is not pickled inside the
    body: the body's pickle is then plain, and it shows whether the items
    need cloudpickle (see ``protocol``).
    """
    sizes = chunk_id.to_bytes(HEADER, "little", signed=True) + len(fn).to_bytes(
        HEADER, "little"
    )
    return sizes + fn + body


def serve(  # noqa: PLR0917  (multiprocessing passes a worker's arguments by position)
    conn: Connection,
    parent_alive: Connection,
    settings: WorkerSettings,
    job: bytes,
    board_memory: Any,
    inherited: Inherited = (),
) -> None:
    """Run the initializer, then chunks, until told to stop or the parent is gone.

    Args:
        conn: The worker's end of its two-way pipe to the parent.
        parent_alive: See ``bootstrap.prepare``.
        settings: See ``bootstrap.prepare``.
        job: ``(fn, initializer, initargs)``, pickled by the parent.
        board_memory: Shared memory (a ``RawArray`` of :data:`BOARD_SIZE`
            64-bit integers) the parent reads.
        inherited: The initializer arguments left out of ``job``, passed as
            the process started (see ``protocol.dumps_job``).
    """
    channel = prepare(conn, parent_alive, settings)
    board = memoryview(board_memory).cast("B").cast("q")
    try:
        fn, initializer, initargs = loads(job)
        initargs = with_inherited(initargs, inherited)
    except Exception as exc:  # noqa: BLE001  (reported, and named)
        channel.send(
            Kind.INIT, *unpickling_failed("the function or the initializer", exc)
        )
        return
    forward(channel.send_log, settings.levels)  # unpickling may add handlers
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as exc:  # noqa: BLE001  (reported to the parent)
            channel.send(Kind.INIT, *report_exception(exc))
            return
    channel.send(Kind.READY)
    while _serve_one(conn, channel, board, fn):
        pass


def _serve_one(conn: Connection, channel: Channel, board: memoryview, fn: Any) -> bool:
    """Read one chunk, run it and answer; ``False`` when told to stop or orphaned.

    ``fn`` is the pool's function, or ``None`` when each chunk brings its own.

    A function of its own so that the chunk (its function, items and results)
    is let go as it returns: an idle worker keeps nothing of its last task (a
    shared-memory handle, an open file, a large array).
    """
    try:
        data = conn.recv_bytes()
    except (EOFError, OSError):  # the parent closed its end: it is gone
        return False
    chunk_id = int.from_bytes(data[:HEADER], "little", signed=True)
    if chunk_id == STOP:
        return False
    board[OFFSET] = UNPACKING  # if an item kills us now, the parent knows
    board[CHUNK] = chunk_id
    view = memoryview(data)
    body = 2 * HEADER + int.from_bytes(view[HEADER : 2 * HEADER], "little")
    what = "the function"
    try:
        chunk_fn = loads(view[2 * HEADER : body]) if body > 2 * HEADER else fn
        what = "the items"
        mode, items, keep_going, timed = loads(view[body:])
    except Exception as exc:  # noqa: BLE001  (reported, and named)
        board[CHUNK] = 0
        channel.send(Kind.UNREADABLE, *unpickling_failed(what, exc))
        return True
    del data, view
    call = caller(chunk_fn, mode)
    _run_chunk(channel, board, call, items, keep_going=keep_going, timed=timed)
    return True


def _run_chunk(
    channel: Channel,
    board: memoryview,
    call: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    keep_going: bool,
    timed: bool,
) -> None:
    """Call every item and send the chunk's answer.

    With ``keep_going`` an item that raises is reported and the others run;
    without it the chunk stops at the first failure.
    """
    values: list[Any] = []
    errors: list[tuple[int, tuple[str | bytes, ...]]] = []
    began = time.perf_counter()
    while (failure := _call_each(board, call, items, values, timed)) is not None:
        offset, exc = failure
        if not keep_going:
            board[OFFSET] = SENDING
            channel.send(Kind.STOPPED, offset, *report_exception(exc))
            return
        errors.append((offset, report_exception(exc)))
        values.append(None)
    seconds = time.perf_counter() - began
    board[OFFSET] = SENDING  # not late, whatever the parent reads next; not waiting
    try:
        payload = dumps(values)
    except Exception:  # noqa: BLE001  (a result that will not pickle: name it)
        _send_picklable(channel, values, errors, seconds, keep_going=keep_going)
        return
    channel.send(Kind.DONE, payload, errors, seconds)


def _call_each(
    board: memoryview,
    call: Callable[[Any], Any],
    items: Sequence[Any],
    values: list[Any],
    timed: bool,
) -> tuple[int, Exception] | None:
    """Call the items from ``len(values)`` on, into ``values``; the first failure.

    The board says which item runs (and, ``timed``, since when), at a cost
    that doubles a tiny task's. So when the median of :data:`SAMPLE` items
    in a row took under :data:`TINY_NS` (a median: a preempted item or two
    does not change it), the rest run in C (``list.extend``), the board
    saying :data:`UNTRACKED`: were the worker lost then, each item would run
    again alone, to find the one to blame (see ``deaths``). An item that
    raises is found either way: it is the one after the values.
    """
    end = len(items)
    try:
        many = not timed and end - len(values) > SAMPLE
        if many and _median_ns(board, call, items, values) < TINY_NS:
            board[OFFSET] = UNTRACKED
            values.extend(map(call, itertools.islice(items, len(values), None)))
            return None
        _call_tracked(board, call, items, values, end, timed)
    except Exception as exc:  # noqa: BLE001  (SystemExit ends the worker)
        return len(values), exc
    return None


def _median_ns(
    board: memoryview,
    call: Callable[[Any], Any],
    items: Sequence[Any],
    values: list[Any],
) -> int:
    """Call the next :data:`SAMPLE` items, each shown on the board; their median ns."""
    clock, spent = time.monotonic_ns, []
    for offset in range(len(values), len(values) + SAMPLE):
        board[OFFSET] = offset
        began = clock()
        values.append(call(items[offset]))
        spent.append(clock() - began)
    return sorted(spent)[SAMPLE // 2]


def _call_tracked(  # noqa: PLR0917  (the hot loop: positional is cheaper)
    board: memoryview,
    call: Callable[[Any], Any],
    items: Sequence[Any],
    values: list[Any],
    end: int,
    timed: bool,
) -> None:
    """Call the items from ``len(values)`` to ``end``, each shown on the board."""
    append, clock = values.append, time.monotonic_ns
    for offset in range(len(values), end):
        if timed:
            board[STARTED] = clock()
        board[OFFSET] = offset
        append(call(items[offset]))


def _send_picklable(
    channel: Channel,
    values: list[Any],
    errors: list[tuple[int, tuple[str | bytes, ...]]],
    seconds: float,
    *,
    keep_going: bool,
) -> None:
    """Send the chunk's answer with each result that will not pickle reported."""
    for offset, value in enumerate(values):
        try:
            dumps(value)
        except Exception as exc:  # noqa: BLE001  (pickle raises many types)
            if not keep_going:
                channel.send(Kind.STOPPED, offset, *unpicklable_result(value, exc))
                return
            values[offset] = None
            errors.append((offset, unpicklable_result(value, exc)))
    errors.sort()
    channel.send(Kind.DONE, dumps(values), errors, seconds)
