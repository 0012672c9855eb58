"""The ``<name>.lock`` file and the OS lock on it.

The lock is a ``flock``-style lock (per open file, not per process: a
second open of the same file in the same process conflicts, and closing an
unrelated descriptor of the file releases nothing). The file is never
deleted: unlink-after-unlock is the classic race that lets two processes
hold "the" lock on two different inodes.

Every descriptor of a lock file is known from the moment it is opened, so a
child made by ``os.fork()`` closes all of them (without unlocking) before
any of its own code runs: the child never keeps the parent's lock alive.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from singleton_proc._base import platform as _platform
from singleton_proc._base import procfs
from singleton_proc._errors import SingletonProcError

from .directory import FILE_MODE, open_no_follow, symlink_refused

if TYPE_CHECKING:
    from .directory import NameFiles

__all__ = ["LOCK_SUFFIX", "LockState", "OpenLock", "lock_state", "try_lock_file"]

LOCK_SUFFIX = ".lock"
#: A file replaced between open and lock this many times in a row means
#: something is fighting us; give up rather than spin.
_MAX_ATTEMPTS = 100


class OpenLock:
    """An open descriptor of a lock file, usually holding the OS lock.

    Attributes:
        fd: The raw descriptor (close-on-exec).
        key: ``(st_dev, st_ino)`` of the open file.
    """

    __slots__ = ("fd", "key")

    def __init__(self, fd: int, key: tuple[int, int]) -> None:
        """Wrap ``fd``; the caller has registered it (see :func:`_open`)."""
        self.fd = fd
        self.key = key

    def release(self) -> None:
        """Unlock and close: the lock is free for others at once."""
        with _open_mutex:
            _open_locks.discard(self)
            try:
                _platform.unlock(self.fd)
            finally:
                os.close(self.fd)

    def abandon(self) -> None:
        """Close without unlocking (a forked child's inherited copy).

        The lock belongs to the open file description shared with the
        parent; closing the child's descriptor leaves the parent's lock in
        place and lets it end when the parent ends. A no-op once the fork
        hook has closed it already.
        """
        with _open_mutex:
            if self in _open_locks:
                _open_locks.discard(self)
                os.close(self.fd)


_open_mutex = threading.Lock()
_open_locks: set[OpenLock] = set()


def _close_all_in_child() -> None:
    """After fork, in the child: close every inherited lock descriptor."""
    global _open_mutex  # noqa: PLW0603  (a lock copied mid-use by fork is unusable)
    _open_mutex = threading.Lock()
    for lock in _open_locks:
        os.close(lock.fd)
    _open_locks.clear()


def _before_fork() -> None:
    """Hold the mutex across ``fork()``: no descriptor is half registered."""
    _open_mutex.acquire()


def _after_fork_in_parent() -> None:
    """Let go of the mutex taken by :func:`_before_fork`."""
    _open_mutex.release()


_platform.at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_close_all_in_child,
)


def try_lock_file(path: str) -> OpenLock | None:
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
        lock = _open(path)
        try:
            locked = _platform.try_lock(lock.fd)
            now = _key_of(path) if locked else None
        except BaseException:
            lock.abandon()
            raise
        if not locked:
            lock.abandon()
            return None
        if now == lock.key:
            return lock
        lock.release()  # replaced or removed under us: try the new file
    raise SingletonProcError(
        f"{path} was replaced {_MAX_ATTEMPTS} times while we locked it; "
        "something is deleting or renaming lock files in that directory"
    )


def _key_of(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path`` itself (not followed), or ``None``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _open(path: str) -> OpenLock:
    """Open ``path`` read-only, creating it ``0644`` when missing.

    An existing file is opened without ``O_CREAT``: with
    ``fs.protected_regular``, Linux refuses ``O_CREAT`` on another user's
    file in a sticky directory even when it exists. A read-only descriptor
    is all ``flock`` needs. The descriptor is registered for the fork hook
    under the same mutex the hook's parent side cannot interleave with.
    """
    while True:
        with _open_mutex:
            try:
                fd, st = open_no_follow(path, os.O_RDONLY)
            except FileNotFoundError:
                try:
                    fd, st = open_no_follow(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL)
                except FileExistsError:  # created by someone else just now
                    continue
                _platform.set_mode(fd, FILE_MODE)
            lock = OpenLock(fd, (st.st_dev, st.st_ino))
            _open_locks.add(lock)
            return lock


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


def lock_state(files: NameFiles) -> LockState:
    """Look at a name's lock without disturbing a concurrent start.

    On Linux ``/proc/locks`` answers. Elsewhere the only way to know is to
    try the lock and let go at once, which a concurrent start may see as a
    conflict for that instant.

    Raises:
        InsecureLockPathError: the path is a symlink.
    """
    try:
        st = os.lstat(files.lock)
    except FileNotFoundError:
        return LockState(held=False, pids=frozenset())
    if _platform.is_link(st):
        raise symlink_refused(files.lock)
    pids = procfs.flock_holders(files.directory, st)
    if pids is not None:
        return LockState(held=bool(pids), pids=pids)
    probe = try_lock_file(files.lock)
    if probe is None:
        return LockState(held=True, pids=None)
    probe.release()
    return LockState(held=False, pids=None)
