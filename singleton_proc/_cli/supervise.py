"""Running CMD as a child while a name is held: ``singleton-proc run``'s engine.

Signals the wrapper receives (SIGINT, SIGTERM, SIGHUP) are passed on to CMD,
CMD's exit status becomes the wrapper's (128 + N for a death by signal N),
and on Linux CMD dies with a SIGKILLed wrapper (``PR_SET_PDEATHSIG``) and
the daemons CMD forks off are re-parented to the wrapper, not to init
(``PR_SET_CHILD_SUBREAPER``), so that a stop of the wrapper's tree finds
them even if they dropped the mark in their environment; the wrapper reaps
them by pid when they exit. Its errors are classes of their own; ``main``
turns them into exit statuses.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from typing import TYPE_CHECKING

import psutil

from singleton_proc._base import platform as _platform
from singleton_proc._base.tree import TreeRoot, stopping_trees
from singleton_proc._base.waits import STOP_GRACE, run_blocking
from singleton_proc._errors import LeaseLostError, SingletonProcError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

__all__ = [
    "EXIT_SIGNAL_BASE",
    "CannotExecuteError",
    "CommandNotFoundError",
    "Interrupted",
    "Wrapper",
]

EXIT_SIGNAL_BASE = 128  # + N: died by signal N, as a shell reports it
#: The signals ``run`` passes on to CMD (Windows has no SIGHUP).
_FORWARDED = [
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP")
    if hasattr(signal, name)
]


class CommandNotFoundError(SingletonProcError):
    """CMD does not exist."""


class CannotExecuteError(SingletonProcError):
    """CMD exists but cannot be executed."""


class Interrupted(BaseException):
    """A forwarded signal (``args[0]``) came before CMD started: exit 128 + N."""


class Wrapper:
    """CMD as a child of this process, with signals forwarded to it.

    Until CMD starts, a forwarded signal stops us (exit 128 + N, the name
    released); while it starts, signals are kept and passed on once it runs;
    then each goes to CMD, whose exit ends the wrapper.

    A lease lost meanwhile (``backend=``, see :meth:`lose`) ends the wait:
    CMD's whole tree is stopped, escaped descendants included, and the
    :class:`LeaseLostError` rises.
    """

    def __init__(self, command: list[str], grace: float = STOP_GRACE) -> None:
        """Prepare to run ``command``; nothing starts yet.

        ``grace``: SIGTERM to SIGKILL when a lost lease stops CMD's tree.
        """
        self.command = command
        self.grace = grace
        self.pid = os.getpid()
        self.child: subprocess.Popen[bytes] | None = None
        self.starting = False
        self.pending: list[int] = []
        self.lost: LeaseLostError | None = None
        self._stopping = threading.Lock()  # lose() and run() may both stop
        self._reaping = False  # in _reap_adopted
        self._look_again = False  # a SIGCHLD came while it ran

    @contextlib.contextmanager
    def forwarding(self) -> Iterator[None]:
        """Install the forwarding handlers; restore the previous ones after.

        A signal ignored when we started (``nohup``, a background job of a
        non-interactive shell) stays ignored, and CMD inherits that.
        """
        previous = {}
        for signum in _FORWARDED:
            old = signal.getsignal(signum)
            if old is not None and old != signal.SIG_IGN:
                previous[signum] = old
                signal.signal(signum, self._on_signal)
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        """Pass the signal on to CMD, keep it for CMD, or stop waiting."""
        if os.getpid() != self.pid:
            return  # in CMD between fork and exec: the wrapper forwards it
        if self.child is not None:
            _forward(self.child, signum)
        elif self.starting:
            self.pending.append(signum)
        else:
            raise Interrupted(signum)

    def run(self) -> int:
        """Start CMD, pass on what arrived meanwhile, wait; return its status."""
        with self._adopting():
            status = self._run()
            if self.lost is not None:
                self._stop_everything()  # what started after lose() looked
                raise self.lost
            return status

    def lose(self, error: LeaseLostError) -> None:
        """``on_lost``, in a thread of the lease's: stop CMD's tree; ``run`` raises.

        No signal is needed (SIGTERM may be ignored, under ``nohup``): CMD's
        end ends the main thread's wait.
        """
        self.lost = error
        self._stop_everything()

    def _stop_everything(self) -> None:
        """Stop the tree of each of our children: CMD and the daemons we adopted."""
        with self._stopping:
            roots = [
                TreeRoot(child, f"the command {self.command[0]!r}")
                for child in psutil.Process().children()
            ]
            run_blocking(stopping_trees(roots, self.grace))

    @contextlib.contextmanager
    def _adopting(self) -> Iterator[None]:
        """Adopt CMD's orphaned descendants (Linux), reaping each when it exits.

        The wrapper stays the subreaper when it is done: by then it exits.
        """
        if not hasattr(signal, "SIGCHLD") or not _platform.adopt_orphans():
            yield  # pragma: no cover - not Linux
            return
        previous = signal.signal(signal.SIGCHLD, self._reap_adopted)
        try:
            yield
        finally:
            signal.signal(signal.SIGCHLD, previous)
            self._reap_adopted(signal.SIGCHLD, None)

    def _reap_adopted(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002
        """Reap the adopted processes that have exited, one by pid, never CMD.

        ``waitid(WNOWAIT)`` names an exited child without reaping it; CMD is
        left to ``Popen.wait`` (its status is the wrapper's), so the look
        stops there, and a last look after CMD finds the rest. Never
        ``waitpid(-1)``. Until CMD's pid is known nothing is reaped (a
        zombie then could be CMD). Not re-entered: a SIGCHLD that comes
        while it runs makes it look once more instead.
        """
        if self.child is None or os.getpid() != self.pid:
            return
        if self._reaping:
            self._look_again = True
            return
        self._reaping = True
        try:
            self._look_again = True
            while self._look_again:
                self._look_again = False
                self._reap_exited(self.child.pid)
        finally:
            self._reaping = False

    @staticmethod
    def _reap_exited(cmd: int) -> None:
        """Reap every exited child but ``cmd``, until none or ``cmd`` is next."""
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while True:
            try:
                exited = os.waitid(os.P_ALL, 0, flags)
            except ChildProcessError:  # no child at all
                return
            if exited is None or exited.si_pid == cmd:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(exited.si_pid, 0)  # exited already: returns at once

    def _run(self) -> int:
        """Start CMD, pass on what arrived meanwhile, wait; return its status."""
        self.starting = True
        try:
            child = subprocess.Popen(
                self.command,
                close_fds=False,  # pass inherited descriptors on, as flock(1) does
                preexec_fn=self._guard if _platform.HAS_FORK else None,  # noqa: PLW1509  (no threads here)
            )
        except FileNotFoundError as exc:
            message = f"{self.command[0]}: command not found"
            raise CommandNotFoundError(message) from exc
        except (OSError, subprocess.SubprocessError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            message = f"{self.command[0]}: cannot execute: {why}"
            raise CannotExecuteError(message) from exc
        self.child = child
        for signum in self.pending:
            _forward(child, signum)
        if self.lost is not None:  # lost as CMD started: run() stops it
            return 0
        status = child.wait()
        return status if status >= 0 else EXIT_SIGNAL_BASE - status

    def _guard(self) -> None:
        """In CMD before exec: die with the wrapper, even one gone already.

        A wrapper SIGKILLed before the death signal was set cannot fire it,
        hence the look at the parent after setting it.
        """
        _platform.set_parent_death_signal()
        if os.getppid() != self.pid:
            os._exit(EXIT_SIGNAL_BASE + 9)  # as if that SIGKILL had reached us


def _forward(child: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to CMD: a no-op once it is reaped, or if it cannot be.

    (Windows can only terminate; Ctrl-C reaches CMD through the console.)
    """
    with contextlib.suppress(OSError, ValueError):
        child.send_signal(signum)
