"""The instances this process holds, and what happens to them at exit and fork.

At interpreter exit every instance still held is released, so its record
does not outlive it. In a child made by ``os.fork()`` (or multiprocessing's
fork start method) every inherited instance is abandoned: its descriptor is
closed without unlocking, so the child neither keeps the lock alive after
the parent exits nor releases or deletes anything of the parent's.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Protocol

__all__ = ["Holding", "add", "discard", "holding"]


class Holding(Protocol):
    """What the registry needs of a held instance."""

    def release(self) -> None:
        """Release the instance (at interpreter exit)."""

    def abandon(self) -> None:
        """Forget the instance in a forked child without touching the lock."""


_mutex = threading.Lock()
_held: dict[tuple[int, int], Holding] = {}


def add(key: tuple[int, int], instance: Holding) -> None:
    """Record that ``instance`` holds the lock file identified by ``key``."""
    with _mutex:
        _held[key] = instance


def discard(key: tuple[int, int]) -> None:
    """Forget the lock file ``key`` (released)."""
    with _mutex:
        _held.pop(key, None)


def holding(key: tuple[int, int]) -> Holding | None:
    """The instance of this process holding lock file ``key``, if any."""
    with _mutex:
        return _held.get(key)


def _release_all() -> None:
    """Release what is still held when the interpreter exits."""
    with _mutex:
        instances = list(_held.values())
    for instance in instances:
        instance.release()


def _abandon_all_in_child() -> None:
    """After fork, in the child: drop every inherited instance."""
    global _mutex  # noqa: PLW0603  (a lock copied mid-use by fork is unusable)
    _mutex = threading.Lock()
    instances = list(_held.values())
    _held.clear()
    for instance in instances:
        instance.abandon()


atexit.register(_release_all)
if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_abandon_all_in_child)
