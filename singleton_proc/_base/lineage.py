"""The mark our processes pass on to every descendant, and finding who carries it.

A process tree is found by walking parent to children, which a daemon
leaves: a child that forks again and exits (with or without ``setsid``)
leaves its own child to init, and a stop that walks the tree no longer
sees it. So the processes whose trees we stop carry a mark that every
process they start inherits, daemonized or not: a holder of a name marks
itself with its identity (pid and start time, as its record says), a
worker with a token its parent chose. A stop then also finds every live
process that carries that mark.

The mark is carried twice, since a process can start another in two ways:

* through ``exec`` (``subprocess``, a shell, ``os.exec*``): in the
  environment, ``SINGLETON_PROC_TREE``, which ``/proc/<pid>/environ``
  shows. A process that clears its environment (``env -i``, an ``execve``
  with an environment of its own) drops it;
* by forking without ``exec`` (``os.fork()`` twice, ``python-daemon``),
  which keeps the environment the parent *started* with: on Linux, in a
  mapped memory file named for the mark, which ``/proc/<pid>/maps`` shows
  in every process forked from the carrier. Only processes whose starting
  environment is the carrier's are looked at, so this costs a few reads.

A process that merely shares a command line never has either. Where there
is no ``/proc`` (macOS, Windows) psutil reads environments, and a fork
without ``exec`` that leaves the tree is not found.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import TYPE_CHECKING

import psutil

from . import platform as _platform
from . import procfs

if TYPE_CHECKING:
    import mmap

__all__ = [
    "MARK_VARIABLE",
    "carries_here",
    "carry",
    "holder_mark",
    "kin_of",
    "marked",
    "new_mark",
]

#: The environment variable: the marks of the trees a process belongs to,
#: separated by spaces (a holder started by another holder has both).
MARK_VARIABLE = "SINGLETON_PROC_TREE"
#: What the memory file carrying a mark is named: this, then the mark.
_MEMORY_PREFIX = "singleton-proc-tree:"


def holder_mark(pid: int, create_time: float) -> str:
    """The mark of the process ``pid`` that started at ``create_time``.

    Written from the values of the holder's record, so that a stop finds it
    from the record alone.
    """
    return f"{pid}-{create_time!r}"


def new_mark() -> str:
    """A fresh mark for a worker: its parent keeps it to find its descendants."""
    return f"w{secrets.token_hex(8)}"


#: The marks this process carries, each with the memory file mapped for it
#: (kept mapped for as long as we live; ``None`` where there is none). Each
#: is taken once: a holder carries its mark at every acquire, and reading
#: the environment costs more than the rest of a check. A program that
#: takes the variable out of its environment gives up the first half.
_carried: dict[str, mmap.mmap | None] = {}


def carry(mark: str) -> None:
    """Carry ``mark``: whatever we start from now on inherits it, forked or exec'd."""
    if mark in _carried:
        return
    marks = os.environ.get(MARK_VARIABLE, "")
    if not _lists(marks, mark):
        os.environ[MARK_VARIABLE] = f"{marks} {mark}".strip()
    _carried[mark] = _platform.map_named_memory(f"{_MEMORY_PREFIX}{mark}")


def carries_here(mark: str) -> bool:
    """Whether this process carries ``mark`` (it descends from that tree)."""
    return _lists(os.environ.get(MARK_VARIABLE, ""), mark)


def _lists(marks: str, mark: str) -> bool:
    """Whether the variable's value ``marks`` lists ``mark``."""
    return mark in marks.split()


def kin_of(pid: int) -> int | None:
    """What ``pid``'s starting environment is known by, for :func:`marked`.

    Taken while the process runs: the carrier of a mark may be gone by the
    time its tree is last looked at. ``None`` when it cannot be read. A
    reading kept from before the process started does not know it: then
    its own environment is read (without it, what the process forked would
    be missed: a daemon escaped a stop this way, under load).
    """
    environments = _environments(fresh=False)
    if environments is None:
        return None
    if pid in environments:
        return environments[pid][1]
    return procfs.start_digest(pid)


