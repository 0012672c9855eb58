"""SIGTERM as a clean exit while a name is held.

The default action of SIGTERM kills the process on the spot: no ``finally``,
no ``with`` exit, so the record stays behind. While at least one instance is
held by the main thread, and only if SIGTERM still has its default action, a
handler turns it into ``SystemExit(143)`` (128 + 15, what a shell reports
for a SIGTERM death). The default comes back when the last instance is
released by the main thread, unless someone installed another handler
meanwhile: theirs stays.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

from singleton_proc._base import interrupts as _interrupts
from singleton_proc._base import platform as _platform

from . import registry as _registry

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["hold", "let_go"]

_SIGTERM = getattr(signal, "SIGTERM", 15)
# Through _interrupts, so that a handler changed while signals are held off
# takes over when they are let through, instead of being undone then.
_getsignal = _interrupts.get_handler
_setsignal = _interrupts.set_handler
_SIG_DFL = int(signal.SIG_DFL)
# Runs a function in the main thread when it finishes, before the interpreter
# waits for the other threads (what concurrent.futures uses; CPython 3.9+).
_register_thread_atexit = getattr(threading, "_register_atexit", None)
_mutex = threading.Lock()
_holds = 0  # instances that asked for the handler and have not let go
_terminating = False  # our handler has turned a SIGTERM into SystemExit
#: A SIGTERM came during the last release and waits for its end: "exit"
#: (``SystemExit``), or "ignore" if an earlier one is unwinding already.
_late = ""


@_interrupts.holds_itself_off
def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    """Turn SIGTERM into ``SystemExit``, so ``finally`` blocks and releases run.

    Held off like any handler while a step of ours is half made (it then
    records the signal itself, for the end of the step). Once only: a
    second SIGTERM while the first unwinds would cut the cleanup short.
    A SIGTERM that came while the last release was under way still counts
    as one that came while the name was held: ``SystemExit``, and the
    default action back for the next one. With nothing held any more (the
    last instance was released off the main thread, which may not restore
    handlers), the default action is restored and the signal delivered again.
    """
    global _terminating, _late  # noqa: PLW0603
    if _interrupts.deferred(signum):
        return
    if _late:
        ignore, _late = _late == "ignore", ""
        _setsignal(_SIGTERM, _SIG_DFL)
        if ignore:
            return
        raise SystemExit(128 + signum)
    if _holds == 0:
        _die_by_sigterm()
    if _terminating:
        return
    _terminating = True
    if _register_thread_atexit is not None:
        _register_thread_atexit(_end_if_threads_linger)
    raise SystemExit(128 + signum)


def _end_if_threads_linger() -> None:
    """When the main thread is done, before waiting for the other threads.

    Threads that are not daemons would keep the process running after its
    SIGTERM-driven exit, and without its name: release what is still held
    and die of that SIGTERM, as the process would have without us.
    """
    if _other_threads_keep_us_alive():
        _registry.release_all()
        _die_by_sigterm()


def _die_by_sigterm() -> None:
    """Restore the default action and deliver SIGTERM to ourselves: we end now."""
    _setsignal(_SIGTERM, _SIG_DFL)
    signal.raise_signal(_SIGTERM)


def hold() -> bool:
    """Install the handler for one more held instance, if it may be.

    Returns:
        Whether this call counts as a hold (pair it with :func:`let_go`):
        false off the main thread, where handlers cannot be installed.
    """
    global _holds, _late  # noqa: PLW0603  (process-wide, guarded by _mutex)
    if not _interrupts.in_main_thread():
        return False
    with _mutex:
        _late = ""  # held again: a SIGTERM still waiting is an ordinary one
        if _holds == 0 and _getsignal(_SIGTERM) == _SIG_DFL:
            _setsignal(_SIGTERM, _exit_on_sigterm)
        _holds += 1
    return True


def let_go() -> None:
    """Undo one :func:`hold`; the last one restores the default if ours is in place.

    Only the main thread may change handlers; released from another thread,
    ours stays, and the next SIGTERM restores the default itself. A SIGTERM
    held off during this release keeps ours in place until it is delivered.
    """
    global _holds, _terminating, _late  # noqa: PLW0603
    with _mutex:
        _holds -= 1
        if (
            _holds == 0
            and _getsignal(_SIGTERM) is _exit_on_sigterm
            and _interrupts.in_main_thread()
        ):
            if not _interrupts.pending(_SIGTERM):
                _setsignal(_SIGTERM, _SIG_DFL)  # runs pending handlers first:
            if _interrupts.pending(_SIGTERM):  # one may have come just now
                _setsignal(_SIGTERM, _exit_on_sigterm)
                _late = "ignore" if _terminating else "exit"
            _terminating = False  # if the program caught the SystemExit, it goes on


def _other_threads_keep_us_alive() -> bool:
    """Whether a thread other than this one would keep the interpreter running."""
    me = threading.current_thread()
    return any(
        t is not me and not t.daemon and t.is_alive() for t in threading.enumerate()
    )


def _reset_in_child() -> None:
    """After fork: the child holds nothing, so it gets the default back."""
    global _holds, _mutex, _terminating, _late  # noqa: PLW0603
    _mutex = threading.Lock()
    _holds = 0
    _terminating = False
    _late = ""
    if _getsignal(_SIGTERM) is _exit_on_sigterm:
        _setsignal(_SIGTERM, _SIG_DFL)


_platform.at_fork(after_in_child=_reset_in_child)
