"""The ``<name>.lock`` file and the OS lock on it.

The lock is a ``flock``-style lock (per open file, not per process: a
second open of the same file in the same process conflicts, and closing an
unrelated descriptor of the file releases nothing). The file is never
deleted: unlink-after-unlock is the classic race that lets two processes
hold "the" lock on two different inodes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _platform
from ._errors import SingletonProcError
from ._paths import FILE_MODE, open_no_follow, symlink_refused

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "LOCK_SUFFIX",
    "LockState",
    "OpenLock",
    "file_key",
    "lock_path",
    "lock_state",
    "try_lock_file",
]

LOCK_SUFFIX = ".lock"

#: A file replaced between open and lock this many times in a row means
#: something is fighting us; give up rather than spin.
_MAX_ATTEMPTS = 100


def lock_path(directory: Path, name: str) -> Path:
    """Where the lock file of ``name`` lives."""
    return directory / f"{name}{LOCK_SUFFIX}"


def file_key(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path`` itself (not followed), or ``None``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


@dataclass(frozen=True)
class OpenLock:
    """An open file description that holds the OS lock.

    Attributes:
        fd: The raw descriptor (close-on-exec).
        key: ``(st_dev, st_ino)`` of the locked file: its identity, whatever
            the spelling of the path.
    """

    fd: int
    key: tuple[int, int]

    def release(self) -> None:
        """Unlock and close: the lock is free for others at once."""
        try:
            _platform.unlock(self.fd)
        finally:
            os.close(self.fd)

    def abandon(self) -> None:
        """Close without unlocking, for a forked child's inherited copy.

        The lock belongs to the open file description shared with the
        parent; closing the child's descriptor leaves the parent's lock in
        place and lets it end when the parent ends.
        """
        os.close(self.fd)


def try_lock_file(path: Path) -> OpenLock | None:
    """Open (creating if needed) and lock ``path`` without waiting.

    After locking, the path must still name the locked inode: a file
    replaced or removed between our open and our lock does not count, and
    we start over on the new file.

    Returns:
        The held lock, or ``None`` when another open file holds it.

    Raises:
        InsecureLockPathError: the path is a symlink or not a regular file.
        SingletonProcError: the file kept being replaced under us.
        OSError: the file could not be opened or locked.
    """
    for _ in range(_MAX_ATTEMPTS):
        fd = _open_lock_file(path)
        try:
            if not _platform.try_lock(fd):
                os.close(fd)
                return None
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == key:
                return OpenLock(fd, key)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced under us: closing also drops the stale lock
    raise SingletonProcError(
        f"{path} was replaced {_MAX_ATTEMPTS} times while we locked it; "
        "something is deleting or renaming lock files in that directory"
    )


def _open_lock_file(path: Path) -> int:
    """Open ``path`` read-only, creating it ``0644`` when missing.

    An existing file is opened without ``O_CREAT``: with
    ``fs.protected_regular``, Linux refuses ``O_CREAT`` on another user's
    file in a sticky directory even when it exists. A read-only descriptor
    is all ``flock`` needs.
    """
    while True:
        try:
            return open_no_follow(path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        try:
            fd = open_no_follow(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:  # created by someone else just now
            continue
        _platform.set_mode(fd, FILE_MODE)
        return fd


@dataclass(frozen=True)
class LockState:
    """Whether a lock file is locked, learned without taking the lock if possible.

    Attributes:
        held: Some open file holds the lock.
        pids: The processes holding it, or ``None`` when the platform cannot
            tell (everywhere but Linux).
    """

    held: bool
    pids: frozenset[int] | None


def lock_state(path: Path) -> LockState:
    """Look at the lock on ``path`` without disturbing a concurrent start.

    On Linux ``/proc/locks`` answers. Elsewhere the only way to know is to
    try the lock and let go at once, which a concurrent start may see as a
    conflict for that instant.

    Raises:
        InsecureLockPathError: the path is a symlink.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return LockState(held=False, pids=frozenset())
    if stat.S_ISLNK(st.st_mode):
        raise symlink_refused(path)
    pids = _platform.flock_holders(st)
    if pids is not None:
        return LockState(held=bool(pids), pids=pids)
    probe = try_lock_file(path)  # pragma: no cover - platforms without /proc/locks
    if probe is None:  # pragma: no cover
        return LockState(held=True, pids=None)
    probe.release()  # pragma: no cover
    return LockState(held=False, pids=None)  # pragma: no cover
