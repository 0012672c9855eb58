"""The seam for names held across hosts: what a lease backend must do.

``SingleInstance(backend=...)`` takes the local lock first, then a *lease*:
a record on a shared server that names one holder by a random token, expires
unless renewed, and carries a fencing token that grows with every grant.
The policies (raise, exit, wait, replace), the renewal thread and the
instance speak only to :class:`Lease`; Redis is one implementation
(``redis_lease``). Another engine with atomic compare-and-set and expiry
(PostgreSQL advisory locks, an etcd lease with its revision as the fence, a
Kubernetes Lease) plugs in here by implementing the same methods, without
touching the policy code.

Every method that changes state compares the caller's token on the server,
in one atomic step: nobody ever extends, releases or revokes a lease that is
not theirs. A method raises :class:`~singleton_proc.BackendUnavailableError`
when the server cannot be reached or does not answer in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "RENEWAL_CALL_SHARE",
    "Backend",
    "Granted",
    "Lease",
    "Occupied",
    "Renewal",
    "Watch",
]

#: The longest a call of :meth:`Backend.for_renewal`'s lease may take, as a
#: share of the TTL: a renewal started this long before the deadline ends by it.
RENEWAL_CALL_SHARE = 1 / 6

#: What a renewal found: still ours; gone or someone else's; or still ours,
#: but a newcomer asked us to step down.
Renewal = Literal["held", "lost", "asked"]


@dataclass(frozen=True)
class Granted:
    """The lease is ours: its fencing token."""

    fence: int


@dataclass(frozen=True)
class Occupied:
    """Another token holds the lease.

    Attributes:
        token: The holder's token (to aim a step-down request at it).
        record: The holder's record (the JSON a local record holds, with the
            ``fence``, ``ttl`` and ``renewed`` fields added), or ``None``
            while the holder has not written it.
        expires_in: Seconds until the lease expires unless renewed.
    """

    token: str
    record: bytes | None
    expires_in: float


class Watch(Protocol):
    """A subscription to a name's releases, opened before the first try."""

    def released(self, wait: float = 0.0) -> bool:
        """Whether a release was announced since the last call.

        Waits up to ``wait`` seconds for one (and only as long as that).
        """

    def close(self) -> None:
        """Unsubscribe and close the connection."""


class Lease(Protocol):
    """One name on one backend: the operations the policies are written in."""

    def take(self, token: str, ttl: float, record: bytes) -> Granted | Occupied:
        """Grant the lease to ``token`` if it is free (or ``token``'s already).

        A grant draws a new fence and stores ``record`` beside the lease,
        with the same expiry. Taking a lease that is already ``token``'s
        counts as a grant, so a retry whose first reply was lost is safe.
        """

    def renew(self, token: str, ttl: float) -> Renewal:
        """Extend ``token``'s lease (and its record) to ``ttl`` from now."""

    def release(self, token: str) -> None:
        """Delete ``token``'s lease and record and announce the release."""

    def ask_to_step_down(self, token: str) -> bool:
        """Ask the holder of ``token`` to let go; ``False`` if it holds no more."""

    def revoke(self, token: str, keeper: str, linger: float) -> float | None:
        """Put ``keeper``'s token in place of ``token``'s, in the same key.

        The key stays occupied until ``token``'s lease would have expired
        (its holder cannot believe it holds it past that) and ``linger``
        seconds more, so no third process takes the name meanwhile.

        Returns:
            The seconds until ``token``'s lease would have expired; ``None``
            when the lease is not ``token``'s any more.
        """

    def look(self) -> Occupied | None:
        """Who holds the lease now, without changing anything."""

    def watch(self) -> Watch:
        """Subscribe to this name's releases."""


class Backend(Protocol):
    """A server that grants leases (one client, shared by the names on it)."""

    #: Where it is, for messages: never with a password.
    where: str

    def lease(self, name: str) -> Lease:
        """The lease of ``name`` on this backend (no network call)."""

    def names(self) -> list[str]:
        """The names that have a lease on this backend now."""

    def for_renewal(self, ttl: float) -> Self:
        """The same server on a connection of its own, for a renewal thread.

        Its timeouts are short and it never retries: no call takes longer
        than ``RENEWAL_CALL_SHARE * ttl``, so none outlasts the deadline.
        """

    def close(self) -> None:
        """Close the connections this object opened (not a caller's client)."""
