"""One pool worker as the parent sees it: its link, board and chunks.

The board is shared memory the worker writes as it goes (see
``child_loop``): which chunk it runs, the item's offset (or the stage:
unpickling the chunk, sending its results), and when that item started.
Reading it costs no message; reading it twice guards against the worker
moving on in between.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from multiprocessing.sharedctypes import RawArray
from typing import TYPE_CHECKING

from singleton_proc._base.waits import WORKER_LINGER

from .child_loop import (
    BOARD_SIZE,
    CHUNK,
    OFFSET,
    SENDING,
    STARTED,
    UNPACKING,
    UNTRACKED,
    serve,
)
from .chunks import STOP_MESSAGE
from .launch import launch
from .link import WorkerLink

if TYPE_CHECKING:
    from .chunks import Chunk
    from .protocol import Inherited

__all__ = ["Member", "Stage"]


class Stage(enum.Enum):
    """Where a worker is with the chunk it was given, as its board says."""

    WAITING = "waiting"  # it has not started the chunk
    UNPICKLING = "unpickling"  # the chunk's message, before any item runs
    RUNNING = "running"  # an item
    UNTRACKED = "untracked"  # one of its tiny items: the board does not say which
    SENDING = "sending"  # every item ran: the results are pickled and sent


class Member(WorkerLink):
    """One pool worker: its link, its board, and the chunks it was given."""

    def __init__(
        self, start_method: str, name: str, job: bytes, inherited: Inherited = ()
    ) -> None:
        """Start a worker running ``job`` (see ``child_loop.serve``)."""
        self.memory = RawArray("q", BOARD_SIZE)
        launched = launch(
            start_method, name, serve, job, self.memory, inherited, duplex=True
        )
        super().__init__(launched, "pool worker")
        self.board = memoryview(self.memory).cast("B").cast("q")
        self.chunks: deque[Chunk] = deque()
        self.exited = False  # its process ended: it takes no more chunks
        self.tasks = 0  # items it was given (its budget: max_tasks_per_child)
        self.retiring = False  # told to exit, its budget spent
        self._retired_ns: int | None = None  # when (until stopped for lingering)
        self.ready = False  # its initializer ran: it may be sent chunks
        #: The offset of the task its timeout killed, and that timeout.
        self.timed_out: tuple[int, float] | None = None

    def takes(self, size: int, budget: int | None) -> bool:
        """Whether it can take a chunk of ``size`` items now (``budget``: in all)."""
        idle = self.ready and not (self.chunks or self.eof or self.exited)
        if not idle or self.retiring:
            return False
        return budget is None or self.tasks + size <= budget

    def retire_if_short(self, size: int, budget: int | None) -> None:
        """Tell it to exit if idle with a ``budget`` too short for ``size`` more tasks.

        Its exit is then no death: it has no chunk.
        """
        if budget is None or self.chunks or self.retiring or self.exited:
            return
        if self.tasks + size > budget:
            self.send(STOP_MESSAGE)
            self.retiring = True
            self._retired_ns = time.monotonic_ns()

    def lingering(self, now_ns: int) -> bool:
        """Whether, retired, it is still there :data:`WORKER_LINGER` s on (once)."""
        retired = self._retired_ns
        if retired is None or now_ns - retired < WORKER_LINGER * 1e9:
            return False
        self._retired_ns = None
        return True

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

    def timeout(self, default: float | None) -> float | None:
        """The timeout of the item it runs: its call's, else the pool's ``default``."""
        if not self.chunks:
            return None
        timeout = self.chunks[0].work.timeout
        return default if timeout is None else timeout

    def seconds_left(self, default: float | None, now_ns: int) -> float | None:
        """Seconds until the item it runs times out; ``None``: no item, or no timeout.

        ``default``: the pool's timeout, for a call that has none of its own.
        """
        timeout = self.timeout(default)
        running = None if timeout is None else self.running()
        if timeout is None or running is None:
            return None
        return (running[1] - now_ns) / 1e9 + timeout

    def overran(self, default: float | None, now_ns: int) -> bool:
        """Whether the item it runs has run past its timeout; if so, noted as killed."""
        timeout = self.timeout(default)
        running = None if timeout is None else self.running()
        if timeout is None or running is None or now_ns - running[1] < timeout * 1e9:
            return False
        self.timed_out = (running[0], timeout)
        return True

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
        if offset == UNTRACKED:
            return Stage.UNTRACKED, 0
        return Stage.RUNNING, offset
