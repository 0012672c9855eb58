"""Looking at instances from outside: who holds a name, without taking its lock."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from singleton_proc._base.procfs import (
    in_child_pid_namespace,
    namespace_pids,
    open_lock_files,
)

from .backends import opened
from .cluster_view import held_across, look_across
from .directory import NameFiles, existing_directory
from .identity import mismatch
from .lockfile import LOCK_SUFFIX, lock_state
from .names import validate_name
from .record import read_record

if TYPE_CHECKING:
    from singleton_proc._base.holder import Holder

    from .lease import Occupied

__all__ = [
    "Inspection",
    "detached_holder",
    "held_names",
    "holder",
    "inspect",
    "is_running",
    "list_instances",
    "look",
]


@dataclass(frozen=True)
class Inspection:
    """What is known about one name at one moment.

    Attributes:
        held: Some process holds the lock.
        holder: The verified holder, or ``None`` when free or unknowable.
        lock_pids: Pids the platform reports as holding the lock, or
            ``None`` when it cannot tell.
        reason: When held but ``holder`` is ``None``, why it is unknown.
        detached: The holder runs but no longer holds the lock file: the
            file was deleted or replaced under it, or it lost the descriptor.
        lease: With ``backend=``: the lease another token holds (the local
            lock was free).
    """

    held: bool
    holder: Holder | None
    lock_pids: frozenset[int] | None
    reason: str = ""
    detached: bool = False
    lease: Occupied | None = None


def inspect(files: NameFiles) -> Inspection:
    """Inspect a name whose directory is already resolved.

    The record is believed only when the live process passes every identity
    check against it: then it is the holder, even if the lock file was
    deleted under it (see :func:`detached_holder`) or it runs in a PID
    namespace below ours (see :func:`_from_below`).
    """
    state = lock_state(files)
    record = read_record(files)
    if not state.held:
        detached = detached_holder(files, record)
        return Inspection(
            held=detached is not None,
            holder=detached,
            lock_pids=state.pids,
            detached=detached is not None,
        )
    if state.pids is None and in_child_pid_namespace():
        # Only a process outside our namespace can hold it unlisted.
        return Inspection(
            held=True, holder=None, lock_pids=None, reason=_outside(record)
        )
    if record is None:
        reason = "its record is missing or unreadable"
        if state.pids:
            reason += f"; the lock is held by pid {_pids(state.pids)}"
        reason += " (another tool, such as flock(1), may hold it)"
        return Inspection(held=True, holder=None, lock_pids=state.pids, reason=reason)
    why_not = mismatch(record, state.pids)
    found = _from_below(record, state.pids) if why_not else record
    return Inspection(
        held=True,
        holder=found,
        lock_pids=state.pids,
        reason="" if found else why_not,
    )


def _outside(record: Holder | None) -> str:
    """Why the holder of a lock taken outside our PID namespace is unknown."""
    says = f"; its record says pid {record.pid} there" if record else ""
    return (
        "the lock is held by a process outside this PID namespace (the host "
        f"or another container), which cannot be seen from here{says}"
    )


def _from_below(record: Holder, lock_pids: frozenset[int] | None) -> Holder | None:
    """The holder, when it runs in a PID namespace below ours (a container).

    Its record names it by its pid in its own namespace; the lock table
    names it by its pid here. It is the holder when the one pid holding the
    lock is the recorded pid down there (``NSpid``) and passes every
    identity check under the pid it has here, which is then the one given.
    """
    if lock_pids is None or len(lock_pids) != 1:
        return None
    (pid,) = lock_pids
    numbers = namespace_pids(pid)
    if len(numbers) < 2 or numbers[-1] != record.pid:  # noqa: PLR2004  (here, there)
        return None
    seen_here = replace(record, pid=pid)
    return None if mismatch(seen_here, lock_pids) else seen_here


def detached_holder(files: NameFiles, record: Holder | None) -> Holder | None:
    """A live holder whose lock file was deleted or replaced under it.

    Deleting a live holder's lock file (a tmp cleaner) lets a newcomer lock a
    fresh file: two holders. It is recognised only on positive evidence, so
    that a leftover or forged record never blocks a start: the record's
    process passes every identity check and still has a file open under the
    lock file's name that is not the file there now (Linux shows it in
    ``/proc/<pid>/fd``). Where the platform cannot tell, nobody is believed.

    Args:
        files: The name's files.
        record: What its record says (already read by the caller).
    """
    if record is None or record.pid == os.getpid():
        return None
    open_files = open_lock_files(record.pid, files.lock)
    if not open_files or mismatch(record, None):
        return None
    try:
        st = os.lstat(files.lock)
        current = {(st.st_dev, st.st_ino)}
    except FileNotFoundError:
        current = set()
    return record if open_files - current else None


def _pids(pids: frozenset[int]) -> str:
    """``"12"`` or ``"12, 13"``."""
    return ", ".join(str(pid) for pid in sorted(pids))


def holder(
    name: str,
    directory: str | os.PathLike[str] | None = None,
    *,
    backend: object = None,
) -> Holder | None:
    """Return the verified holder of ``name``, or ``None``.

    ``None`` means not running, or running with a record that is missing,
    unreadable or does not match the live process; :func:`is_running` tells
    the two apart. Never takes the lock on Linux.

    Args:
        name: The instance name.
        directory: The lock directory; ``None`` for the private default.
        backend: Look across hosts instead, at the lease on this backend (as
            ``SingleInstance(backend=...)``; ``None`` reads
            ``$SINGLETON_PROC_BACKEND``). Its record is believed while the
            lease exists: it names a process on another host.

    Example:
        >>> import os
        >>> from singleton_proc import SingleInstance, holder
        >>> with SingleInstance("feishu"):
        ...     h = holder("feishu")
        ...     h.pid == os.getpid() if h else "not running"
        True
        >>> holder("feishu") is None
        True
    """
    with opened(backend) as across:
        if across is not None:
            seen = look_across(across, validate_name(name))
            return None if seen is None else seen[1]
    return look(name, directory).holder


def is_running(
    name: str,
    directory: str | os.PathLike[str] | None = None,
    *,
    backend: object = None,
) -> bool:
    """Return whether some process holds ``name``, whatever its record says.

    Also true for a verified holder whose lock file was deleted under it.
    With a ``backend`` (see :func:`holder`): whether its lease is held.

    Example:
        >>> from singleton_proc import is_running
        >>> is_running("feishu")
        False
    """
    with opened(backend) as across:
        if across is not None:
            return look_across(across, validate_name(name)) is not None
    return look(name, directory).held


def look(name: str, directory: str | os.PathLike[str] | None = None) -> Inspection:
    """Inspect ``name`` in ``directory`` (``None``: the private default).

    Nothing is created: a missing directory means nothing is running there.
    """
    validate_name(name)
    path = existing_directory(directory)
    if path is None:
        return Inspection(held=False, holder=None, lock_pids=frozenset())
    return inspect(NameFiles.of(path, name))


def list_instances(
    directory: str | os.PathLike[str] | None = None, *, backend: object = None
) -> list[Holder]:
    """Return the verified holders of every name in ``directory``, by name.

    Names whose lock is held under an unreadable record are left out (they
    have no :class:`Holder`); :func:`is_running` still reports them. With a
    ``backend`` (see :func:`holder`): the holders of every lease on it.

    Example:
        >>> from singleton_proc import SingleInstance, list_instances
        >>> with SingleInstance("feishu"), SingleInstance("nightly-backup"):
        ...     [h.name for h in list_instances()]
        ['feishu', 'nightly-backup']
    """
    with opened(backend) as across:
        if across is not None:
            return held_across(across)
    found = (inspection.holder for _, inspection in held_names(directory))
    return [one for one in found if one is not None]


def held_names(
    directory: str | os.PathLike[str] | None = None,
) -> list[tuple[str, Inspection]]:
    """Every held name in ``directory``, by name, with what is known of it.

    A name held under a missing or unreadable record (a lock taken by
    ``flock(1)``, say) has no holder, and its reason says why.
    """
    path = existing_directory(directory)
    if path is None:
        return []
    names = sorted(
        entry.name[: -len(LOCK_SUFFIX)]
        for entry in os.scandir(path)
        if entry.name.endswith(LOCK_SUFFIX) and entry.is_file(follow_symlinks=False)
    )
    held = []
    for name in names:
        try:
            validate_name(name)
        except ValueError:
            continue
        found = inspect(NameFiles.of(path, name))
        if found.held:
            held.append((name, found))
    return held
