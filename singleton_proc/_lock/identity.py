"""Process identity: who we are, and whether a live process is the one a record names.

Identity is ``(pid, create_time)``, confirmed by the command line, the user
and the host. psutil derives ``create_time`` from the boot time, which moves
when the clock is adjusted, so it is compared within a small tolerance.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import psutil

from singleton_proc._base.holder import hide_passwords
from singleton_proc._base.lineage import holder_mark

if TYPE_CHECKING:
    from singleton_proc._base.holder import Holder

__all__ = [
    "CREATE_TIME_TOLERANCE",
    "Identity",
    "current_identity",
    "mismatch",
    "recorded_command",
]

#: How far (seconds) a live process's create_time may drift from the record.
CREATE_TIME_TOLERANCE = 1.0


@dataclass(frozen=True)
class Identity:
    """The facts about one process that a record stores."""

    pid: int
    create_time: float
    cmdline: tuple[str, ...]
    user: str
    host: str

    @functools.cached_property
    def mark(self) -> str:
        """What our descendants inherit while we hold a name (see ``lineage``)."""
        return holder_mark(self.pid, self.create_time)


_current: Identity | None = None


def current_identity() -> Identity:
    """This process's identity, asked of psutil once per process.

    The cache is keyed by pid, so a forked child computes its own.
    """
    global _current  # noqa: PLW0603  (a per-process cache)
    cached = _current
    pid = os.getpid()
    if cached is None or cached.pid != pid:
        proc = psutil.Process(pid)
        with proc.oneshot():
            cached = Identity(
                pid=pid,
                create_time=proc.create_time(),
                cmdline=recorded_command(proc),
                user=proc.username(),
                host=socket.gethostname(),
            )
        _current = cached
    return cached


def recorded_command(proc: psutil.Process) -> tuple[str, ...]:
    """A process's command line as records keep it: passwords in URLs hidden."""
    return tuple(hide_passwords(arg) for arg in proc.cmdline())


def mismatch(holder: Holder, lock_pids: frozenset[int] | None) -> str:  # noqa: PLR0911
    """Say why the live process at ``holder.pid`` is not ``holder``.

    Args:
        holder: What the record claims.
        lock_pids: The pids the platform reports as holding the lock, or
            ``None`` when it cannot tell.

    Returns:
        ``""`` when every check passes; otherwise one sentence naming the
        first check that failed, for error messages.
    """
    pid = holder.pid
    me = current_identity()
    if holder.host != me.host:
        return f"the record was written on host {holder.host!r}, this is {me.host!r}"
    if lock_pids is not None and pid not in lock_pids:
        held_by = ", ".join(str(p) for p in sorted(lock_pids)) or "nobody"
        return (
            f"pid {pid} named by the record does not hold the lock (held by {held_by})"
        )
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            create_time = proc.create_time()
            if abs(create_time - holder.create_time) > CREATE_TIME_TOLERANCE:
                return (
                    f"pid {pid} was started at {_stamp(create_time)}, but the "
                    f"record's process at {_stamp(holder.create_time)}: the pid "
                    "was reused by another program"
                )
            cmdline = recorded_command(proc)
            if cmdline != holder.cmdline:
                return (
                    f"pid {pid} runs {' '.join(cmdline)!r}, not "
                    f"{' '.join(holder.cmdline)!r} as recorded"
                )
            user = proc.username()
            if user != holder.user:
                return (
                    f"pid {pid} runs as user {user!r}, the record says {holder.user!r}"
                )
    except psutil.NoSuchProcess:  # includes zombies
        return f"pid {pid} named by the record is not running"
    except psutil.AccessDenied:
        return f"pid {pid} cannot be inspected (access denied)"
    return ""


def _stamp(epoch: float) -> str:
    """A local timestamp for messages."""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]  # noqa: DTZ006
