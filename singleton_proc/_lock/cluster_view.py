"""Leases seen and stepped down from outside: who holds one, every one, a step-down.

The introspection functions (``holder``, ``is_running``, ``list_instances``)
and ``terminate`` use these with ``backend=``; ``"wait"`` and ``"replace"``
use the same waits. A holder's record is believed only while its lease
exists (both are read by one script). A step-down is a request aimed at the
holder's token; the cluster layer never signals a process.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

from singleton_proc._base.waits import SIGNAL_SLICE

from .record import decode_record

if TYPE_CHECKING:
    from collections.abc import Generator

    from singleton_proc._base.holder import Holder

    from .lease import Backend, Lease, Occupied, Watch

__all__ = [
    "asking_to_step_down",
    "held_across",
    "leases",
    "look_across",
    "remote_holder",
    "stepping_down",
    "until_released",
]

_log = logging.getLogger("singleton_proc")


def remote_holder(name: str, occupied: Occupied) -> Holder | None:
    """The holder a lease's record names, or ``None`` if it has no readable one."""
    return None if occupied.record is None else decode_record(occupied.record, name)


def look_across(backend: Backend, name: str) -> tuple[Occupied, Holder | None] | None:
    """The lease on ``name`` and its holder, or ``None`` when nobody holds it."""
    occupied = backend.lease(name).look()
    return None if occupied is None else (occupied, remote_holder(name, occupied))


def leases(
    backend: Backend, names: list[str] | None = None
) -> list[tuple[str, Occupied]]:
    """The held leases among ``names`` (``None``: every one on ``backend``), by name."""
    found = []
    for name in sorted(backend.names() if names is None else names):
        occupied = backend.lease(name).look()
        if occupied is not None:
            found.append((name, occupied))
    return found


def held_across(backend: Backend) -> list[Holder]:
    """The holders of every lease on ``backend`` that has a readable record."""
    found = (remote_holder(name, occupied) for name, occupied in leases(backend))
    return [one for one in found if one is not None]


def until_released(watch: Watch, seconds: float) -> Generator[float, None, None]:
    """Wait until a release is announced, or ``seconds`` have passed.

    Each step waits on the subscription itself, a slice at a time (a Ctrl-C
    lands between slices), so the release wakes it at once.
    """
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if watch.released(min(SIGNAL_SLICE, left)):
            return
        yield 0.0


def asking_to_step_down(
    lease: Lease,
    occupied: Occupied,
    watch: Watch,
    *,
    name: str,
    grace: float,
    keeper: tuple[str, float],
) -> Generator[float, None, float | None]:
    """Ask the holder of ``occupied`` to step down; after ``grace``, revoke it.

    The holder's next renewal (within a third of its TTL) sees the request
    and takes its ``on_lost`` path. A revoked lease is kept under
    ``keeper``'s token for as long as the old holder may still believe it
    holds it (until its lease would have expired), so no one else takes the
    name meanwhile. ``keeper`` is that token and how much longer to keep it.

    Returns:
        Seconds the key is kept under ``keeper`` when the lease was revoked;
        ``None`` when the holder let go by itself (or had already).
    """
    if not lease.ask_to_step_down(occupied.token):
        return None
    _log.info("asked the holder of %r to step down", name)
    yield from until_released(watch, grace)
    token, linger = keeper
    keep = lease.revoke(occupied.token, token, linger)
    if keep is None:
        return None
    _log.warning(
        "the holder of %r did not step down within %g s: its lease is revoked "
        "and kept for %g s, until it can no longer believe it holds it",
        name,
        grace,
        keep,
    )
    return keep


def stepping_down(
    backend: Backend, name: str, grace: float
) -> Generator[float, None, tuple[bool, Holder | None]]:
    """``terminate`` across hosts: ask the holder to go, revoke after ``grace``.

    Returns:
        Whether a lease was held, and its holder (``None`` if unreadable).
    """
    lease = backend.lease(name)
    watch = lease.watch()
    try:
        occupied = lease.look()
        if occupied is None:
            return False, None
        tombstone = (secrets.token_hex(16), 0.0)  # nobody's: it only expires
        yield from asking_to_step_down(
            lease, occupied, watch, name=name, grace=grace, keeper=tombstone
        )
        return True, remote_holder(name, occupied)
    finally:
        watch.close()
