"""Stopping a proven holder and its whole process tree: ``"replace"`` and ``terminate``.

Nothing is signalled until the holder is proven: the record names a live
process with the recorded start time, command line, user and host, which
(on Linux) holds the lock; it runs as the current user, and it is neither
this process nor one of its ancestors.

Then its tree is stopped by :mod:`singleton_proc._base.tree`: frozen, SIGTERM,
``grace`` seconds, SIGKILL, each process verified, bounded in time. The tree
includes the processes started with the holder's mark (``lineage``):
daemons that its children forked off.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import psutil

from singleton_proc._base import validate
from singleton_proc._base.lineage import holder_mark
from singleton_proc._base.tree import (
    TreeRoot,
    TreeStop,
    ancestors,
    listing,
    stopping_tree,
)
from singleton_proc._base.waits import run_blocking
from singleton_proc._errors import ReplaceRefusedError, SingletonProcError

from .backends import opened
from .cluster_view import stepping_down
from .conflicts import unknown_reason
from .directory import NameFiles, existing_directory
from .identity import CREATE_TIME_TOLERANCE, current_identity
from .inspection import Inspection, inspect
from .names import validate_name

if TYPE_CHECKING:
    import os
    from collections.abc import Generator

    from singleton_proc._base.holder import Holder

__all__ = ["refusal", "stopping", "terminate"]

_log = logging.getLogger("singleton_proc")


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
        reason=unknown_reason(found),
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
    if holder.pid in {proc.pid for proc in ancestors()}:
        return (
            f"the holder, pid {holder.pid}, is an ancestor of this process "
            f"(pid {me.pid}); stopping its tree would stop us too"
        )
    return ""


def stopping(holder: Holder, grace: float) -> Generator[float, None, TreeStop]:
    """Stop ``holder`` and its whole tree; yields how long to sleep between looks.

    A generator so that ``async with`` can wait without blocking the event
    loop; :func:`terminate` and ``acquire()`` sleep instead. If it is closed
    early (a cancelled ``async with``, Ctrl-C) the processes already sent
    SIGTERM are resumed and the log says that SIGKILL was not sent.
    """
    root = _verified(holder)
    if root is None:
        stopped = TreeStop(signalled=(), killed=(), survivors=())
    else:
        mark = holder_mark(holder.pid, holder.create_time)
        stopped = yield from stopping_tree(
            TreeRoot(root, repr(holder.name), mark), grace
        )
    _log_report(holder, stopped, grace)
    return stopped


def _verified(holder: Holder) -> psutil.Process | None:
    """The holder's process, if its pid still belongs to it (not reused)."""
    try:
        root = psutil.Process(holder.pid)
        if abs(root.create_time() - holder.create_time) > CREATE_TIME_TOLERANCE:
            return None
    except psutil.NoSuchProcess:
        return None
    return root


def _log_report(holder: Holder, stopped: TreeStop, grace: float) -> None:
    """Say on the ``singleton_proc`` logger how the stop ended."""
    name = holder.name
    if not stopped.signalled:
        _log.info("stopping %r: pid %d had already exited", name, holder.pid)
        return
    if stopped.killed:
        _log.warning(
            "stopping %r: SIGKILL needed after %g s for %s",
            name,
            grace,
            listing(dict(stopped.killed)),
        )
    if stopped.survivors:
        _log.error(
            "stopping %r: still alive after SIGKILL: %s",
            name,
            ", ".join(str(pid) for pid in stopped.survivors),
        )
    else:
        _log.info("stopped %r: %d process(es) gone", name, len(stopped.signalled))


def terminate(
    name: str,
    grace: float = 5.0,
    directory: str | os.PathLike[str] | None = None,
    *,
    backend: object = None,
) -> Holder | None:
    """Stop the proven holder of ``name`` and its whole process tree.

    The same checks as ``on_conflict="replace"``: nothing is signalled
    unless the holder is proven. SIGTERM first, SIGKILL for whatever is
    left after ``grace`` seconds; the lock is not taken.

    With a ``backend`` (as ``SingleInstance(backend=...)``; ``None`` reads
    ``$SINGLETON_PROC_BACKEND``), nothing is signalled on any host: the
    holder of the lease is asked to step down (its next renewal sees it and
    takes its ``on_lost`` path), and after ``grace`` its lease is revoked,
    the name kept free of everyone until it can no longer believe it holds it.

    Args:
        name: The instance name.
        grace: Seconds between SIGTERM and SIGKILL (or the step-down request
            and the revocation).
        directory: The lock directory; ``None`` for the private default.
        backend: Stop the holder of the lease on this backend instead.

    Returns:
        The holder that was stopped, or ``None`` when nothing was running.

    Raises:
        ReplaceRefusedError: the holder could not be proven; the message
            says why, and nothing was signalled.
        SingletonProcError: some of its processes survived even SIGKILL
            (uninterruptible sleep); the message names them.

    Example:
        >>> from singleton_proc import terminate
        >>> stopped = terminate("feishu", grace=10)
        >>> print(stopped)  # nothing ran: nothing to stop
        None
    """
    validate_name(name)
    grace = validate.grace(grace)
    with opened(backend) as across:
        if across is not None:
            return run_blocking(stepping_down(across, name, grace))[1]
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
