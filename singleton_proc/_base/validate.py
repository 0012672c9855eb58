"""One check per meaning of a number the public API takes, each with one message.

Every entry point that takes a task's time limit, a wait, a grace period, a
worker count or a chunk size checks it here, so the same value gets the
same answer (and the same words) everywhere. A ``bool`` is never a number
here, though Python counts it as one; a wrong type is a ``TypeError``, a
wrong value a ``ValueError``, raised when the call is made, before
anything starts.

Example:
    >>> task_timeout(2.5)
    2.5
    >>> wait_timeout(0)
    0.0
    >>> grace(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: grace must be >= 0 seconds and finite, not nan
"""

from __future__ import annotations

import math

__all__ = [
    "chunk_size",
    "grace",
    "lease_ttl",
    "task_timeout",
    "tasks_per_worker",
    "wait_timeout",
    "worker_count",
]


def task_timeout(value: object) -> float | None:
    """How long a task may run: ``None`` (no limit) or seconds, > 0 and finite."""
    if value is None:
        return None
    seconds = _seconds("timeout", value, "or None")
    if not 0 < seconds < math.inf:  # NaN fails too
        raise ValueError(
            f"timeout must be > 0 seconds and finite, or None, not {value!r}"
        )
    return seconds


def wait_timeout(value: object) -> float | None:
    """How long to wait: seconds >= 0 (``0``: look once), or ``None`` for ever.

    Infinity is for ever too, and returned as ``None`` (a wait of ``inf``
    seconds overflows the OS's timers).
    """
    if value is None:
        return None
    seconds = _seconds("timeout", value, "or None")
    if not seconds >= 0:  # NaN fails too
        raise ValueError(f"timeout must be >= 0 seconds, or None, not {value!r}")
    return None if seconds == math.inf else seconds


def grace(value: object) -> float:
    """Seconds between SIGTERM and SIGKILL: >= 0 and finite."""
    seconds = _seconds("grace", value)
    if not 0 <= seconds < math.inf:  # NaN fails too
        raise ValueError(f"grace must be >= 0 seconds and finite, not {value!r}")
    return seconds


#: The shortest lease: renewed every 33 ms, a renewal call may take 16 ms.
MIN_TTL = 0.1


def lease_ttl(value: object) -> float:
    """How long a lease lasts unless renewed: seconds >= 0.1, finite."""
    seconds = _seconds("ttl", value)
    if not MIN_TTL <= seconds < math.inf:  # NaN fails too
        raise ValueError(f"ttl must be >= {MIN_TTL} seconds and finite, not {value!r}")
    return seconds


def worker_count(value: object, name: str = "n") -> int:
    """How many workers: an ``int`` >= 1 (``name``: as the caller spelled it)."""
    return _count(name, value)


def chunk_size(value: object) -> int:
    """How many items a chunk holds: an ``int`` >= 1."""
    return _count("chunksize", value)


def tasks_per_worker(value: object) -> int | None:
    """``max_tasks_per_child``: ``None`` (no limit) or an ``int`` >= 1."""
    return None if value is None else _count("max_tasks_per_child", value)


def _seconds(name: str, value: object, alternative: str = "") -> float:
    """``value`` as a float, if it is an ``int`` or a ``float`` (not a ``bool``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        also = f" {alternative}" if alternative else ""
        raise TypeError(
            f"{name} must be a number of seconds{also}, not {type(value).__name__}"
        )
    return float(value)


def _count(name: str, value: object) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value
