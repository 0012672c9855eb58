"""Stopping a proven holder and its whole process tree: ``"replace"`` and ``terminate``.

Nothing is signalled until the holder is proven: the record names a live
process with the recorded start time, command line, user and host, which
(on Linux) holds the lock; it runs as the current user, and it is neither
this process nor one of its ancestors. Then the tree is snapshotted (so
that grandchildren are still found after their parent exits), sent SIGTERM,
given ``grace`` seconds, and what is left gets SIGKILL. The whole operation
is bounded in time, whatever the processes do with SIGTERM.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from . import _platform
from ._errors import ReplaceRefusedError
from ._identity import CREATE_TIME_TOLERANCE, current_identity
from ._introspect import Inspection, inspect
from ._names import validate_name
from ._paths import NameFiles, existing_directory

if TYPE_CHECKING:
    from collections.abc import Generator

    from ._holder import Holder

__all__ = ["StopReport", "refusal", "stopping", "terminate", "validate_grace"]

_log = logging.getLogger("singleton_proc")
#: Polling while the tree exits: 1 ms at first, backing off to 10 ms.
_FIRST_POLL = 0.001
_POLL_CAP = 0.010
_POLL_GROWTH = 1.5
#: How long SIGKILLed processes get to vanish (a process in uninterruptible
#: sleep cannot die at once); past that we report them and go on.
_KILL_WAIT = 5.0


@dataclass(frozen=True)
class StopReport:
    """What stopping a holder did.

    Attributes:
        holder: The holder that was stopped.
        signalled: ``(pid, command)`` of every process sent SIGTERM.
        killed: Those that needed SIGKILL after ``grace``.
        survivors: Pids still alive even after SIGKILL and a wait.
    """

    holder: Holder
    signalled: tuple[tuple[int, str], ...]
    killed: tuple[tuple[int, str], ...]
    survivors: tuple[int, ...]


def validate_grace(grace: object) -> float:
    """Return ``grace`` as seconds, or raise naming what is wrong with it."""
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(
            f"grace must be a number of seconds, not {type(grace).__name__}"
        )
    if not 0 <= grace < float("inf"):  # also refuses NaN
        raise ValueError(f"grace must be >= 0 seconds and finite, not {grace!r}")
    return float(grace)


def refusal(
    name: str, found: Inspection, verb: str = "replace"
) -> ReplaceRefusedError | None:
    """The error that forbids stopping ``found``'s holder, or ``None`` if allowed.

    Args:
        name: The instance name, for the message.
        found: A fresh inspection of a held name.
        verb: What the caller is about to do, for the message.
    """
    reason = _why_not(found)
    if not reason:
        return None
    return ReplaceRefusedError(
        f"cannot {verb} {name!r}: {reason}. Nothing was stopped; check that "
        "process yourself (ps -p PID) and stop it by hand if it is the old "
        "instance, or wait for it to finish",
        holder=found.holder,
    )


def _why_not(found: Inspection) -> str:
    """Why the holder in ``found`` may not be signalled by us, or ``""``."""
    holder = found.holder
    if holder is None:
        held_by = ""
        if found.lock_pids and "the lock is held by" not in found.reason:
            pids = ", ".join(str(pid) for pid in sorted(found.lock_pids))
            held_by = f"; the lock is held by pid {pids}"
        return f"the holder cannot be identified ({found.reason}{held_by})"
    me = current_identity()
    if holder.user != me.user:
        return (
            f"pid {holder.pid} runs as user {holder.user!r}, not as you ({me.user!r})"
        )
    if holder.pid == me.pid:
        return f"the holder, pid {holder.pid}, is this very process"
    if holder.pid in _ancestors():
        return (
            f"the holder, pid {holder.pid}, is an ancestor of this process "
            f"(pid {me.pid}); stopping its tree would stop us too"
        )
    return ""


def _ancestors() -> set[int]:
    """Pids of this process's ancestors."""
    return {parent.pid for parent in psutil.Process().parents()}


