"""The exceptions of the lock side, all from one base class.

The whole tree (the last two live in ``_worker_errors`` and load lazily,
because their base class comes from ``concurrent.futures``)::

    SingletonProcError(Exception)              anything raised by us
    ├── AlreadyRunningError                    .holder: Holder | None
    │   ├── LockTimeoutError (also TimeoutError)   "wait" ran out of time
    │   └── ReplaceRefusedError                "replace" could not prove identity
    ├── InsecureLockPathError (also PermissionError)
    ├── WorkerDiedError (also concurrent.futures.process.BrokenProcessPool)
    └── TaskTimeoutError (also TimeoutError)

Every class takes its message as the only positional argument and keeps its
data in keyword-only attributes, so the default ``BaseException`` pickling
(``cls(*args)`` then the instance ``__dict__``) round-trips them across
process boundaries.
"""

from __future__ import annotations

from ._holder import Holder  # noqa: TC001  (at run time: get_type_hints() needs it)

__all__ = [
    "AlreadyRunningError",
    "InsecureLockPathError",
    "LockTimeoutError",
    "ReplaceRefusedError",
    "SingletonProcError",
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


class AlreadyRunningError(SingletonProcError):
    """Another live process holds the name.

    Attributes:
        holder: The process holding the name, or ``None`` when it cannot be
            known (its record is missing or unreadable, or the lock was
            taken by another tool such as ``flock(1)``).

    Example:
        >>> from singleton_proc import SingleInstance
        >>> try:  # doctest: +SKIP
        ...     with SingleInstance("feishu"):
        ...         ...
        ... except AlreadyRunningError as exc:
        ...     print("busy:", exc.holder)
    """

    def __init__(self, message: str, *, holder: Holder | None = None) -> None:
        """Store the message and the holder it names."""
        super().__init__(message)
        self.holder = holder


class LockTimeoutError(AlreadyRunningError, TimeoutError):
    """``on_conflict="wait"`` ran out of time before the holder let go."""


class ReplaceRefusedError(AlreadyRunningError):
    """``on_conflict="replace"`` could not prove who holds the name.

    Nothing was signalled. The message says which check failed (PID reused,
    another user or host, the caller's own ancestor, a record that does not
    name the process holding the lock).
    """


class InsecureLockPathError(SingletonProcError, PermissionError):
    """A lock directory or file could be tampered with by someone else.

    Raised for a symlink where a directory or file is expected, a private
    directory that others can write to or that another user owns, and a
    shared directory that is writable by others but not sticky. The symlink's
    target is never touched.
    """
