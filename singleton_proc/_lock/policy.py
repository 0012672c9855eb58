"""The policy engine: try the lock, and between tries apply ``on_conflict``.

``SingleInstance.acquire`` (sync) and ``async with`` drive the same
generator, :func:`tries`, which yields how long to sleep before the next
try (see ``waits``): raise, exit, wait, or prove the holder and stop its
tree, then take the name.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Literal, Protocol, cast, get_args

from singleton_proc._base.waits import delays

from . import registry
from .conflicts import conflict_error, held_here_error, timeout_error, unseen_holder
from .directory import NameFiles, check_directory, directory_key, resolve_directory
from .inspection import Inspection, inspect
from .lockfile import OpenLock, try_lock_file
from .stop import refusal, stopping

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from .cluster import ClusterName
    from .lease import Watch

__all__ = ["ConflictPolicy", "Options", "conflict_policy", "tries"]

ConflictPolicy = Literal["raise", "exit", "wait", "replace"]
_POLICIES: tuple[str, ...] = get_args(ConflictPolicy)

#: A holder that lets go between our failed lock and our look at it gets
#: another try at once, a few times, instead of a confusing "held by nobody".
_RACE_RETRIES = 3

#: Where each (directory argument, name) was found: resolving a directory
#: (environment, home, creation) is done once per process, checking it at
#: every acquire.
_located: dict[tuple[tuple[str, ...], str], NameFiles] = {}


class Options(Protocol):
    """What the policy needs of a ``SingleInstance``: its checked options."""

    @property
    def name(self) -> str: ...
    @property
    def on_conflict(self) -> str: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def grace(self) -> float: ...
    @property
    def exit_code(self) -> int: ...


def conflict_policy(
    policy: object, timeout: object, exit_code: object
) -> ConflictPolicy:
    """``on_conflict`` checked, with the options that go with it."""
    if policy not in _POLICIES:
        allowed = ", ".join(repr(known) for known in _POLICIES)
        raise ValueError(f"on_conflict must be one of {allowed}, not {policy!r}")
    if timeout is not None and policy != "wait":
        raise ValueError('timeout only applies to on_conflict="wait"')
    if type(exit_code) is not int:
        raise TypeError(f"exit_code must be an int, not {type(exit_code).__name__}")
    return cast("ConflictPolicy", policy)


def tries(
    options: Options,
    directory: str | os.PathLike[str] | None,
    take: Callable[[NameFiles, registry.NameKey, OpenLock], Inspection | None],
    cluster: ClusterName | None = None,
) -> Generator[float, None, None]:
    """Try the lock until held, applying ``on_conflict`` between tries.

    ``take`` is called once the name's file is locked: it returns ``None``
    once the name is held, or (having let go) the inspection of a live
    holder whose lock file was deleted under it, for the policy to apply.
    Every try is a non-blocking lock attempt, so a wait that times out or
    is cancelled leaves nothing behind. (A cancelled ``"replace"`` has
    sent SIGTERM already; see :func:`~singleton_proc._lock.stop.stopping`.)

    With a ``cluster``, ``take`` also returns the holder of the lease on
    another host; a ``"wait"`` or ``"replace"`` subscribes to the name's
    releases first, so that none is missed.
    """
    watch = None
    if cluster is not None and options.on_conflict in ("wait", "replace"):
        watch = cluster.watch()
    try:
        yield from _tries(options, directory, take, cluster, watch)
    finally:
        if cluster is not None:
            cluster.drop_kept()
        if watch is not None:
            watch.close()


def _tries(  # noqa: C901, PLR0912  (one loop over the policies, as SPEC lists them)
    options: Options,
    directory: str | os.PathLike[str] | None,
    take: Callable[[NameFiles, registry.NameKey, OpenLock], Inspection | None],
    cluster: ClusterName | None,
    watch: Watch | None,
) -> Generator[float, None, None]:
    name, policy, timeout = options.name, options.on_conflict, options.timeout
    files, key = _locate(directory, name)
    start = time.monotonic()
    polls = delays()
    races = 0
    replaced = False
    while True:
        _refuse_if_held_here(name, files, key)
        lock = try_lock_file(files.lock)
        if lock is not None:
            found = take(files, key, lock)
            if found is None:
                return
        elif policy == "wait" and (remaining := _remaining(timeout, start)) > 0:
            # Waiting needs no inspection: just try again shortly. The time
            # left is read once: read again, it may have run out, and a
            # negative sleep is an error.
            yield min(next(polls), remaining)
            continue
        else:
            found = inspect(files)
            if not found.held:
                if races < _RACE_RETRIES:
                    races += 1  # let go a moment ago: try again at once
                    continue
                found = unseen_holder(found)
        races = 0
        remote = _remote(cluster, watch, found)
        if policy == "replace" and not replaced:
            if remote is not None:
                yield from remote[0].replacing(found, remote[1], options.grace)
            else:
                yield from _replace(name, found, options.grace)
            replaced = True  # once: a newcomer taking it meanwhile wins
            continue
        if policy != "wait":
            exit_code = options.exit_code if policy == "exit" else None
            raise conflict_error(name, found, exit_code=exit_code)
        remaining = _remaining(timeout, start)
        if remaining <= 0:
            raise timeout_error(name, found, timeout or 0.0)
        if remote is not None:
            yield from remote[0].waiting(found, remote[1], remaining)
        else:
            yield min(next(polls), remaining)


def _remote(
    cluster: ClusterName | None, watch: Watch | None, found: Inspection
) -> tuple[ClusterName, Watch] | None:
    """The lease and its watch, when the holder is the lease's on another host."""
    if cluster is None or watch is None or found.lease is None:
        return None
    return cluster, watch


