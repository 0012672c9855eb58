"""How instances read on the terminal: one line, the status table, JSON objects.

``singleton-proc`` prints holders in three shapes, all from here: a line
naming one (``pid 4242, up 3m 12s, command: python bot.py``), an aligned
table for ``status``, and one JSON object per instance for ``status --json``.
A holder that cannot be identified still shows the pid holding its lock
when the platform can tell (a ``flock(1)`` process, say). A name held across
hosts (``--backend``) shows its host, and in JSON its fence, ttl and last
renewal too.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from singleton_proc import Holder
    from singleton_proc._lock.inspection import Inspection

__all__ = ["as_json", "describe", "human_age", "table"]

#: ``status --json``: one object per instance, with these keys in this order.
JSON_KEYS = (
    "name", "pid", "started_at", "age_seconds", "command", "user", "host", "create_time"
)  # fmt: skip
#: ... and after them, for a lease (``--backend``), these from its record.
LEASE_KEYS = ("fence", "ttl", "renewed")


def human_age(seconds: float) -> str:
    """``45s``, ``3m 12s``, ``2h 05m``, ``4d 3h``: the two largest units.

    Example:
        >>> human_age(192), human_age(7500), human_age(360_000)
        ('3m 12s', '2h 05m', '4d 4h')
    """
    minutes, secs = divmod(int(seconds), 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if days:
        return f"{days}d {hrs}h"
    if hours:
        return f"{hours}h {mins:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _age(found: Holder) -> float:
    """Seconds since ``found`` took the name (never negative)."""
    return max(0.0, (datetime.now(timezone.utc) - found.started_at).total_seconds())


def describe(found: Holder) -> str:
    """``pid 4242, up 3m 12s, command: python bot.py``."""
    return f"pid {found.pid}, up {human_age(_age(found))}, command: {found.command}"


def _lock_pids(inspection: Inspection) -> list[int]:
    """The pids holding a lock whose holder is unknown (``flock(1)``, say)."""
    return sorted(inspection.lock_pids or ())


def as_json(name: str, inspection: Inspection) -> dict[str, object]:
    """One object of ``status --json``; the holder's fields are null if unknown.

    An unknown holder still has its ``pid`` when one process holds the lock.
    """
    lease = _lease_fields(inspection)
    found = inspection.holder
    if found is None:
        pids = _lock_pids(inspection)
        pid = pids[0] if len(pids) == 1 else None
        return {**dict.fromkeys(JSON_KEYS), "name": name, "pid": pid, **lease}
    values = (
        name,
        found.pid,
        found.started_at.isoformat(),
        round(_age(found), 3),
        list(found.cmdline),
        found.user,
        found.host,
        found.create_time,
    )
    return {**dict(zip(JSON_KEYS, values, strict=True)), **lease}


def _lease_fields(inspection: Inspection) -> dict[str, object]:
    """A lease's fence, ttl and renewal time (epoch seconds), from its record."""
    if inspection.lease is None:
        return {}
    record = inspection.lease.record
    fields = json.loads(record) if record is not None else {}
    return {key: fields.get(key) for key in LEASE_KEYS}


def table(found: list[tuple[str, Inspection]], *, hosts: bool = False) -> list[str]:
    """An aligned table: NAME, PID, AGE, COMMAND; HOST after NAME with ``hosts``.

    An unknown holder says why in place of its command.
    """
    rows = [["NAME", "HOST", "PID", "AGE", "COMMAND"]]
    for name, inspection in found:
        h = inspection.holder
        if h is None:
            pid = ",".join(map(str, _lock_pids(inspection))) or "?"
            why = f"(holder unknown: {inspection.reason})"
            rows.append([name, "?", pid, "?", why])
        else:
            rows.append([name, h.host, str(h.pid), human_age(_age(h)), h.command])
    aligns = "<<>>"  # NAME, HOST, PID, AGE; COMMAND is last, as long as it is
    if not hosts:
        rows = [[row[0], *row[2:]] for row in rows]
        aligns = "<>>"
    widths = [max(len(row[col]) for row in rows) for col in range(len(aligns))]
    return [
        "  ".join(
            [
                *(
                    f"{c:{a}{w}}"
                    for c, a, w in zip(row[:-1], aligns, widths, strict=True)
                ),
                row[-1],
            ]
        )
        for row in rows
    ]
