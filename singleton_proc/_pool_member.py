"""One pool worker as the parent sees it: its process, pipe, board and chunks.

The board is shared memory the worker writes as it goes (see
``_pool_worker``): which chunk it runs, the item's offset (or the stage:
unpickling the chunk, sending its results), and when that item started.
Reading it costs no message; reading it twice guards against the worker
moving on in between.
"""

from __future__ import annotations

import enum
from collections import deque
from multiprocessing.sharedctypes import RawArray
from typing import TYPE_CHECKING

import psutil

from ._launch import launch
from ._polling import run_blocking
from ._pool_worker import (
    BOARD_SIZE,
    CHUNK,
    OFFSET,
    SENDING,
    STARTED,
    UNPACKING,
    serve,
)
from ._tree import stopping_trees

if TYPE_CHECKING:
    from ._chunks import Chunk

__all__ = ["Member", "Stage", "stop_trees"]


class Stage(enum.Enum):
    """Where a worker is with the chunk it was given, as its board says."""

    WAITING = "waiting"  # it has not started the chunk
    UNPICKLING = "unpickling"  # the chunk's message, before any item runs
    RUNNING = "running"  # an item
    SENDING = "sending"  # every item ran: the results are pickled and sent


class Member:
    """One worker process, its pipe, its board, and the chunks it was given."""

    def __init__(self, start_method: str, name: str, job: bytes) -> None:
        """Start a worker running ``job`` (see ``_pool_worker.serve``)."""
        self.memory = RawArray("q", BOARD_SIZE)
        launched = launch(start_method, name, serve, job, self.memory, duplex=True)
        self.process = launched.process
        self.conn = launched.conn
        pid = self.process.pid
        assert pid is not None  # noqa: S101  (started)
        self.pid: int = pid
        try:  # nobody else reaps it (see _launch): the pid stays ours
            self.root: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:  # pragma: no cover - reaped behind our back
            self.root = None
        self.board = memoryview(self.memory).cast("B").cast("q")
        self.chunks: deque[Chunk] = deque()
        self.eof = False
        self.exited = False  # its process ended: it takes no more chunks
        self.used = False  # it was given a chunk
        self.ready = False  # its initializer ran: it may be sent chunks
        self.timed_out: int | None = None  # offset of the task its timeout killed

    def send(self, payload: bytes) -> None:
        """Send a message; a dead worker's is dropped (its death is noticed)."""
        try:
            self.conn.send_bytes(payload)
        except OSError:
            self.eof = True

    def running(self) -> tuple[int, int] | None:
        """``(offset, started_ns)`` of the item of ``chunks[0]`` it runs, if any."""
        if not self.chunks:
            return None
        board = self.board
        chunk, offset, started = board[CHUNK], board[OFFSET], board[STARTED]
        if (
            chunk != self.chunks[0].id
            or offset < 0
            or board[CHUNK] != chunk
            or board[OFFSET] != offset
        ):
            return None  # not started yet, unpickling, or moving on right now
        return offset, started

    def stage(self) -> tuple[Stage, int]:
        """Where it is with ``chunks[0]``, and the offset of the item it runs.

        The board is read once: this is for a worker that has stopped (died,
        or was killed for its timeout), whose board no longer moves.
        """
        chunk, offset = self.board[CHUNK], self.board[OFFSET]
        if not self.chunks or chunk != self.chunks[0].id:
            return Stage.WAITING, 0
        if offset == UNPACKING:
            return Stage.UNPICKLING, 0
        if offset == SENDING:
            return Stage.SENDING, 0
        return Stage.RUNNING, offset

    def reap(self) -> int | None:
        """Wait for the exited process, release it, and return its exit code."""
        self.process.join()
        exitcode = self.process.exitcode
        self.conn.close()
        self.process.close()
        return exitcode


def stop_trees(members: list[Member], grace: float) -> None:
    """Stop these workers' trees together: SIGTERM, ``grace``, SIGKILL."""
    roots = {m.root: f"pool worker {m.pid}" for m in members if m.root is not None}
    if roots:
        run_blocking(stopping_trees(roots, grace))
