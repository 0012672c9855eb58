"""The pools this process started: stopped at interpreter exit, disowned after fork.

A pool whose driver was abandoned (an ``iter_in_pool`` generator never
closed) still has workers at exit: they are stopped here, before
``multiprocessing`` would wait for them. A child forked while pools run
has copies of them but not their workers: only the process that started a
pool may stop its workers, so the child's copies drop them and refuse
work, and the child's exit (which closes a copied generator) never
signals the parent's workers.
"""

from __future__ import annotations

import atexit
import contextlib
import weakref
from typing import Protocol

from singleton_proc._base import platform as _platform

__all__ = ["Registered", "live"]


class Registered(Protocol):
    """What a pool offers the registry."""

    def terminate(self) -> None:
        """Stop its workers now."""

    def disown(self) -> None:
        """In a forked child: forget the parent's workers, refuse work."""


#: The pools with workers in this process.
live: weakref.WeakSet[Registered] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    """At interpreter exit, stop pools still running (an abandoned generator's).

    A Ctrl-C during the stop is dropped: the interpreter is leaving anyway,
    and "Exception ignored in atexit callback" would be all it prints.
    """
    for pool in list(live):
        with contextlib.suppress(KeyboardInterrupt):
            pool.terminate()


def _disown_in_child() -> None:
    """After fork, in the child: the parent's pools are not ours to stop, or use."""
    for pool in live:
        pool.disown()
    live.clear()


atexit.register(_stop_all_at_exit)
_platform.at_fork(after_in_child=_disown_in_child)
