"""Stopping a proven holder and its whole process tree: ``"replace"`` and ``terminate``.

Nothing is signalled until the holder is proven: the record names a live
process with the recorded start time, command line, user and host, which
(on Linux) holds the lock; it runs as the current user, and it is neither
this process nor one of its ancestors.

Then the tree is frozen: the holder, its descendants and, when it leads a
process group of its own that holds neither us nor our ancestors, the rest
of that group (daemonized children that left the tree) are suspended, and
the tree is walked again until nothing new appears, so that nobody spawns a
replacement behind our back. They get SIGTERM and are resumed (a stopped
process, Ctrl-Z, would never see the SIGTERM otherwise), get ``grace``
seconds while the walk goes on, and whatever is left is frozen, walked and
SIGKILLed. Every signal goes to one process, identified by pid and start
time (psutil refuses a pid that was reused): never ``killpg``, whose group
number could belong to someone else by then. The whole operation is bounded
in time, whatever the processes do with SIGTERM.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from . import _platform
from ._errors import ReplaceRefusedError, SingletonProcError
from ._holder import command_line
from ._identity import CREATE_TIME_TOLERANCE, current_identity
from ._introspect import Inspection, inspect
from ._names import validate_name
from ._paths import NameFiles, existing_directory
from ._polling import delays, run_blocking

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable

    from ._holder import Holder

__all__ = ["StopReport", "refusal", "stopping", "terminate", "validate_grace"]

_log = logging.getLogger("singleton_proc")
#: How long SIGKILLed processes get to vanish (a process in uninterruptible
#: sleep cannot die at once); past that we report them and go on.
_KILL_WAIT = 5.0
#: Walks of a frozen tree before we stop looking for newcomers (each walk
#: suspends what it finds, so a tree settles in two or three).
_MAX_WALKS = 10


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
    if holder.pid in {proc.pid for proc in _ancestors()}:
        return (
            f"the holder, pid {holder.pid}, is an ancestor of this process "
            f"(pid {me.pid}); stopping its tree would stop us too"
        )
    return ""


def _ancestors() -> list[psutil.Process]:
    """This process's ancestors."""
    return psutil.Process().parents()


class _Tree:
    """The processes being stopped: found once, walked again, signalled one by one."""

    def __init__(self, root: psutil.Process) -> None:
        """Start from the verified holder; we and our ancestors are never members."""
        self.root = root
        ancestors = _ancestors()
        self.spared = {os.getpid()} | {proc.pid for proc in ancestors}
        # The holder's own group counts as its tree, unless we or one of our
        # ancestors is in it (then signalling it could reach us).
        groups = {_platform.process_group(pid) for pid in self.spared}
        self.group = root.pid if _platform.process_group(root.pid) == root.pid else None
        if self.group in groups:
            self.group = None
        self.members: dict[int, psutil.Process] = {}
        self.commands: dict[int, str] = {}
        self._add([root])

    def _add(self, procs: Iterable[psutil.Process]) -> list[psutil.Process]:
        """Adopt processes not seen before; return the newcomers."""
        new = []
        for proc in procs:
            if proc.pid in self.members or proc.pid in self.spared:
                continue
            self.members[proc.pid] = proc
            self.commands[proc.pid] = _command(proc)
            new.append(proc)
        return new

    def walk(self) -> list[psutil.Process]:
        """Find descendants (and group members) not seen yet; return them."""
        found: list[psutil.Process] = []
        for proc in list(self.members.values()):
            if _alive(proc):
                found.extend(_children(proc))
        if self.group is not None:
            found.extend(_group_members(self.group))
        return self._add(found)

    def alive(self) -> list[psutil.Process]:
        """Members that have not exited yet (a zombie has exited)."""
        return [proc for proc in self.members.values() if _alive(proc)]

    def freeze(self) -> list[psutil.Process]:
        """Suspend every live member, walking until nothing new appears."""
        frozen = self.alive()
        _each(frozen, "suspend")
        for _ in range(_MAX_WALKS):
            new = self.walk()
            if not new:
                break
            _each(new, "suspend")
            frozen.extend(new)
        return frozen


