"""Ctrl-C and SIGTERM held off while a change of state is half made.

Python raises ``KeyboardInterrupt`` (and, with our SIGTERM handler,
``SystemExit``) in the main thread between almost any two bytecodes. A lock
taken but not yet registered, a record written but not yet owned, a process
tree suspended but not yet resumed: an interrupt there leaves the name
neither held nor free, or the old holder frozen for good. So those steps run
with the Python handlers of SIGINT and SIGTERM swapped for a recorder, and a
signal that arrived meanwhile is delivered, in order, once the step is whole.

:func:`signal.signal` runs the handlers of pending signals *before* it
changes anything, so an interrupt lands before a swap (nothing changed yet)
or is recorded; a handler that such a call runs and that installs a handler
of its own keeps it. Handlers only run in the main thread, so elsewhere there
is nothing to hold off. A handler that holds itself off (ours for SIGTERM,
see :func:`holds_itself_off`) is left in place. The default action (SIGTERM
with ``handle_sigterm=False``) is held off only where dying would leave a
mess, around the suspension of a process tree (``default_too``): anywhere
else the OS cleans up after a dead process. SIGKILL cannot be held off.

Each hold puts back what it swapped; holds nest (an inner one costs
nothing), and a handler installed while they are on (``sigterm``'s, through
:func:`set_handler`) takes effect when they end instead of being undone.

Example:
    >>> import os, signal
    >>> from singleton_proc._base.interrupts import signals_deferred
    >>> try:
    ...     with signals_deferred():
    ...         os.kill(os.getpid(), signal.SIGINT)
    ...         finished = True  # the step is not cut short
    ... except KeyboardInterrupt:
    ...     print("delivered after the step:", finished)
    delivered after the step: True
"""

from __future__ import annotations

import collections
import operator
import signal
import threading
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import platform as _platform

if TYPE_CHECKING:
    from collections.abc import Generator
    from types import FrameType, TracebackType

    from typing_extensions import Self