def marked(
    mark: str, *, kin: int | None = None, fresh: bool = False
) -> list[psutil.Process]:
    """The live processes that carry ``mark``.

    Those started with it in their environment, and (Linux) those of the
    starting environment ``kin`` (:func:`kin_of` the carrier) that map its
    memory file: forked from the carrier without ``exec``. On Linux
    ``/proc`` is read directly (some 50 µs a process); each match is
    checked again through psutil, whose ``Process`` then refuses to signal
    a pid that is reused later. Elsewhere psutil reads each process's
    environment (macOS: our own user's processes).

    One reading serves every tree a stop looks at for a short while (twice
    as long as it took, at least 50 ms), so that stopping many trees at
    once reads it once; ``fresh`` asks for a new one (a last look).
    """
    environments = _environments(fresh=fresh)
    if environments is None:
        return [proc for proc in psutil.process_iter() if _carries(proc, mark)]
    found = [
        proc
        for proc in _processes(
            [pid for pid, (words, _) in environments.items() if mark in words]
        )
        if _carries(proc, mark)
    ]
    if kin is not None:
        name = f"{_MEMORY_PREFIX}{mark}"
        found.extend(proc for proc, names in _kin(kin, environments) if name in names)
    return found


#: The last reading of ``/proc``: when it may be reused until, what it said,
#: and what :func:`_kin` found in it, by starting environment.
_reading: tuple[
    float,
    dict[int, procfs.StartEnvironment] | None,
    dict[int, list[tuple[psutil.Process, frozenset[str]]]],
] = (0.0, None, {})


def _environments(*, fresh: bool) -> dict[int, procfs.StartEnvironment] | None:
    """What ``/proc`` says of how each process started (``None``: no ``/proc``)."""
    global _reading  # noqa: PLW0603  (a short-lived cache; a tuple swapped whole)
    now = time.monotonic()
    until, environments, _ = _reading
    if fresh or now >= until or environments is None:
        environments = procfs.start_environments(MARK_VARIABLE)
        took = time.monotonic() - now
        _reading = (now + max(_REUSE_FOR, 2 * took), environments, {})
        if environments is not None:
            for key in [key for key in _memory_names if key[0] not in environments]:
                del _memory_names[key]  # that process has ended
    return environments


#: How long at least a reading of ``/proc`` is reused (seconds).
_REUSE_FOR = 0.05


def _processes(pids: list[int]) -> list[psutil.Process]:
    """A psutil handle of each of ``pids``, leaving out those gone meanwhile."""
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    return found


def _carries(proc: psutil.Process, mark: str) -> bool:
    """Whether ``proc`` was started with ``mark`` (``False`` when we cannot tell)."""
    try:
        return _lists(proc.environ().get(MARK_VARIABLE, ""), mark)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    except OSError:  # pragma: no cover - an environment psutil cannot parse
        return False


#: The memory files of ours each process maps, by pid and start time: what
#: a process maps of ours is fixed when it is forked (``exec`` also changes
#: its starting environment, so it is no longer looked at), so it is read
#: once per process, however many trees and looks ask.
_memory_names: dict[tuple[int, float], frozenset[str]] = {}


def _kin(
    kin: int, environments: dict[int, procfs.StartEnvironment]
) -> list[tuple[psutil.Process, frozenset[str]]]:
    """The processes of starting environment ``kin``, with the memory files they map.

    Found once per reading, whichever tree asks. Each is identified before
    its maps are read, so that the answer is about it and not about a
    process that reused its pid; one whose maps cannot be read is left out.
    """
    seen = _reading[2]
    if kin not in seen:
        seen[kin] = []
        pids = [pid for pid, (_, digest) in environments.items() if digest == kin]
        for proc in _processes(pids):
            try:
                key = (proc.pid, proc.create_time())
            except psutil.Error:
                continue
            if key not in _memory_names:
                names = procfs.mapped_memory_names(proc.pid, _MEMORY_PREFIX)
                if names is None:
                    continue
                _memory_names[key] = names
            seen[kin].append((proc, _memory_names[key]))
    return seen[kin]
