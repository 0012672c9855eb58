"""The instances this process holds, and what happens to them at exit and fork.

At interpreter exit every instance still held is released, so its record
does not outlive it. In a child made by ``os.fork()`` (or multiprocessing's
fork start method) every inherited instance is abandoned (its descriptor
is closed, without unlocking, by ``lockfile``'s own fork hook), so the
child neither keeps the lock alive after the parent exits nor releases or
deletes anything of the parent's.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING, Protocol

from singleton_proc._base import platform as _platform

if TYPE_CHECKING:
    import os

__all__ = [
    "FileKey",
    "Holding",
    "NameKey",
    "add",
    "discard",
    "holding",
    "holds_any",
    "name_key",
    "release_all",
]


class Holding(Protocol):
    """What the registry needs of a held instance."""

    def release(self) -> None:
        """Release the instance (at interpreter exit)."""

    def _abandon(self) -> None:
        """Forget the instance in a forked child without touching the lock."""


#: A name's identity in this process: the lock directory's ``(st_dev,
#: st_ino)`` and the name. Two spellings of one directory are one key, and
#: deleting the lock file does not change it.
NameKey = tuple[int, int, str]

#: A lock file's identity, ``(st_dev, st_ino)``: one file under two names
#: (a case-insensitive filesystem, a hard link) is one lock.
FileKey = tuple[int, int]

_mutex = threading.Lock()
_held: dict[NameKey, Holding] = {}
_held_files: dict[FileKey, Holding] = {}
_log = logging.getLogger("singleton_proc")


def name_key(directory: os.stat_result, name: str) -> NameKey:
    """The key of ``name`` in the directory that ``directory`` describes."""
    return (directory.st_dev, directory.st_ino, name)


def add(key: NameKey, file_key: FileKey, instance: Holding) -> None:
    """Record that ``instance`` holds ``key`` through the lock file ``file_key``."""
    with _mutex:
        _held[key] = instance
        _held_files[file_key] = instance


def discard(key: NameKey, file_key: FileKey) -> None:
    """Forget the name ``key`` and its lock file (released)."""
    with _mutex:
        _held.pop(key, None)
        _held_files.pop(file_key, None)


def holds_any() -> bool:
    """Whether this process holds any name: when not, there is nothing to look up."""
    return bool(_held)


def holding(key: NameKey, file_key: FileKey | None) -> Holding | None:
    """The instance of this process holding ``key``, or lock file ``file_key``."""
    with _mutex:
        return _held.get(key) or (_held_files.get(file_key) if file_key else None)


def release_all() -> None:
    """Release what is still held when the interpreter exits."""
    with _mutex:
        instances = list(_held.values())
    for instance in instances:
        try:
            instance.release()
        except Exception:  # noqa: BLE001  (one failure must not keep the others held)
            _log.exception("could not release %r at exit", instance)


def _abandon_all_in_child() -> None:
    """After fork, in the child: drop every inherited instance."""
    global _mutex  # noqa: PLW0603  (a lock copied mid-use by fork is unusable)
    _mutex = threading.Lock()
    instances = list(_held.values())
    _held.clear()
    _held_files.clear()
    for instance in instances:
        instance._abandon()  # noqa: SLF001  (the fork hook is the caller it is for)


atexit.register(release_all)
_platform.at_fork(after_in_child=_abandon_all_in_child)
