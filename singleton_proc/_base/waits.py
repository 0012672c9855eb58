"""How we wait: short sleeps that grow to a cap, and one driver that sleeps them.

Waiting for a lock or for processes to exit is written once, as generators
that yield how long to sleep before looking again. ``acquire()`` and
``terminate()`` sleep through them with :func:`run_blocking`; ``async with``
awaits ``asyncio.sleep`` instead, so the event loop keeps running.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeVar, cast

from .interrupts import shielded

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

__all__ = [
    "POLL_CAP",
    "STOP_GRACE",
    "WORKER_LINGER",
    "WORKER_PROBE",
    "delays",
    "run_blocking",
]

#: The first look comes after 1 ms; each wait is 1.5 times the last, up to
#: 10 ms: a hand-over takes milliseconds, and a long wait costs about a
#: hundred cheap system calls a second.
FIRST_POLL = 0.001
POLL_CAP = 0.010
_GROWTH = 1.5

#: How often a parent also asks whether a busy worker is alive: a process
#: the task forked may hold a copy of the worker's pipe and sentinel, which
#: then never report its death.
WORKER_PROBE = 0.05
#: How long a worker gets to exit once its work is done (a non-daemon thread
#: can keep it alive) before its tree is stopped.
WORKER_LINGER = 5.0
#: SIGTERM-to-SIGKILL grace when workers are stopped early: an error,
#: Ctrl-C, interpreter exit.
STOP_GRACE = 0.5

_R = TypeVar("_R")


def delays() -> Iterator[float]:
    """1 ms, 1.5 ms, 2.25 ms, ... then 10 ms for ever."""
    delay = FIRST_POLL
    while True:
        yield delay
        delay = min(delay * _GROWTH, POLL_CAP)


def run_blocking(steps: Generator[float, None, _R]) -> _R:
    """Sleep through ``steps`` and return what the generator returns.

    Ctrl-C and SIGTERM land only during the sleeps (see
    :func:`~singleton_proc._base.interrupts.shielded`): a step never stops half
    way, and the generator is closed from a ``yield``.
    """
    sleeps = shielded(steps)
    try:
        while True:
            time.sleep(sleeps.send(None))
    except StopIteration as done:
        return cast("_R", done.value)
    finally:
        sleeps.close()
