"""The mark our processes pass on to every descendant, and finding who carries it.

A process tree is found by walking parent to children, which a daemon
leaves: a child that forks again and exits (with or without ``setsid``)
leaves its own child to init, and a stop that walks the tree no longer
sees it. So the processes whose trees we stop carry a mark in their
environment, ``SINGLETON_PROC_TREE``, that every process they start
inherits, daemonized or not: a holder of a name marks itself with its
identity (pid and start time, as its record says), a worker with a token
its parent chose. A stop then also finds every live process started with
that mark. A process that clears its environment (``env -i``, an
``execve`` with an environment of its own) drops the mark and is not found
this way; a process that merely shares a command line never has it.
"""

from __future__ import annotations

import os
import secrets
import time

import psutil

from . import procfs

__all__ = [
    "MARK_VARIABLE",
    "carries_here",
    "carry",
    "holder_mark",
    "marked",
    "new_mark",
]

#: The environment variable: the marks of the trees a process belongs to,
#: separated by spaces (a holder started by another holder has both).
MARK_VARIABLE = "SINGLETON_PROC_TREE"


def holder_mark(pid: int, create_time: float) -> str:
    """The mark of the process ``pid`` that started at ``create_time``.

    Written from the values of the holder's record, so that a stop finds it
    from the record alone.
    """
    return f"{pid}-{create_time!r}"


def new_mark() -> str:
    """A fresh mark for a worker: its parent keeps it to find its descendants."""
    return f"w{secrets.token_hex(8)}"


#: The marks this process has put in its environment: each is put there once
#: (a holder carries its mark at every acquire, and reading the environment
#: costs more than the rest of a check). A program that takes the variable
#: out of its environment gives its marks up.
_carried: set[str] = set()


def carry(mark: str) -> None:
    """Add ``mark`` to our environment: whatever we start from now on inherits it."""
    if mark in _carried:
        return
    marks = os.environ.get(MARK_VARIABLE, "")
    if not _lists(marks, mark):
        os.environ[MARK_VARIABLE] = f"{marks} {mark}".strip()
    _carried.add(mark)


def carries_here(mark: str) -> bool:
    """Whether this process carries ``mark`` (it descends from that tree)."""
    return _lists(os.environ.get(MARK_VARIABLE, ""), mark)


def _lists(marks: str, mark: str) -> bool:
    """Whether the variable's value ``marks`` lists ``mark``."""
    return mark in marks.split()


def marked(mark: str, *, fresh: bool = False) -> list[psutil.Process]:
    """The live processes started with ``mark`` in their environment.

    On Linux ``/proc`` is read directly (some 50 µs a process); each match
    is checked again through psutil, whose ``Process`` then refuses to
    signal a pid that is reused later. Elsewhere psutil reads each
    process's environment (macOS: our own user's processes).

    One reading serves every tree a stop looks at for a short while (twice
    as long as it took, at least 50 ms), so that stopping many trees at
    once reads it once; ``fresh`` asks for a new one (a last look).
    """
    marks = _marks_by_pid(fresh=fresh)
    candidates = (
        _processes([pid for pid, words in marks.items() if mark in words])
        if marks is not None
        else list(psutil.process_iter())
    )
    return [proc for proc in candidates if _carries(proc, mark)]


#: The last reading of ``/proc``: when it may be reused until, and what it said.
_reading: tuple[float, dict[int, frozenset[str]] | None] = (0.0, None)


def _marks_by_pid(*, fresh: bool) -> dict[int, frozenset[str]] | None:
    """``{pid: marks}`` from ``/proc`` (``None`` without one), maybe reused."""
    global _reading  # noqa: PLW0603  (a short-lived cache; a tuple swapped whole)
    now = time.monotonic()
    until, marks = _reading
    if fresh or now >= until or marks is None:
        marks = procfs.environ_words(MARK_VARIABLE)
        took = time.monotonic() - now
        _reading = (now + max(_REUSE_FOR, 2 * took), marks)
    return marks


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
