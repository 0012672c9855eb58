"""How we wait: short sleeps that grow to a cap, their driver, and waits on threads.

Waiting for a lock or for processes to exit is written once, as generators
that yield how long to sleep before looking again. ``acquire()`` and
``terminate()`` sleep through them with :func:`run_blocking`; ``async with``
awaits ``asyncio.sleep`` instead, so the event loop keeps running. The main
thread waits for one of our threads (an ``Event``, a ``Future``) through
:func:`wait_until`, so that a Ctrl-C still lands.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .interrupts import arrived, holding, in_main_thread, shielded, signals_deferred

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Generator, Iterator
    from concurrent.futures import Future

__all__ = [
    "POLL_CAP",
    "SIGNAL_SLICE",
    "STOP_GRACE",
    "WORKER_LINGER",
    "WORKER_PROBE",
    "any_done",
    "delays",
    "done_ones",
    "run_async",
    "run_blocking",
    "wait_until",
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
#: How long the main thread blocks at a time while it waits for one of our
#: threads: how late a Ctrl-C can be raised (a signal that lands during a
#: slice is delivered at its end), for some 50 cheap wake-ups a second.
SIGNAL_SLICE = 0.02

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


async def run_async(steps: Generator[float, None, _R], *, off_loop: bool) -> _R:
    """:func:`run_blocking` for ``async`` code: sleeps are ``asyncio.sleep``.

    With ``off_loop``, every step after the first runs in a worker thread, so
    that steps which wait on a server (one round trip, bounded by its
    timeouts) never block the event loop; the first, which may install
    signal handlers, runs on the loop's (main) thread. A cancelled or
    interrupted await lets the step in flight end before the generator is
    closed, which it then is, from a ``yield``.
    """
    import asyncio  # noqa: PLC0415  (loaded by the caller's event loop already)

    loop = asyncio.get_running_loop()
    sleeps = shielded(steps)
    first = True
    try:
        while True:
            if first or not off_loop:
                done, value = _advance(sleeps)
            else:
                step = loop.run_in_executor(None, _advance, sleeps)
                try:
                    done, value = await asyncio.shield(step)
                except BaseException:
                    while not step.done():  # never close a running generator
                        with contextlib.suppress(asyncio.CancelledError):
                            await asyncio.wait([step])
                    raise
            first = False
            if done:
                return cast("_R", value)
            await asyncio.sleep(value)
    finally:
        sleeps.close()


def _advance(steps: Generator[float, None, Any]) -> tuple[bool, Any]:
    """One step: ``(False, delay)``, or ``(True, result)`` once finished."""
    try:
        return False, steps.send(None)
    except StopIteration as finished:
        return True, finished.value


def wait_until(ready: Callable[[float | None], bool], timeout: float | None) -> bool:
    """Wait until ``ready`` says yes, at most ``timeout`` s (``None``: for ever).

    ``ready(seconds)`` is a wait of its own, at most that long (``Event.wait``,
    ``concurrent.futures.wait``), returning whether its thing happened. Two
    things go wrong when the main thread simply waits on another thread:

    - the kernel may hand a Ctrl-C to the other thread, where CPython only
      flags it: a wait without a timeout never wakes to run the handler, and
      the Ctrl-C is lost until the wait ends;
    - a ``KeyboardInterrupt`` raised between two bytecodes of
      ``Condition.wait`` can leave its lock released, and the wait then fails
      with ``RuntimeError: release unlocked lock`` instead.

    So it waits in slices of :data:`SIGNAL_SLICE` with SIGINT and SIGTERM held
    off, and delivers a signal that came between two slices, where no lock
    is held. A handler that returns lets the wait go on. Off the main thread,
    or inside a hold (which delivers at its end), it is ``ready(timeout)``.

    Example:
        >>> import threading
        >>> done = threading.Event()
        >>> threading.Timer(0.01, done.set).start()
        >>> wait_until(done.wait, None)
        True
    """
    if holding() or not in_main_thread():
        return ready(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with signals_deferred():
            while not arrived():
                left = SIGNAL_SLICE
                if deadline is not None:
                    left = max(0.0, min(left, deadline - time.monotonic()))
                if ready(left):
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False


def done_ones(futures: Collection[Future[Any]]) -> list[Future[Any]]:
    """Wait until any of ``futures`` is done (see :func:`wait_until`); those done."""
    wait_until(any_done(futures), None)
    return [future for future in futures if future.done()]


def any_done(futures: Collection[Future[Any]]) -> Callable[[float | None], bool]:
    """For :func:`wait_until`: a wait until any of ``futures`` is done."""
    # Imported here: ``import singleton_proc`` (the lock) loads no worker machinery.
    from concurrent.futures import FIRST_COMPLETED, wait  # noqa: PLC0415

    return lambda seconds: bool(wait(futures, seconds, FIRST_COMPLETED).done)