def stopping(holder: Holder, grace: float) -> Generator[float, None, StopReport]:
    """Stop ``holder`` and its whole tree; yields how long to sleep between looks.

    A generator so that ``async with`` can wait without blocking the event
    loop; :func:`terminate` and ``acquire()`` sleep instead. If it is closed
    early (a cancelled ``async with``, Ctrl-C) the processes already sent
    SIGTERM are resumed and the log says that SIGKILL was not sent.
    """
    root = _verified(holder)
    if root is None:
        report = StopReport(holder=holder, signalled=(), killed=(), survivors=())
        _log_report(report, grace)
        return report
    tree = _Tree(root)
    frozen: list[psutil.Process] = []
    left: list[psutil.Process] = []
    finished = False
    try:
        frozen = tree.freeze()
        _each(frozen, "terminate")
        _each(frozen, "resume")
        frozen = []
        _log.info("stopping %r: SIGTERM to %s", holder.name, _listing(tree.commands))
        yield from _wait(tree, grace, signal_newcomers="terminate")
        left = tree.alive()
        if left:
            frozen = tree.freeze()
            left = [*left, *(proc for proc in frozen if proc not in left)]
            _each(left, "kill")
            frozen = []
            yield from _wait(tree, _KILL_WAIT, signal_newcomers="kill")
        finished = True
    finally:
        _each(frozen, "resume")  # interrupted between suspend and resume
        if not finished:
            _log.warning(
                "stopping %r was interrupted: SIGTERM was sent to %s, SIGKILL was not",
                holder.name,
                _listing(tree.commands),
            )
    killed_pids = {proc.pid for proc in left}
    report = StopReport(
        holder=holder,
        signalled=tuple(tree.commands.items()),
        killed=tuple(
            (pid, cmd) for pid, cmd in tree.commands.items() if pid in killed_pids
        ),
        survivors=tuple(proc.pid for proc in tree.alive()),
    )
    _log_report(report, grace)
    return report


def _wait(
    tree: _Tree, limit: float, *, signal_newcomers: str
) -> Generator[float, None, None]:
    """Yield sleeps until the tree has exited or ``limit`` passed.

    Processes that appear meanwhile (a child spawned during its parent's
    shutdown) get the same signal as the rest.
    """
    waited = 0.0
    for delay in delays():
        _each(tree.walk(), signal_newcomers)
        if not tree.alive() or waited >= limit:
            return
        step = min(delay, limit - waited)
        waited += step
        yield step


def _verified(holder: Holder) -> psutil.Process | None:
    """The holder's process, if its pid still belongs to it (not reused)."""
    try:
        root = psutil.Process(holder.pid)
        if abs(root.create_time() - holder.create_time) > CREATE_TIME_TOLERANCE:
            return None
    except psutil.NoSuchProcess:
        return None
    return root


def _children(proc: psutil.Process) -> list[psutil.Process]:
    """All descendants of ``proc``, or none if it is gone."""
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _group_members(group: int) -> list[psutil.Process]:
    """Live processes whose process group is ``group``."""
    return [
        proc
        for proc in psutil.process_iter()
        if _platform.process_group(proc.pid) == group
    ]


def _command(proc: psutil.Process) -> str:
    """A process's command line for the log, or its name."""
    try:
        return command_line(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"


def _each(procs: Iterable[psutil.Process], action: str) -> None:
    """Call a psutil ``action`` (terminate, kill, suspend, resume) on each process.

    psutil checks each pid's start time first, so a pid that was reused by
    another program is never signalled.
    """
    for proc in procs:
        try:
            getattr(proc, action)()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def _alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie has exited: it only awaits reaping)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _listing(commands: dict[int, str]) -> str:
    """``"12 (python bot.py), 13 (...)"`` for the log."""
    return ", ".join(f"{pid} ({cmd})" for pid, cmd in commands.items()) or "nobody"


def _log_report(report: StopReport, grace: float) -> None:
    """Say on the ``singleton_proc`` logger how the stop ended."""
    name = report.holder.name
    if not report.signalled:
        _log.info("stopping %r: pid %d had already exited", name, report.holder.pid)
        return
    if report.killed:
        _log.warning(
            "stopping %r: SIGKILL needed after %g s for %s",
            name,
            grace,
            _listing(dict(report.killed)),
        )
    if report.survivors:
        _log.error(
            "stopping %r: still alive after SIGKILL: %s",
            name,
            ", ".join(str(pid) for pid in report.survivors),
        )
    else:
        _log.info("stopped %r: %d process(es) gone", name, len(report.signalled))


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
        SingletonProcError: some of its processes survived even SIGKILL
            (uninterruptible sleep); the message names them.

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
    report = run_blocking(stopping(found.holder, grace))
    if report.survivors:
        pids = ", ".join(str(pid) for pid in report.survivors)
        raise SingletonProcError(
            f"stopped {name!r} only in part: pid {pids} survived SIGKILL "
            "(uninterruptible sleep, or not ours to kill); look at them with ps"
        )
    return found.holder