def _replace(
    name: str, found: Inspection, grace: float
) -> Generator[float, None, None]:
    """Prove the holder in ``found`` and stop its tree, or refuse."""
    refused = refusal(name, found)
    if refused is not None:
        raise refused
    assert found.holder is not None  # noqa: S101  (refusal() checked it)
    yield from stopping(found.holder, grace)


def _locate(
    directory: str | os.PathLike[str] | None, name: str
) -> tuple[NameFiles, registry.NameKey]:
    """The name's files and its key in this process, the directory checked.

    Where the directory is, and the paths in it, are worked out once per
    process for the same inputs; every acquire still checks the
    directory itself (one ``lstat``), which also gives the key.
    """
    private = directory is None
    cache_key = (directory_key(directory), name)
    files = _located.get(cache_key)
    if files is not None:
        try:
            st = check_directory(files.directory, private=private)
        except FileNotFoundError:  # removed since: find (and create) it again
            files = None
    if files is None:
        files = NameFiles.of(resolve_directory(directory), name)
        st = check_directory(files.directory, private=private)
        _located[cache_key] = files
    return files, registry.name_key(st, name)


def _refuse_if_held_here(name: str, files: NameFiles, key: registry.NameKey) -> None:
    """Refuse at once when another object of this process holds the name.

    Waiting would wait on ourselves and replacing would kill ourselves.
    Keyed by the directory's identity and the name (two spellings of one
    directory are one lock, and a deleted lock file changes nothing) and
    by the lock file's identity (one file under two names, as on a
    case-insensitive filesystem, is one lock). A process that holds
    nothing (the common case) has nothing to refuse, and skips the look.
    """
    if not registry.holds_any():
        return
    try:
        st = os.lstat(files.lock)
        file_key: registry.FileKey | None = (st.st_dev, st.st_ino)
    except FileNotFoundError:
        file_key = None
    if registry.holding(key, file_key) is not None:
        raise held_here_error(name, inspect(files))


def _remaining(timeout: float | None, start: float) -> float:
    """Seconds left of ``timeout`` since ``start``; infinite without one."""
    if timeout is None:
        return float("inf")
    return timeout - (time.monotonic() - start)
