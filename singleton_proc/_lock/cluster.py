"""A name held across hosts: the lease taken after the local lock, and its conflicts.

:class:`ClusterName` is what a ``SingleInstance(backend=...)`` adds to the
local lock: a token per acquire, the lease taken with it, the renewal thread
while held, and the release. When another token holds the lease, the policy
engine (``policy``) raises or exits as for a local holder, and for ``"wait"``
and ``"replace"`` runs :meth:`ClusterName.waiting` and
:meth:`ClusterName.replacing`: a wait woken by the release's announcement or
the lease's expiry, and a step-down request that turns into a revocation
after ``grace``. The cluster layer never signals a process.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Literal, Union

from singleton_proc._base import platform, validate
from singleton_proc._errors import BackendUnavailableError, LeaseLostError

from .backends import open_backend
from .cluster_view import (
    asking_to_step_down,
    leases,
    remote_holder,
    until_released,
)
from .inspection import Inspection
from .lease import Occupied
from .renewal import Renewer

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from .lease import Backend, Watch

__all__ = ["ClusterName", "OnLost", "cluster_name", "lease_inspections"]

_log = logging.getLogger("singleton_proc")

#: What to do when a held lease is lost (see ``SingleInstance``).
OnLost = Union[Literal["exit", "raise"], "Callable[[LeaseLostError], object]"]


def cluster_name(
    backend: object, name: str, ttl: float, on_lost: OnLost
) -> ClusterName | None:
    """The cluster side of a ``SingleInstance``, or ``None`` for this machine only.

    Raises:
        ValueError, TypeError: a bad ``backend``, ``ttl`` or ``on_lost``.
        ImportError: a backend is asked for and redis-py is not installed.
    """
    if not (on_lost in ("exit", "raise") or callable(on_lost)):
        msg = f"on_lost must be 'exit', 'raise' or a callable, not {on_lost!r}"
        raise ValueError(msg)
    seconds = validate.lease_ttl(ttl)
    opened = open_backend(backend)
    return None if opened is None else ClusterName(opened, name, seconds, on_lost)


class ClusterName:
    """One instance's lease: taken after the local lock, renewed, let go."""

    def __init__(
        self, backend: Backend, name: str, ttl: float, on_lost: OnLost
    ) -> None:
        """Hold ``name`` on ``backend`` for ``ttl`` seconds at a time."""
        self.backend, self.name, self.ttl, self.on_lost = backend, name, ttl, on_lost
        self.lease = backend.lease(name)
        self.token = ""
        self.fence: int | None = None
        self.keeping = False  # a revoked lease is kept under our token
        self._renewer: Renewer | None = None
        self._lost_then: LeaseLostError | None = None  # at the last release
        self._mutex = threading.Lock()

    def copy(self) -> ClusterName:
        """An unheld twin on the same backend."""
        return ClusterName(self.backend, self.name, self.ttl, self.on_lost)

    def new_token(self) -> None:
        """Draw the token of the next acquire (a retried acquire keeps it)."""
        self.token = secrets.token_hex(16)

    def watch(self) -> Watch:
        """Subscribe to releases, before the first try, for a wait or replace."""
        return self.lease.watch()

    def take(self, record: bytes) -> Inspection | None:
        """Take the lease after the local lock: ``None`` once held.

        Otherwise the inspection of its holder, for the policy. If the call
        fails with the outcome unknown (no answer in time), a release by our
        token is tried, so no key is left under it beyond its TTL.
        """
        sent = time.monotonic()
        try:
            got = self.lease.take(self.token, self.ttl, record)
        except BackendUnavailableError:
            # It may have been granted, the answer lost: let go of it in the
            # background, the error raised at once (it says enough).
            threading.Thread(
                target=self._release_quietly,
                kwargs={"token": self.token, "say": False},
                name=f"singleton_proc release {self.name!r}",
                daemon=True,
            ).start()
            raise
        if isinstance(got, Occupied):
            return _lease_inspection(self.name, self.backend.where, got)
        self.fence = got.fence
        self.keeping = False
        self._lost_then = None
        self._renewer = Renewer(
            functools.partial(self.backend.for_renewal, self.ttl),
            where=self.backend.where,
            name=self.name,
            token=self.token,
            ttl=self.ttl,
            sent=sent,
            on_lost=self._lose,
        )
        return None

    def drop_kept(self) -> None:
        """At the end of an acquire: let go of a kept key not taken after all."""
        if self.keeping:
            self.keeping = False
            self._release_quietly()

    def lost(self) -> LeaseLostError | None:
        """Why the held lease is (or was, once released) lost; no network call."""
        renewer = self._renewer
        return self._lost_then if renewer is None else renewer.lost()

    def release(self) -> None:
        """Stop renewing and release the lease (if it is still ours).

        Once: a second call (``async with`` releases the lease in a thread,
        then the rest) finds nothing to do.
        """
        with self._mutex:
            renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.stop()
            self._lost_then = renewer.lost()
            if renewer.answered_lately():  # else lost to a silent server
                self._release_quietly()
            self.fence = None

    def abandon(self) -> None:
        """In a forked child: forget the lease; the parent's thread renews it."""
        self._renewer = None
        self.fence = None

    def _release_quietly(self, *, token: str = "", say: bool = True) -> None:
        """Release by our token; unreachable, the key expires within the TTL."""
        try:
            self.lease.release(token or self.token)
        except BackendUnavailableError as exc:
            if say:
                _log.warning(
                    "could not release the lease on %r (%s); it expires within %g s",
                    self.name,
                    exc,
                    self.ttl,
                )

    def _lose(self, error: LeaseLostError) -> None:
        """In the renewal thread: apply ``on_lost``."""
        if self.on_lost == "exit":  # as if SIGTERM came (see SingleInstance)
            _log.warning("%s; exiting", error)  # SystemExit alone would not say
            platform.sigterm_self()
        elif callable(self.on_lost):
            self.on_lost(error)

    def waiting(
        self, held: Inspection, watch: Watch, limit: float
    ) -> Generator[float, None, None]:
        """Until a release is announced, the lease can expire, or ``limit`` s."""
        assert held.lease is not None  # noqa: S101  (a lease conflict)
        yield from until_released(watch, min(held.lease.expires_in, limit))

    def replacing(
        self, held: Inspection, watch: Watch, grace: float
    ) -> Generator[float, None, None]:
        """Ask the holder to step down; after ``grace``, revoke its lease.

        A revoked lease stays under our token while its holder may still
        believe it holds it, so no third process takes the name meanwhile;
        then the next try takes it (ours already). If the acquire ends
        without it (interrupted, or the local lock taken meanwhile), the
        policy lets go of the key with :meth:`drop_kept`.
        """
        assert held.lease is not None  # noqa: S101  (a lease conflict)
        keeper = (self.token, self.ttl)
        keep = yield from asking_to_step_down(
            self.lease, held.lease, watch, name=self.name, grace=grace, keeper=keeper
        )
        if keep is None:
            return  # it let go: try again
        self.keeping = True  # until taken, or let go by drop_kept()
        end = time.monotonic() + keep
        while (left := end - time.monotonic()) > 0:
            yield left


def _lease_inspection(name: str, where: str, occupied: Occupied) -> Inspection:
    """What a policy needs to know of a lease held by another token."""
    holder = remote_holder(name, occupied)
    reason = f"the lease on {where} has no readable record" if holder is None else ""
    return Inspection(
        held=True, holder=holder, lock_pids=None, reason=reason, lease=occupied
    )


def lease_inspections(
    backend: Backend, name: str | None = None
) -> list[tuple[str, Inspection]]:
    """``name``'s lease (``None``: every one on ``backend``), as ``status`` shows it."""
    return [
        (one, _lease_inspection(one, backend.where, occupied))
        for one, occupied in leases(backend, None if name is None else [name])
    ]
