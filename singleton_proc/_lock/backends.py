"""Which backend ``backend=`` names: a URL, a ready client, or the environment.

``None`` reads ``$SINGLETON_PROC_BACKEND``; unset or empty, the name is held
on this machine only. redis-py is imported only here, and only when a
backend is named, so ``import singleton_proc`` stays light.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .lease import Backend

__all__ = ["BACKEND_VARIABLE", "open_backend", "opened"]

#: The environment variable that names the backend when ``backend=None``.
BACKEND_VARIABLE = "SINGLETON_PROC_BACKEND"


def _backend_spec(backend: object) -> object:
    """``backend`` as given, or ``$SINGLETON_PROC_BACKEND`` when ``None``.

    An empty variable counts as unset: this machine only.
    """
    if backend is None:
        return os.environ.get(BACKEND_VARIABLE) or None
    return backend


def open_backend(backend: object) -> Backend | None:
    """The backend for ``backend=`` (``None``: this machine only).

    A Redis URL or a ready redis-py client (see
    :mod:`~singleton_proc._lock.redis_clients`). Nothing is connected yet.

    Raises:
        ImportError: redis-py is not installed (names the extra to install).
        ValueError: a string that is not a URL of a known backend.
        TypeError: neither a string nor a client of a known backend.
    """
    spec = _backend_spec(backend)
    if spec is None:
        return None
    try:
        from . import redis_lease  # noqa: PLC0415  (redis-py only when used)
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("redis"):
            raise
        raise ImportError(
            "backend= needs redis-py: pip install 'singleton-proc[redis]'",
            name=exc.name,
        ) from exc
    return redis_lease.open_redis(spec)


@contextlib.contextmanager
def opened(backend: object) -> Iterator[Backend | None]:
    """:func:`open_backend` for one look: its connections closed after."""
    found = open_backend(backend)
    try:
        yield found
    finally:
        if found is not None:
            found.close()