def stopping(holder: Holder, grace: float) -> Generator[float, None, StopReport]:
    """Stop ``holder`` and its whole tree; yields how long to sleep between looks.

    A generator so that ``async with`` can wait without blocking the event
    loop; :func:`terminate` and ``acquire()`` sleep instead.
    """
    tree = _snapshot(holder)
    own_group = _platform.own_process_group(holder.pid)
    commands = tuple((proc.pid, _command(proc)) for proc in tree)
    _signal_all(tree, own_group, holder.pid, kill=False)
    yield from _wait_for_exit(tree, grace)
    left = [proc for proc in tree if _alive(proc)]
    if left:
        _signal_all(left, own_group, holder.pid, kill=True)
        yield from _wait_for_exit(left, _KILL_WAIT)
    report = StopReport(
        holder=holder,
        signalled=commands,
        killed=tuple(
            (pid, cmd) for pid, cmd in commands if pid in {p.pid for p in left}
        ),
        survivors=tuple(proc.pid for proc in left if _alive(proc)),
    )
    _log_report(report, grace)
    return report


def _snapshot(holder: Holder) -> list[psutil.Process]:
    """The holder and all its descendants now, minus this process and its ancestors.

    Each ``psutil.Process`` remembers its start time, and psutil refuses to
    signal a pid that has since been reused.
    """
    try:
        root = psutil.Process(holder.pid)
        if abs(root.create_time() - holder.create_time) > CREATE_TIME_TOLERANCE:
            return []  # it died and the pid was reused since we looked
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    spared = _ancestors() | {os.getpid()}
    return [proc for proc in tree if proc.pid not in spared]


def _command(proc: psutil.Process) -> str:
    """A process's command line for the log, or its name."""
    try:
        return " ".join(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"


def _signal_all(
    procs: list[psutil.Process], own_group: bool, group: int, *, kill: bool
) -> None:
    """SIGTERM (or SIGKILL) each process, and the holder's own group if it has one.

    The group catches descendants that left the tree (daemonized, or
    re-parented when their parent exited) but kept the holder's group.
    """
    if own_group:
        _platform.signal_group(group, kill=kill)
    for proc in procs:
        try:
            if kill:
                proc.kill()
            else:
                proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def _alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie has exited: it only awaits reaping)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_exit(
    procs: list[psutil.Process], limit: float
) -> Generator[float, None, None]:
    """Yield sleeps until every process in ``procs`` exited, or ``limit`` passed."""
    deadline = time.monotonic() + limit
    delay = _FIRST_POLL
    while any(_alive(proc) for proc in procs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        yield min(delay, remaining)
        delay = min(delay * _POLL_GROWTH, _POLL_CAP)


def _log_report(report: StopReport, grace: float) -> None:
    """Say on the ``singleton_proc`` logger what was stopped, and how."""
    everyone = ", ".join(f"{pid} ({cmd})" for pid, cmd in report.signalled)
    _log.info("stopped %r: SIGTERM to %s", report.holder.name, everyone or "nobody")
    if report.killed:
        _log.warning(
            "stopping %r: SIGKILL needed after %g s for %s",
            report.holder.name,
            grace,
            ", ".join(f"{pid} ({cmd})" for pid, cmd in report.killed),
        )
    if report.survivors:
        _log.error(
            "stopping %r: still alive after SIGKILL: %s",
            report.holder.name,
            ", ".join(str(pid) for pid in report.survivors),
        )


def terminate(
    name: str, grace: float = 5.0, directory: str | os.PathLike[str] | None = None
) -> Holder | None:
    """Stop the proven holder of ``name`` and its whole process tree.

    The same checks as ``on_conflict="replace"``: nothing is signalled
    unless the holder is proven. SIGTERM first, SIGKILL for whatever is
    left after ``grace`` seconds; the lock is not taken.

    Args:
        name: The instance name.
        grace: Seconds between SIGTERM and SIGKILL.
        directory: The lock directory; ``None`` for the private default.

    Returns:
        The holder that was stopped, or ``None`` when nothing was running.

    Raises:
        ReplaceRefusedError: the holder could not be proven; the message
            says why, and nothing was signalled.

    Example:
        >>> from singleton_proc import terminate
        >>> stopped = terminate("feishu", grace=10)  # doctest: +SKIP
    """
    validate_name(name)
    grace = validate_grace(grace)
    path = existing_directory(directory)
    if path is None:
        return None
    found = inspect(NameFiles.of(path, name))
    if not found.held:
        return None
    refused = refusal(name, found, verb="stop")
    if refused is not None:
        raise refused
    assert found.holder is not None  # noqa: S101  (refusal() checked it)
    steps = stopping(found.holder, grace)
    try:
        while True:
            time.sleep(next(steps))
    except StopIteration:
        return found.holder
