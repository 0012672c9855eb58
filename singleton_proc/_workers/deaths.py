"""What a lost worker's chunk becomes: the item to blame, and what runs again.

A pool worker runs the items of its chunk one after the other, then pickles
their results and sends them in one message. When it dies, or its timeout
kills it, its board (``worker_view.Stage``) says how far it got::

    stage             blamed                      runs again, in another worker
    ----------------  --------------------------  ------------------------------
    waiting           nobody                      the chunk, as it was
    unpickling        the item, if it was alone   each item alone, to find it
    running item k    k                           the items after k, as a chunk;
                                                  those before k each alone
    sending           the item, if it was alone   each item alone, to find it
    untracked         nobody yet                  each item alone, to find it

Untracked: the worker ran the rest of a chunk of tiny items in C, without
showing each on the board (that would double their cost; see
``child_loop``), so which item it ran is not known.

A death while sending is a result whose pickling killed the worker (the OOM
killer, while a large result is pickled) or a call that closed the
worker's pipe. Items that ran but whose results died with the worker run
again; **no item runs more than twice**: such an item goes again alone,
in a chunk marked ``ran_before``, and a chunk of one item lost while it
runs or sends is blamed, never run again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .chunks import Outcome, failed
from .errors import (
    WHILE_RUNNING,
    WHILE_SENDING,
    TaskTimeoutError,
    WorkerDiedError,
    death_message,
)
from .protocol import Mode, describe, name_of
from .worker_view import Stage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .chunks import Chunk

__all__ = ["Loss", "Repack", "settle", "start_failure"]

_log = logging.getLogger("singleton_proc")
#: Workers dying before they are ready, in a row, before the pool gives up.
_FAILED_STARTS = 3


class Repack(Protocol):
    """Makes a chunk of some items of a lost one, to run elsewhere."""

    def __call__(
        self, lost: Chunk, first: int, items: Sequence[Any], *, ran_before: bool
    ) -> Chunk: ...


@dataclass(frozen=True)
class Loss:
    """A worker lost with a chunk: how far it got, and how it ended.

    Attributes:
        pid: The worker's pid.
        exitcode: Its exit status, or the negated signal number.
        stage: How far it got with the chunk.
        offset: The item it was running (for ``Stage.RUNNING``).
        timeout: The limit it ran over, when our timeout killed it.
    """

    pid: int
    exitcode: int | None
    stage: Stage
    offset: int = 0
    timeout: float | None = None


def settle(
    loss: Loss, chunk: Chunk, pool_name: str, repack: Repack
) -> tuple[list[Outcome], list[Chunk]]:
    """The errors of the items to blame for ``loss``, and the chunks to run again.

    Args:
        loss: Where the worker was, and how it ended.
        chunk: The chunk it had.
        pool_name: The pool's name for its function, for messages.
        repack: Makes the chunks that run again.
    """
    first, items = chunk.first, chunk.items
    if loss.stage is Stage.WAITING:
        what = f"{pool_name} (between tasks)"
        _log.warning(
            "%s; its items run in another worker",
            death_message(loss.pid, what, loss.exitcode),
        )
        return [], [chunk]
    if loss.stage is Stage.RUNNING:
        offset = loss.offset
        error = _blame(loss, chunk, offset, pool_name)
        # The items before it ran, but their results died with the worker.
        again = [
            repack(chunk, index, [item], ran_before=True)
            for index, item in enumerate(items[:offset], first)
        ]
        if offset + 1 < len(items):
            after = items[offset + 1 :]
            again.append(
                repack(chunk, first + offset + 1, after, ran_before=chunk.ran_before)
            )
        return [Outcome(first + offset, [None], {0: error})], again
    if len(items) == 1:
        return [failed(first, 1, _blame(loss, chunk, 0, pool_name))], []
    ran = loss.stage is not Stage.UNPICKLING  # sending or untracked: they ran
    if ran:
        shown = first + chunk.work.shift
        what = f"{pool_name} on items {shown}-{shown + len(items) - 1}"
        stage = WHILE_SENDING
        if loss.stage is Stage.UNTRACKED:
            what, stage = f"{what} (tiny items, not tracked one by one)", WHILE_RUNNING
        _log.warning(
            "%s; each of them runs again alone, to find the one to blame",
            death_message(loss.pid, what, loss.exitcode, stage=stage),
        )
    return [], [
        repack(chunk, index, [item], ran_before=ran)
        for index, item in enumerate(items, first)
    ]


def _blame(loss: Loss, chunk: Chunk, offset: int, pool_name: str) -> BaseException:
    """The error for the item at ``offset``, which the worker ran when it was lost."""
    index = chunk.first + offset + chunk.work.shift
    item = chunk.items[offset]
    if chunk.work.mode is Mode.CALL:  # a submitted call: (fn, args, kwargs)
        what = f"{name_of(item[0])} in task {index} (arguments {describe(item[1])})"
    else:
        fn = chunk.work.fn
        name = pool_name if fn is None else name_of(fn)
        what = f"{name} on item {index} ({describe(item)})"
        if loss.stage is Stage.UNPICKLING:
            what += ", while unpickling it"
    if loss.timeout is not None:
        return TaskTimeoutError(
            f"{what} ran over its timeout of {loss.timeout} s in worker "
            f"{loss.pid}; the worker and its process tree were killed. "
            "Raise the timeout, or make the task faster",
            timeout=loss.timeout,
        )
    stage = WHILE_SENDING if loss.stage is Stage.SENDING else WHILE_RUNNING
    message = death_message(loss.pid, what, loss.exitcode, stage=stage)
    if chunk.ran_before and loss.stage is not Stage.UNPICKLING:
        message += (
            "; that was its second run (the result of the first died with "
            "another worker), and there is no third"
        )
    return WorkerDiedError(message, pid=loss.pid, exitcode=loss.exitcode)


def start_failure(
    in_a_row: int, pid: int, start_up: str, exitcode: int | None
) -> WorkerDiedError | None:
    """The pool's end once ``in_a_row`` workers died before they were ready.

    Each such death is one more (the count starts again once a worker is
    ready); ``pid``, ``start_up`` (what it was doing) and ``exitcode`` name
    the last one. ``None`` while there is hope.
    """
    if in_a_row < _FAILED_STARTS:
        return None
    return WorkerDiedError(
        f"{_FAILED_STARTS} pool workers in a row died before they were ready "
        "(in the initializer, or while unpickling the function); the last: "
        f"{death_message(pid, start_up, exitcode)}",
        pid=pid,
        exitcode=exitcode,
    )
