"""``SingleInstance``: hold a name for as long as a program (or a block) runs."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from . import _registry
from ._errors import AlreadyRunningError
from ._identity import current_identity
from ._introspect import Inspection, detached_holder, inspect
from ._lockfile import OpenLock, lock_path, try_lock_file
from ._names import derive_name, validate_name
from ._paths import resolve_directory
from ._record import remove_record, write_record

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["ConflictPolicy", "SingleInstance"]

ConflictPolicy = Literal["raise", "exit"]
_POLICIES: tuple[str, ...] = get_args(ConflictPolicy)
#: A holder that lets go between our failed lock and our look at it gets
#: another try, a few times, instead of a confusing "held by nobody".
_RACE_RETRIES = 3


@dataclass(frozen=True)
class _Held:
    """What an instance holds: the lock, where, and which process took it."""

    lock: OpenLock
    directory: Path
    owner_pid: int


class SingleInstance:
    r"""Hold an instance name: at most one process per name runs the guarded code.

    The name is held by an OS file lock on ``<name>.lock`` in the lock
    directory, released by the OS the moment the process dies however it
    dies; ``<name>.pid`` records who holds it (pid, start time, command,
    user, host), for messages and introspection.

    Args:
        name: A short identifier (no ``/``, ``\\``, NUL or control
            characters, not ``.`` or ``..``, at most 128 characters).
            ``None`` derives it from the running program's script or module.
        on_conflict: What to do when another live process holds the name:
            ``"raise"`` raises :class:`AlreadyRunningError`; ``"exit"``
            prints one line naming the holder to stderr and raises
            ``SystemExit(exit_code)``.
        directory: The lock directory. ``None`` uses the private per-user
            one (``$SINGLETON_PROC_DIR``, else ``~/.cache/singleton_proc``);
            give a shared one (sticky if others can write to it, such as
            ``/run/lock``) for one instance per machine across users.
        exit_code: The exit status for ``on_conflict="exit"``.

    Raises:
        ValueError: an invalid name or ``on_conflict`` value.

    Example:
        >>> from singleton_proc import SingleInstance
        >>> with SingleInstance("feishu"):  # doctest: +SKIP
        ...     main()
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        on_conflict: ConflictPolicy = "raise",
        directory: str | os.PathLike[str] | None = None,
        exit_code: int = 1,
    ) -> None:
        """Validate the options; nothing is locked until entered or acquired."""
        self.name = derive_name() if name is None else validate_name(name)
        if on_conflict not in _POLICIES:
            allowed = ", ".join(repr(policy) for policy in _POLICIES)
            raise ValueError(
                f"on_conflict must be one of {allowed}, not {on_conflict!r}"
            )
        if type(exit_code) is not int:
            raise TypeError(f"exit_code must be an int, not {type(exit_code).__name__}")
        self.on_conflict: ConflictPolicy = on_conflict
        self.exit_code = exit_code
        self._directory = directory
        self._mutex = threading.Lock()
        self._held: _Held | None = None

    def __repr__(self) -> str:
        """Show the name, the policy and whether this object holds it."""
        return (
            f"SingleInstance({self.name!r}, on_conflict={self.on_conflict!r}, "
            f"held={self.held})"
        )

    @property
    def held(self) -> bool:
        """Whether this object holds its name in this process."""
        held = self._held
        return held is not None and held.owner_pid == os.getpid()

    def acquire(self) -> Self:
        """Take the name, or apply ``on_conflict`` when another process has it.

        Returns:
            This object, held.

        Raises:
            RuntimeError: this object already holds its name.
            AlreadyRunningError: another process holds it (``"raise"``).
            SystemExit: another process holds it (``"exit"``).
            InsecureLockPathError: the directory or a file in it is unsafe.
        """
        with self._mutex:
            if self.held:
                raise RuntimeError(
                    f"{self!r} is already held; release() it before acquiring again"
                )
            directory = resolve_directory(self._directory)
            lock = self._lock_or_conflict(directory)
            try:
                detached = detached_holder(directory, self.name)
                if detached is not None:
                    raise self._conflict(  # noqa: TRY301  (released below)
                        Inspection(
                            held=True, holder=detached, lock_pids=None, detached=True
                        )
                    )
                write_record(directory, current_identity().holder(self.name))
            except BaseException:
                lock.release()
                raise
            self._held = _Held(lock, directory, os.getpid())
            _registry.add(lock.key, self)
        return self

    def release(self) -> None:
        """Let go of the name; a no-op when this object does not hold it.

        The record is removed while the lock is still held, and only by the
        process that acquired it: a forked child releases nothing.
        """
        with self._mutex:
            held, self._held = self._held, None
            if held is None:
                return
            if held.owner_pid != os.getpid():
                held.lock.abandon()
                return
            _registry.discard(held.lock.key)
            try:
                remove_record(held.directory, self.name)
            finally:
                held.lock.release()

    def abandon(self) -> None:
        """In a forked child: forget the inherited lock without releasing it."""
        self._mutex = threading.Lock()
        held, self._held = self._held, None
        if held is not None:
            held.lock.abandon()

    def __enter__(self) -> Self:
        """Acquire, as :meth:`acquire`."""
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release, as :meth:`release`."""
        self.release()

    def _lock_or_conflict(self, directory: Path) -> OpenLock:
        """Lock the name's file, or apply the conflict policy (which raises)."""
        path = lock_path(directory, self.name)
        for _ in range(_RACE_RETRIES):
            lock = try_lock_file(path)
            if lock is not None:
                return lock
            found = inspect(directory, self.name)
            if found.held:
                break
        raise self._conflict(found)

    def _conflict(self, found: Inspection) -> BaseException:
        """What ``on_conflict`` raises, naming the holder ("exit" prints first)."""
        who = _describe(found)
        if self.on_conflict == "exit":
            print(  # noqa: T201  (the documented behaviour of "exit")
                f"singleton_proc: {self.name!r} is already running ({who}); exiting",
                file=sys.stderr,
                flush=True,
            )
            return SystemExit(self.exit_code)
        return AlreadyRunningError(
            f"{self.name!r} is already running ({who}); stop that process first, "
            'or pass on_conflict="exit" to leave quietly',
            holder=found.holder,
        )


def _describe(found: Inspection) -> str:
    """Name the holder for a message: who it is, or why that is unknown."""
    if found.holder is None:
        return f"holder unknown: {found.reason or 'it let go a moment ago'}"
    if found.detached:
        return (
            f"{found.holder}; its lock file was deleted or replaced while it ran, "
            "so keep the lock directory away from tmp cleaners"
        )
    if found.holder.pid == os.getpid():
        return f"held by this very process, {found.holder}"
    return str(found.holder)
