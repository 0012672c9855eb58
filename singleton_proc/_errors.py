"""Every exception we raise, all from one base class.

The whole tree (the last two live in ``_workers.errors`` and load lazily,
because their base class comes from ``concurrent.futures``)::

    SingletonProcError(Exception)              anything raised by us
    ├── AlreadyRunningError                    .holder: Holder | None, .reason
    │   ├── LockTimeoutError (also TimeoutError)   "wait" ran out of time
    │   └── ReplaceRefusedError                "replace" could not prove identity
    ├── InsecureLockPathError (also PermissionError)
    ├── LeaseLostError                         a cluster lease was lost while held
    ├── BackendUnavailableError (also ConnectionError)   the backend did not answer
    ├── UnpicklableError (also pickle.PicklingError)     names what would not pickle
    ├── WorkerDiedError (also concurrent.futures.process.BrokenProcessPool)
    └── TaskTimeoutError (also TimeoutError)

Every class takes its message as the only positional argument and keeps its
data in keyword-only attributes, so the default ``BaseException`` pickling
(``cls(*args)`` then the instance ``__dict__``) round-trips them across
process boundaries.
"""

from __future__ import annotations

import pickle

from ._base.holder import Holder  # noqa: TC001  (at run time: get_type_hints() needs it)

__all__ = [
    "AlreadyRunningError",
    "BackendUnavailableError",
    "InsecureLockPathError",
    "LeaseLostError",
    "LockTimeoutError",
    "ReplaceRefusedError",
    "SingletonProcError",
    "UnpicklableError",
]


class SingletonProcError(Exception):
    """Base class of every exception raised by singleton_proc.

    Example:
        >>> try:
        ...     raise AlreadyRunningError("demo is already running")
        ... except SingletonProcError as exc:
        ...     print(type(exc).__name__)
        AlreadyRunningError
    """

    def __init__(self, message: str) -> None:
        """``message``: what went wrong, in one line that names it."""
        super().__init__(message)


class AlreadyRunningError(SingletonProcError):
    """Another live process holds the name.

    Attributes:
        holder: The process holding the name, or ``None`` when it cannot be
            known (its record is missing or unreadable, or the lock was
            taken by another tool such as ``flock(1)``).
        reason: When ``holder`` is ``None``, why it cannot be known (for
            example "its record is missing or unreadable; ..."), else
            ``None``.

    Example:
        >>> import subprocess, sys
        >>> from singleton_proc import SingleInstance
        >>> other = [sys.executable, "-m", "singleton_proc", "run", "feishu",
        ...          "--", sys.executable, "-c", "import sys; sys.stdin.read()"]
        >>> with SingleInstance("feishu"):  # another copy starts meanwhile
        ...     subprocess.run(other, input=b"", capture_output=True).returncode
        1
        >>> try:  # and here, the other way round
        ...     with SingleInstance("feishu"):
        ...         print("got it")  # no other copy runs now
        ... except AlreadyRunningError as exc:
        ...     print("busy:", exc.holder)
        got it
    """

    def __init__(
        self, message: str, *, holder: Holder | None = None, reason: str | None = None
    ) -> None:
        """Store the message, the holder it names, or why that is unknown."""
        super().__init__(message)
        self.holder = holder
        self.reason = reason


class LockTimeoutError(AlreadyRunningError, TimeoutError):
    """``on_conflict="wait"`` ran out of time before the holder let go.

    Example:
        >>> from singleton_proc import SingleInstance
        >>> try:
        ...     with SingleInstance("backup", on_conflict="wait", timeout=60):
        ...         print("backing up")  # once any other copy has let go
        ... except LockTimeoutError as exc:
        ...     print("still held by", exc.holder)
        backing up
    """


class ReplaceRefusedError(AlreadyRunningError):
    """``on_conflict="replace"`` could not prove who holds the name.

    Nothing was signalled. The message says which check failed (PID reused,
    another user or host, the caller's own ancestor, a record that does not
    name the process holding the lock).

    Example:
        >>> from singleton_proc import SingleInstance
        >>> try:
        ...     with SingleInstance("bot", on_conflict="replace"):
        ...         print("serving")  # any proven old copy was stopped first
        ... except ReplaceRefusedError as exc:
        ...     print(exc)  # says which check failed
        serving
    """


class InsecureLockPathError(SingletonProcError, PermissionError):
    """A lock directory or file could be tampered with by someone else.

    Raised for a symlink where a directory or file is expected, a private
    directory that others can write to or that another user owns, and a
    shared directory that is writable by others but not sticky. The symlink's
    target is never touched.

    Example:
        >>> import os, tempfile
        >>> from singleton_proc import SingleInstance
        >>> shared = tempfile.mkdtemp()
        >>> os.chmod(shared, 0o777)  # anyone may write, but not sticky
        >>> try:
        ...     SingleInstance("bot", directory=shared).acquire()
        ... except InsecureLockPathError:
        ...     print("refused")
        refused
        >>> os.rmdir(shared)
    """


class LeaseLostError(SingletonProcError):
    """A name held across hosts (``backend=``) was lost while held.

    The lease was not renewed in time (a partition, a paused process) and
    another process may hold the name now: stop writing what the name
    guards. Raised by ``check()`` and when the block exits, with
    ``on_lost="raise"``.

    Example:
        >>> try:
        ...     raise LeaseLostError("the lease on 'sync' was lost 0.4 s ago")
        ... except SingletonProcError as exc:
        ...     print(type(exc).__name__)
        LeaseLostError
    """


class BackendUnavailableError(SingletonProcError, ConnectionError):
    """The backend of a name held across hosts could not be reached in time.

    Nothing is held: the local lock taken meanwhile was let go.

    Example:
        >>> try:
        ...     raise BackendUnavailableError("redis://127.0.0.1:1 refused")
        ... except ConnectionError as exc:
        ...     print(type(exc).__name__)
        BackendUnavailableError
    """


class UnpicklableError(SingletonProcError, pickle.PicklingError):
    """Something that must cross the process boundary cannot be (un)pickled.

    Raised instead of a hang or a cryptic error for the function, an
    argument, the result or the exception of a call run in a worker.

    Attributes:
        what: Which thing it was (``"the function"``, ``"argument 2"``,
            ``"keyword argument 'size'"``, ``"the result"``,
            ``"the exception"``).

    Example:
        >>> import threading
        >>> from singleton_proc import run_process
        >>> try:
        ...     run_process(print, threading.Lock())
        ... except UnpicklableError as exc:
        ...     print(exc.what)
        argument 1
    """

    def __init__(self, message: str, *, what: str = "") -> None:
        """Store the message and which thing could not be pickled."""
        super().__init__(message)
        self.what = what
