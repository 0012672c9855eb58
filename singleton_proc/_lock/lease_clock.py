"""One thread per process that wakes each held lease at its next moment.

A held lease has two moments ahead of it: its next renewal and its
deadline. Rather than two threads per hold (most holds of a decorated
function end long before either moment), one daemon thread per process
sleeps until the earliest moment of all and calls that lease's ``tick``: a
quick look that never waits on the network (it starts the lease's renewal
thread when a renewal is first due, or says the loss at the deadline). The
thread ends when no lease has a moment left (a released lease forgets its
own), so a process that holds nothing runs no thread of ours. A forked
child starts a clock of its own on first use.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING

from singleton_proc._base import platform

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["at", "forget"]

_log = logging.getLogger("singleton_proc")


class _Clock:
    """The moments to come, in order, and the thread that keeps them."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.moments: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()  # equal times keep their order
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        """Call each tick at its moment, until none is left (a daemon thread)."""
        while True:
            with self.changed:
                while True:
                    if not self.moments:
                        self.thread = None  # the next at() starts another
                        return
                    left = self.moments[0][0] - time.monotonic()
                    if left <= 0:
                        break
                    self.changed.wait(left)
                _, _, tick = heapq.heappop(self.moments)
            try:
                tick()
            except Exception:  # noqa: BLE001  # pragma: no cover - the clock outlives a tick
                _log.exception("a lease's clock tick failed")


_clock = _Clock()


def at(moment: float, tick: Callable[[], None]) -> None:
    """Call ``tick`` in the clock's thread at ``moment`` (``time.monotonic()``).

    ``tick`` must be quick and never wait: every lease of the process shares
    the thread. A moment that no longer matters (the lease was released, or
    renewed since) is still called, and its tick does nothing.
    """
    with _clock.changed:
        if _clock.thread is None:
            _clock.thread = threading.Thread(
                target=_clock.run, name="singleton_proc lease clock", daemon=True
            )
            _clock.thread.start()
        heapq.heappush(_clock.moments, (moment, next(_clock.order), tick))
        _clock.changed.notify()


def forget(tick: Callable[[], None]) -> None:
    """Drop the moments of ``tick`` (a released lease); none left, the thread ends."""
    with _clock.changed:
        _clock.moments = [moment for moment in _clock.moments if moment[2] != tick]
        heapq.heapify(_clock.moments)
        _clock.changed.notify()


def _new_clock_in_child() -> None:
    """After a fork: the parent's clock thread is not here, nor are its leases."""
    global _clock  # noqa: PLW0603  (one clock per process)
    _clock = _Clock()


platform.at_fork(after_in_child=_new_clock_in_child)
