"""Ctrl-C and SIGTERM held off while a change of state is half made.

Python raises ``KeyboardInterrupt`` (and, with our SIGTERM handler,
``SystemExit``) in the main thread between almost any two bytecodes. A lock
taken but not yet registered, a record written but not yet owned, a process
tree suspended but not yet resumed: an interrupt there leaves the name
neither held nor free, or the old holder frozen for good. So those steps run
with the Python handlers of SIGINT and SIGTERM swapped for a recorder, and a
signal that arrived meanwhile is delivered once the step is whole.

The swap is safe at both ends: :func:`signal.signal` runs the handlers of
signals already pending *before* it changes anything, so an interrupt either
lands before the swap (nothing changed yet) or is recorded. Handlers only run
in the main thread, so elsewhere there is nothing to hold off. A signal whose
action is the default (SIGTERM with ``handle_sigterm=False``) is held off
too, and delivered afterwards with its default action: the process still
dies of it, but not in the middle of a step. SIGKILL cannot be held off by
anyone.

Holds nest (an inner one costs nothing), and a handler installed while they
are on (``_sigterm``'s, through :func:`set_handler`) takes effect when they
end instead of undoing them.

Example:
    >>> import os, signal
    >>> from singleton_proc._interrupts import signals_deferred
    >>> try:
    ...     with signals_deferred():
    ...         os.kill(os.getpid(), signal.SIGINT)
    ...         finished = True  # the step is not cut short
    ... except KeyboardInterrupt:
    ...     print("delivered after the step:", finished)
    delivered after the step: True
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import _platform

if TYPE_CHECKING:
    from collections.abc import Generator
    from types import FrameType, TracebackType

    from typing_extensions import Self

__all__ = [
    "DeferredSignals",
    "deferred",
    "get_handler",
    "holds_itself_off",
    "pending",
    "set_handler",
    "shielded",
    "signals_deferred",
]

_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)
)
# The C-level functions, where there are: ``signal.signal``/``getsignal``
# convert to enums on every call, a cost paid on each acquire and release.
_getsignal = getattr(signal, "_signal", signal).getsignal
_setsignal = getattr(signal, "_signal", signal).signal
_SIG_DFL = int(signal.SIG_DFL)
_SIG_IGN = int(signal.SIG_IGN)
_get_ident = threading.get_ident
#: The main thread's ident (where handlers run); renewed in a forked child.
_main_thread = [threading.main_thread().ident]

_R = TypeVar("_R")
_H = TypeVar("_H")

#: While held: the real handlers, swapped out for :func:`_record`.
_saved: dict[int, Any] = {}
#: Signals that arrived while held, in order, once each.
_caught: list[int] = []
#: Holds in force (main thread only): the outermost one swaps and restores.
_depth = 0
#: Handlers that hold themselves off (they ask :func:`deferred` first): left
#: in place, which saves two system calls a hold.
_self_holding: list[Any] = []


def get_handler(signum: int) -> Any:
    """The handler of ``signum`` as the program set it, even while held off."""
    if signum in _saved:
        return _saved[signum]
    return _getsignal(signum)


def set_handler(signum: int, handler: Any) -> None:
    """Install ``handler``; while held off, it takes over when the hold ends."""
    if signum in _saved:
        _saved[signum] = handler
    else:
        _setsignal(signum, handler)


def holds_itself_off(handler: _H) -> _H:
    """Declare that ``handler`` asks :func:`deferred` first; it is then not swapped."""
    _self_holding.append(handler)
    return handler


def _holds_itself_off(handler: object) -> bool:
    """Whether ``handler`` was declared with :func:`holds_itself_off`."""
    for known in _self_holding:  # noqa: SIM110  (no generator: on every hold)
        if handler is known:
            return True
    return False


def deferred(signum: int) -> bool:
    """For a handler that holds itself off: record ``signum`` if a hold is on.

    Returns:
        Whether the signal was recorded, to be delivered when the hold ends
        (the handler then returns at once).
    """
    if not _depth:
        return False
    if signum not in _caught:
        _caught.append(signum)
    return True


def pending(signum: int) -> bool:
    """Whether ``signum`` came during the hold in force and waits for its end."""
    return signum in _caught


def _record(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    """The stand-in handler: remember the signal for when the hold ends.

    Called with no hold in force, it is left over from a hold whose end was
    cut short (another signal's handler raised while the handlers were put
    back): it ends that hold now, so no signal is ever swallowed.
    """
    if signum not in _caught:
        _caught.append(signum)
    if not _depth:
        _finish()


class DeferredSignals:
    """SIGINT and SIGTERM recorded, not handled, from hold() to let_through().

    Usable as a context manager (held for the block) or driven by hand, for
    code that lets signals through at chosen points (while it sleeps).
    """

    __slots__ = ("_holding",)

    def __init__(self) -> None:
        """Nothing is held until :meth:`hold`."""
        self._holding = False

    def hold(self) -> None:
        """Hold the signals off (main thread only; a no-op elsewhere or if held)."""
        global _depth  # noqa: PLW0603  (process-wide, main thread only)
        if self._holding or _get_ident() != _main_thread[0]:
            return
        if _depth:
            _depth += 1
        else:
            _depth = 1  # first: a signal during the swap is then recorded
            try:
                for signum in _SIGNALS:
                    if signum in _saved:
                        continue  # still swapped: the last hold's end was cut short
                    previous = _getsignal(signum)
                    if previous is None or previous == _SIG_IGN:
                        continue  # installed outside Python, or ignored: leave it
                    if _holds_itself_off(previous):
                        continue
                    # Saved first: an interrupt raised by the swap itself (a
                    # pending signal handled before it) then restores a no-op.
                    _saved[signum] = previous
                    _setsignal(signum, _record)
            except BaseException:
                _depth = 0
                _finish()
                raise
        self._holding = True

    def let_through(self) -> None:
        """End this hold; the last one restores and delivers what arrived."""
        global _depth  # noqa: PLW0603
        if not self._holding:
            return
        self._holding = False
        _depth -= 1
        if not _depth:
            _finish()

    def __enter__(self) -> Self:
        """Hold the signals off for the block."""
        self.hold()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Let them through: a signal that came during the block lands here."""
        self.let_through()


