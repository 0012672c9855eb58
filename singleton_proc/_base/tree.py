"""Stopping a process tree: freeze, SIGTERM, grace, SIGKILL, one process at a time.

The tree is frozen first: the root, its descendants, the processes that
carry its mark (daemons that left the tree, see ``lineage``) and, when the
root leads a process group of its own that holds neither us nor our
ancestors, the rest of that group are suspended, and the tree is walked
again until nothing new appears, so that nobody spawns a replacement behind
our back. They get SIGTERM and are resumed (a stopped
process, Ctrl-Z, would never see the SIGTERM otherwise), get ``grace``
seconds while the walk goes on, and whatever is left is frozen, walked and
SIGKILLed. Every signal goes to one process, identified by pid and start
time (psutil refuses a pid that was reused): never ``killpg``, whose group
number could belong to someone else by then. Bounded in time, whatever the
processes do with SIGTERM.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from . import platform as _platform
from .holder import command_line
from .interrupts import signals_deferred
from .lineage import carries_here, kin_of, marked
from .waits import delays

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable

__all__ = [
    "TreeRoot",
    "TreeStop",
    "ancestors",
    "listing",
    "stopping_tree",
    "stopping_trees",
]

_log = logging.getLogger("singleton_proc")
#: How long SIGKILLed processes get to vanish (a process in uninterruptible
#: sleep cannot die at once); past that we report them and go on.
_KILL_WAIT = 5.0
#: Walks of a frozen tree before we stop looking for newcomers (each walk
#: suspends what it finds, so a tree settles in two or three).
_MAX_WALKS = 10
#: While waiting out the grace period, how often (seconds) to look for
#: marked processes: a look reads the environment of every process.
_MARK_LOOKS_EVERY = 0.1


@dataclass(frozen=True)
class TreeRoot:
    """A process whose tree is to be stopped.

    Attributes:
        process: The root, verified (psutil refuses a reused pid).
        label: How the log names it.
        mark: The mark its descendants inherit (see ``lineage``), if any:
            processes started with it belong to the tree wherever they are.
    """

    process: psutil.Process
    label: str
    mark: str | None = None


def ancestors() -> list[psutil.Process]:
    """This process's ancestors."""
    return psutil.Process().parents()


class _Tree:
    """The processes being stopped: found once, walked again, signalled one by one."""

    def __init__(self, root: psutil.Process, mark: str | None) -> None:
        """Start from the verified root; we and our ancestors are never members."""
        self.mark = mark
        #: The root's starting environment: what it forks shares it.
        self.kin = kin_of(root.pid) if mark is not None else None
        self._next_mark_look = 0.0
        # We and our ancestors are never members; nor, when we descend from
        # the tree (we carry its mark: a new copy started by the old one),
        # the processes we started, which carry its mark too.
        me = psutil.Process()
        self.spared = {me.pid} | {proc.pid for proc in ancestors()}
        if mark is not None and carries_here(mark):
            self.spared |= {proc.pid for proc in _children(me)}
        # The holder's own group counts as its tree, unless we or one of our
        # ancestors is in it (then signalling it could reach us).
        groups = {_platform.process_group(pid) for pid in self.spared}
        self.group = root.pid if _platform.process_group(root.pid) == root.pid else None
        if self.group in groups:
            self.group = None
        self.members: dict[int, psutil.Process] = {}
        self.commands: dict[int, str] = {}
        #: Members suspended and not yet resumed: noted *before* each
        #: suspend, so that whatever stops a freeze half way knows them all.
        self.frozen: list[psutil.Process] = []
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

    def walk(
        self, *, throttled: bool = False, last: bool = False
    ) -> list[psutil.Process]:
        """Find descendants (group members, marked processes) not seen yet.

        With ``throttled``, marked processes are looked for only if
        :data:`_MARK_LOOKS_EVERY` has passed since the last look; ``last``
        (a look before declaring the tree gone) reads them afresh.
        """
        found: list[psutil.Process] = []
        for proc in list(self.members.values()):
            if _alive(proc):
                found.extend(_children(proc))
        if self.group is not None:
            found.extend(_group_members(self.group))
        now = time.monotonic()
        if self.mark is not None and not (throttled and now < self._next_mark_look):
            self._next_mark_look = now + _MARK_LOOKS_EVERY
            marked_now = marked(self.mark, kin=self.kin, fresh=last)
            found.extend(proc for proc in marked_now if _alive(proc))
        return self._add(found)

    def alive(self) -> list[psutil.Process]:
        """Members that have not exited yet (a zombie has exited)."""
        return [proc for proc in self.members.values() if _alive(proc)]

    def freeze(self) -> list[psutil.Process]:
        """Suspend every live member, walking until nothing new appears.

        Returns the processes suspended by this call (also in :attr:`frozen`).
        """
        start = len(self.frozen)
        self._suspend(self.alive())
        for _ in range(_MAX_WALKS):
            new = self.walk()
            if not new:
                break
            self._suspend(new)
        return self.frozen[start:]

    def _suspend(self, procs: list[psutil.Process]) -> None:
        """Suspend each process, noting it as frozen first."""
        for proc in procs:
            self.frozen.append(proc)
            _each([proc], "suspend")

    def thaw(self) -> None:
        """Resume every process still noted as frozen.

        Each is forgotten only once resumed, and an exception meanwhile (the
        handler of a signal not held off, say a ``signal.alarm`` timeout)
        does not end the thaw: the rest are resumed, then it goes on.
        """
        error: BaseException | None = None
        while self.frozen:
            try:
                _each(self.frozen[:1], "resume")
                del self.frozen[0]  # resumed twice if cut here: harmless
            except BaseException as exc:  # noqa: BLE001  (re-raised below)
                error = error or exc
        if error is not None:
            raise error


