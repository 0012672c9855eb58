"""What a conflict raises: the errors and the one line that name the holder."""

from __future__ import annotations

import os
import sys

from singleton_proc._errors import AlreadyRunningError, LockTimeoutError

from .inspection import Inspection

__all__ = [
    "conflict_error",
    "held_here_error",
    "timeout_error",
    "unknown_reason",
    "unseen_holder",
]


def conflict_error(
    name: str, found: Inspection, *, exit_code: int | None = None
) -> BaseException:
    """The error for a name another process holds.

    Args:
        name: The instance name.
        found: Who holds it (or why that is unknown).
        exit_code: For ``on_conflict="exit"``: print one line naming the
            holder on stderr and return ``SystemExit(exit_code)``.
    """
    who = describe(found)
    if exit_code is not None:
        print(  # noqa: T201  (the documented behaviour of "exit")
            f"singleton_proc: {name!r} is already running ({who}); exiting",
            file=sys.stderr,
            flush=True,
        )
        return SystemExit(exit_code)
    if found.holder is not None and found.holder.pid == os.getpid():
        advice = "release the other SingleInstance of this process first"
    else:
        advice = (
            "stop that process first, or choose "
            'on_conflict="exit" to leave quietly or "wait" to queue'
        )
    return AlreadyRunningError(
        f"{name!r} is already running ({who}); {advice}",
        holder=found.holder,
        reason=unknown_reason(found),
    )


def held_here_error(name: str, found: Inspection) -> AlreadyRunningError:
    """The error for a name this very process holds through another object."""
    return AlreadyRunningError(
        f"{name!r} is already held by this very process (pid {os.getpid()}) "
        "through another SingleInstance; release that one first",
        holder=found.holder,
    )


def timeout_error(name: str, found: Inspection, timeout: float) -> LockTimeoutError:
    """The error for a "wait" whose timeout ran out."""
    return LockTimeoutError(
        f"{name!r} is still held after waiting {timeout:g} s "
        f"({describe(found)}); wait longer, or stop that process",
        holder=found.holder,
        reason=unknown_reason(found),
    )


def unseen_holder(found: Inspection) -> Inspection:
    """The lock is taken, but the platform's lock table does not show it.

    Our failed attempt proves that some open file holds the lock, whatever
    ``/proc/locks`` says (an unusual filesystem, a sandbox that hides it).
    """
    return Inspection(
        held=True,
        holder=None,
        lock_pids=found.lock_pids,
        reason="the lock is held, but the system's lock table does not say by whom",
    )


def unknown_reason(found: Inspection) -> str | None:
    """Why the holder is unknown, for an error's ``reason``; ``None`` if known."""
    return (found.reason or None) if found.holder is None else None


def describe(found: Inspection) -> str:
    """Name the holder for a message: who it is, or why that is unknown."""
    if found.holder is None:
        return f"holder unknown: {found.reason}"
    if found.detached:
        return (
            f"{found.holder}; its lock file was deleted or replaced while it ran, "
            "so keep the lock directory away from tmp cleaners"
        )
    if found.lease is not None:
        return f"{found.holder}, on host {found.holder.host}"
    if found.holder.pid == os.getpid():
        return f"held by this very process, {found.holder}"
    return str(found.holder)