__all__ = [
    "DeferredSignals",
    "arrived",
    "deferred",
    "get_handler",
    "holding",
    "holds_itself_off",
    "in_main_thread",
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

#: While swapped: the real handlers, in place of which :func:`_record` runs.
_saved: dict[int, Any] = {}
#: Signals that arrived while held, in order, once each.
_caught: list[int] = []
#: Holds in force (main thread only); the last one to end delivers.
_depth = 0
#: Bumped in a forked child: a hold begun before the fork is void there.
_generation = 0
#: Handlers that hold themselves off (they ask :func:`deferred` first): left
#: in place, which saves two system calls a hold.
_self_holding: list[Any] = []


def in_main_thread() -> bool:
    """Whether this is the main thread, where handlers run and may be set."""
    return _get_ident() == _main_thread[0]


def get_handler(signum: int) -> Any:
    """The handler of ``signum`` as the program set it, even while held off."""
    saved = _saved.get(signum, _record)  # one lookup: a handler may pop it
    return _getsignal(signum) if saved is _record else saved


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


def arrived() -> bool:
    """Whether any signal came during the hold in force (it waits for its end)."""
    return bool(_caught)


def holding() -> bool:
    """Whether a hold is in force (in the main thread)."""
    return bool(_depth)


def _record(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    """The stand-in handler: remember the signal for when the hold ends.

    Called with no hold in force (the last one is ending, or its end was cut
    short by another signal's handler), the hold is over for this signal:
    the handlers go back and it is delivered now, so none is swallowed.
    """
    if signum not in _caught:
        _caught.append(signum)
    if not _depth:
        _restore(list(_saved))
        _deliver_caught()


def _swappable(handler: Any, *, default_too: bool) -> bool:
    """Whether a hold swaps ``handler`` out (see the module's docstring)."""
    if handler is None or handler == _SIG_IGN:
        return False  # installed outside Python, or ignored: leave it
    if handler == _SIG_DFL:
        return default_too
    for known in _self_holding:  # noqa: SIM110  (no generator: on every hold)
        if handler is known:
            return False
    return True


class DeferredSignals:
    """SIGINT and SIGTERM recorded, not handled, from hold() to let_through().

    Usable as a context manager (held for the block) or driven by hand, for
    code that lets signals through at chosen points (while it sleeps). With
    ``default_too``, a signal whose action is the default is held off as
    well, for steps that must not be cut short even by the process's death.
    """

    __slots__ = ("_default_too", "_generation", "_holding", "_swapped")

    def __init__(self, *, default_too: bool = False) -> None:
        """Nothing is held until :meth:`hold`."""
        self._default_too = default_too
        self._holding = False
        self._generation = 0
        self._swapped: list[int] = []

    def hold(self) -> None:
        """Hold the signals off (main thread only; a no-op elsewhere or if held)."""
        global _depth  # noqa: PLW0603  (process-wide, main thread only)
        if self._holding or _get_ident() != _main_thread[0]:
            return
        outermost = not _depth
        self._holding, self._generation, self._swapped = True, _generation, []
        _depth += 1
        try:
            for signum in _SIGNALS:
                if signum in _saved:  # swapped by an outer hold, or left so
                    if outermost:  # by a hold whose end was cut short: ours now
                        self._swapped.append(signum)
                    continue
                handler = _getsignal(signum)
                if not _swappable(handler, default_too=self._default_too):
                    continue
                self._swapped.append(signum)  # noted first: an interrupt undoes it
                _saved[signum] = handler
                previous = _setsignal(signum, _record)
                if previous is not handler:  # a pending signal's handler set it
                    _saved[signum] = previous
        except BaseException:
            self.let_through()
            raise

    def let_through(self) -> None:
        """End this hold: put back what it swapped; the last one delivers."""
        global _depth  # noqa: PLW0603
        if not self._holding:
            return
        self._holding = False
        if self._generation != _generation:
            return  # begun before a fork: this child's state was reset since
        _depth -= 1
        try:
            _restore(self._swapped)
        finally:
            _put_back(self._swapped)  # a no-op, unless cut short before it began
            if not _depth and _caught:
                try:
                    _deliver_caught()
                finally:  # another signal's handler raised before it began
                    if _caught:
                        _deliver_caught()

    def __enter__(self) -> Self:
        """Hold the signals off for the block."""
        try:
            self.hold()
        except BaseException:  # a handler ran as hold() returned: no block, no exit
            self.let_through()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Let them through: a signal that came during the block lands here."""
        self.let_through()


def _restore(signums: list[int]) -> None:
    """Put the saved handlers of ``signums`` back, even if a pending handler raises.

    A Ctrl-C that lands just after SIGINT's handler is back raises
    ``KeyboardInterrupt`` from the call that puts SIGTERM's back, which is
    then left undone: so the rest is put back before it propagates.
    """
    try:
        _put_back(signums)
    except BaseException:
        _put_back(
            signums
        )  # that handler has run; another signal would need to come now
        raise


def _put_back(signums: list[int]) -> None:
    """Reinstate each saved handler, unless the program installed its own meanwhile."""
    for signum in signums:
        previous = _saved.get(signum, _record)  # one lookup: a handler may pop it
        if previous is _record:
            continue  # put back already, by a nested end of the hold
        replaced = _setsignal(signum, previous)
        _saved.pop(signum, None)
        if replaced is not _record and replaced is not previous:
            _setsignal(signum, replaced)  # set by a handler meanwhile: theirs stays


def _deliver_caught() -> None:
    """Raise each signal that came during the hold again, in order.

    ``map`` takes each one off the list and raises it within one C loop, so
    no Python code (and no other signal's handler) runs in between: once
    taken, a signal is pending in the interpreter, which runs its handler at
    once (or applies the default action), and none is lost if a handler
    raises. The later ones are still raised then, and the exception of the
    last one propagates (the earlier ones as its context): with Ctrl-C and
    then SIGTERM held off, the program sees the SIGTERM, as it would have
    without the hold.
    """
    signums = iter(_caught)
    try:
        collections.deque(map(signal.raise_signal, signums), maxlen=0)
    finally:
        del _caught[: len(_caught) - operator.length_hint(signums)]
        if _caught:
            _deliver_caught()


def signals_deferred(*, default_too: bool = False) -> DeferredSignals:
    """A context manager that holds SIGINT and SIGTERM off for its block."""
    return DeferredSignals(default_too=default_too)


def shielded(steps: Generator[float, None, _R]) -> Generator[float, None, _R]:
    """Run each step of a sleep-yielding generator with signals held off.

    ``steps`` yields how long to sleep (the waits of ``acquire()``, a
    replace, a worker stop). Its code between two yields runs whole; a
    Ctrl-C or SIGTERM lands only while the driver sleeps, so the driver's
    ``close()`` unwinds ``steps`` from a ``yield``, where its state is
    consistent, and the unwinding is held off too.
    """
    hold = DeferredSignals()
    try:
        hold.hold()
        while True:
            try:
                delay = steps.send(None)
            except StopIteration as done:
                return cast("_R", done.value)
            hold.let_through()
            yield delay
            hold.hold()
    finally:
        hold.hold()
        try:
            steps.close()
        finally:
            hold.let_through()


def _reset_in_child() -> None:
    """After fork: the child takes no step of ours, so it gets the handlers back."""
    global _depth, _generation  # noqa: PLW0603
    _depth = 0
    _generation += 1
    _main_thread[0] = threading.main_thread().ident  # the thread that forked
    _caught.clear()
    for signum, previous in list(_saved.items()):
        _setsignal(signum, previous)
    _saved.clear()


_platform.at_fork(after_in_child=_reset_in_child)