@dataclass(frozen=True)
class TreeStop:
    """What stopping a process tree did.

    Attributes:
        signalled: ``(pid, command)`` of every process of the tree.
        killed: Those that needed SIGKILL after ``grace``.
        survivors: Pids still alive even after SIGKILL and a wait.
    """

    signalled: tuple[tuple[int, str], ...]
    killed: tuple[tuple[int, str], ...]
    survivors: tuple[int, ...]


def stopping_tree(top: TreeRoot, grace: float) -> Generator[float, None, TreeStop]:
    """Stop a root and its whole tree: freeze, SIGTERM, ``grace``, SIGKILL.

    The root gets SIGTERM first, and the time to stop its own children (a
    pool that terminates its workers does not respawn them, as it would if
    they died under it); what is left of the tree once it has exited gets
    SIGTERM in turn, and at ``grace`` everything still running is frozen,
    walked and SIGKILLed. Yields how long to sleep between looks.
    """
    root, label = top.process, top.label
    tree = _Tree(root, top.mark)
    left: list[psutil.Process] = []
    deadline = time.monotonic() + grace
    finished = killing = False
    try:
        with signals_deferred(default_too=True):  # even our death waits
            tree.freeze()  # a stable picture of the tree, nobody spawning
            _each([root], "terminate")
            tree.thaw()  # a stopped (Ctrl-Z) process would not see it
        _log.info("stopping %s: SIGTERM to %s", label, listing(tree.commands))
        yield from _wait(tree, deadline, only=root)
        rest = tree.alive()
        if rest:
            _each(rest, "terminate")
            yield from _wait(tree, deadline, signal_newcomers="terminate")
        left = tree.alive()
        if left:
            killing = True
            with signals_deferred(default_too=True):
                frozen = tree.freeze()
                left = [*left, *(proc for proc in frozen if proc not in left)]
                _each(left, "kill")
            kill_deadline = time.monotonic() + _KILL_WAIT
            yield from _wait(tree, kill_deadline, signal_newcomers="kill")
        finished = True
    finally:
        # Nothing stays suspended, however this ends: past the grace period
        # what was frozen is killed, before it the stop never gets that far.
        with signals_deferred(default_too=True):
            if killing:
                _each(tree.frozen, "kill")
            tree.thaw()
        if not finished:
            _log.warning(
                "stopping %s was interrupted: SIGTERM was sent to %s, %s",
                label,
                listing(tree.commands),
                "SIGKILL too" if killing else "SIGKILL was not",
            )
    killed_pids = {proc.pid for proc in left}
    return TreeStop(
        signalled=tuple(tree.commands.items()),
        killed=tuple(
            (pid, cmd) for pid, cmd in tree.commands.items() if pid in killed_pids
        ),
        survivors=tuple(proc.pid for proc in tree.alive()),
    )


def stopping_trees(
    roots: Iterable[TreeRoot], grace: float
) -> Generator[float, None, list[TreeStop]]:
    """Stop several trees at once: one grace period for all.

    Each tree is stopped as :func:`stopping_tree` does; they take their
    steps in turn, so a pool's workers get SIGTERM together and the whole
    stop takes as long as the slowest tree, not the sum.
    """
    running = [stopping_tree(root, grace) for root in roots]
    done: list[TreeStop] = []
    try:
        while running:
            sleeps = []
            for steps in list(running):
                try:
                    sleeps.append(steps.send(None))
                except StopIteration as stopped:
                    done.append(stopped.value)
                    running.remove(steps)
            if sleeps:
                yield min(sleeps)
    finally:
        for steps in running:
            steps.close()
    return done


def _wait(
    tree: _Tree,
    deadline: float,
    *,
    only: psutil.Process | None = None,
    signal_newcomers: str = "",
) -> Generator[float, None, None]:
    """Yield sleeps until the tree (or just ``only``) has exited, or ``deadline``.

    The tree is walked at every look, so that processes that appear
    meanwhile are known; with ``signal_newcomers`` they also get that signal.
    """
    for delay in delays():
        newcomers = tree.walk(throttled=True)
        if signal_newcomers:
            _each(newcomers, signal_newcomers)
        waiting_for = [only] if only is not None else list(tree.members.values())
        remaining = deadline - time.monotonic()
        if not any(_alive(proc) for proc in waiting_for) or remaining <= 0:
            # A last look, afresh: a process may have started a daemon as
            # it exited, since the last look at the marked ones.
            late = tree.walk(last=True)
            if signal_newcomers:
                _each(late, signal_newcomers)
            if late and only is None and remaining > 0:
                continue  # wait for those too
            return
        yield min(delay, remaining)


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


def listing(commands: dict[int, str]) -> str:
    """``"12 (python bot.py), 13 (...)"`` for the log."""
    return ", ".join(f"{pid} ({cmd})" for pid, cmd in commands.items()) or "nobody"