def _finish() -> None:
    """End the outermost hold: put the handlers back, then deliver what arrived."""
    _restore()
    if _caught:
        caught = _caught[:]
        _caught.clear()
        _deliver(caught)


def _restore() -> None:
    """Put every saved handler back, even if a pending signal's handler raises.

    :func:`signal.signal` runs the handlers of pending signals before it
    changes anything: a Ctrl-C that lands just after SIGINT's handler is back
    raises ``KeyboardInterrupt`` from the call that puts SIGTERM's back,
    which is then left undone. So the rest is put back before it propagates.
    """
    try:
        _put_back()
    except BaseException:
        _put_back()  # that handler has run; another signal would need to come now
        raise


def _put_back() -> None:
    """Reinstate the saved handlers, each one forgotten only once it is in place."""
    for signum, previous in list(_saved.items()):
        _setsignal(signum, previous)
        del _saved[signum]


def _deliver(signums: list[int]) -> None:
    """Hand each signal to its handler; if one raises, the later ones still run.

    The exception of the last one propagates (the earlier ones as its
    context): with Ctrl-C and then SIGTERM held off, the program sees the
    SIGTERM, as it would have without the hold.
    """
    if not signums:
        return
    try:
        handler = _getsignal(signums[0])
        if callable(handler):
            handler(signums[0], None)
        elif handler == _SIG_DFL:
            signal.raise_signal(signums[0])
    finally:
        _deliver(signums[1:])


def signals_deferred() -> DeferredSignals:
    """A context manager that holds SIGINT and SIGTERM off for its block."""
    return DeferredSignals()


def shielded(steps: Generator[float, None, _R]) -> Generator[float, None, _R]:
    """Run each step of a sleep-yielding generator with signals held off.

    ``steps`` yields how long to sleep (the waits of ``acquire()``, a
    replace, a worker stop). Its code between two yields runs whole; a
    Ctrl-C or SIGTERM lands only while the driver sleeps, so the driver's
    ``close()`` unwinds ``steps`` from a ``yield``, where its state is
    consistent, and the unwinding is held off too.
    """
    deferred = DeferredSignals()
    deferred.hold()
    try:
        while True:
            try:
                delay = steps.send(None)
            except StopIteration as done:
                return cast("_R", done.value)
            deferred.let_through()
            yield delay
            deferred.hold()
    finally:
        deferred.hold()
        try:
            steps.close()
        finally:
            deferred.let_through()


def _reset_in_child() -> None:
    """After fork: the child takes no step of ours, so it gets the handlers back."""
    global _depth  # noqa: PLW0603
    _depth = 0
    _main_thread[0] = threading.main_thread().ident  # the thread that forked
    _caught.clear()
    for signum, previous in list(_saved.items()):
        _setsignal(signum, previous)
    _saved.clear()


_platform.at_fork(after_in_child=_reset_in_child)
