"""What a held instance holds, and how it takes and lets go of it, in order.

Taking, once the name's file is locked: look for a detached holder; take
the cluster lease (with ``backend=``); count as held (registered for exit);
write the record. Letting go runs the same steps backwards, the lock last,
so no record or lease outlives the lock that guards it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from singleton_proc._base import lineage

from . import registry as _registry
from . import sigterm as _sigterm
from .identity import current_identity
from .inspection import Inspection, detached_holder
from .record import encode_own_record, load_record, remove_record, write_record

if TYPE_CHECKING:
    from collections.abc import Callable

    from .cluster import ClusterName
    from .directory import NameFiles
    from .lockfile import OpenLock

__all__ = ["Held", "let_go", "take"]


@dataclass
class Held:
    """What an instance holds: the lock, where, which process took it, the lease."""

    lock: OpenLock
    files: NameFiles
    key: _registry.NameKey
    owner_pid: int
    cluster: ClusterName | None = None
    record_written: bool = False
    sigterm_held: bool = False


def take(
    instance: _registry.Holding,
    name: str,
    held: Held,
    cluster: ClusterName | None,
    publish: Callable[[Held | None], None],
) -> Inspection | None:
    """Having locked the file: check for a detached holder, take the lease, record.

    ``publish`` makes ``held`` the instance's (or forgets it, with ``None``)
    before anything that a release must undo. Anything that interrupts this
    undoes what was done, the lock last.

    Returns:
        ``None`` once held; or, with the lock released again, the
        inspection of a holder elsewhere (a live process whose lock file was
        deleted under it, or the holder of the cluster lease), for the
        conflict policy to deal with.
    """
    files, lock = held.files, held.lock
    try:
        detached = detached_holder(files, load_record(files))
        if detached is not None:
            lock.release()
            return Inspection(held=True, holder=detached, lock_pids=None, detached=True)
        me = current_identity()
        record = encode_own_record(me, name)
        if cluster is not None:
            found = cluster.take(record)
            if found is not None:
                lock.release()
                return found
            held.cluster = cluster
        publish(held)
        _registry.add(held.key, lock.key, instance)
        lineage.carry(me.mark)  # a stop of ours finds the daemons we start
        held.record_written = write_record(files, record)
    except BaseException:
        publish(None)
        _registry.discard(held.key, lock.key)
        _undo(held)
        raise
    return None


def let_go(held: Held) -> None:
    """Release what ``held`` holds, in this process (the one that took it)."""
    _registry.discard(held.key, held.lock.key)
    try:
        _undo(held)
    finally:
        if held.sigterm_held:
            _sigterm.let_go()


def _undo(held: Held) -> None:
    """The lease, the record, then the lock: each attempted, the lock always."""
    try:
        try:
            if held.cluster is not None:
                held.cluster.release()
        finally:
            if held.record_written:
                remove_record(held.files)
    finally:
        held.lock.release()
