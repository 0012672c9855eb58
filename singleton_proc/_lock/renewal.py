"""The renewal thread of a lease, and the holder's local deadline.

A lease is renewed every ``ttl/3`` from a thread of its own, on a connection
of its own. The holder believes it holds the lease only until its *deadline*:
``2/3·ttl`` after the send time (monotonic clock) of its last successful
renewal, a third of the TTL before the server could expire it. The deadline
is kept here, so asking whether the lease is still held is a clock read,
never a network call. Past it (the server unreachable, the process stopped),
or when a renewal finds the lease gone, someone else's, or asked to step
down, the lease is *lost*: the thread says so once, through ``on_lost``, and
stops.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from singleton_proc._errors import BackendUnavailableError, LeaseLostError

from .lease import RENEWAL_CALL_SHARE

if TYPE_CHECKING:
    from collections.abc import Callable

    from .lease import Backend, Lease

__all__ = ["Renewer"]

_log = logging.getLogger("singleton_proc")

#: Renew this often, as a share of the TTL.
RENEW_EVERY = 1 / 3
#: Believe the lease held this long after a renewal was sent.
BELIEVED_FOR = 2 / 3
#: After a failed renewal, try again this much later (if it can still end by
#: the deadline).
RETRY_AFTER = 1 / 12


class Renewer:
    """Keeps one lease renewed and says when it is lost.

    Args:
        backend: The renewal's own connection (``Backend.for_renewal``);
            closed when the thread ends.
        lease: The name's lease on that connection.
        token: The holder's token.
        ttl: The lease's TTL in seconds.
        sent: When the grant was sent (``time.monotonic()``).
        on_lost: Called once, in the renewal thread, with the error that
            says why, when the lease is lost while still held.
    """

    def __init__(
        self,
        backend: Backend,
        lease: Lease,
        *,
        name: str,
        token: str,
        ttl: float,
        sent: float,
        on_lost: Callable[[LeaseLostError], None],
    ) -> None:
        """Start renewing."""
        self._backend, self._lease, self._name = backend, lease, name
        self._token, self._ttl = token, ttl
        self._renewed = sent
        self.deadline = sent + ttl * BELIEVED_FOR
        self._on_lost = on_lost
        self._lost: LeaseLostError | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"singleton_proc lease {name!r}", daemon=True
        )
        self._thread.start()

    def lost(self) -> LeaseLostError | None:
        """Why the lease is lost, or ``None`` while it is held (no network call)."""
        if self._lost is None and time.monotonic() >= self.deadline:
            return self._error("it was not renewed in time")
        return self._lost

    def answered_lately(self) -> bool:
        """Whether the server answered a renewal within the deadline.

        If not, a release would likely wait for a server that does not
        answer, and the lease is lost anyway.
        """
        return time.monotonic() < self.deadline

    def stop(self) -> None:
        """Stop renewing (before the lease is released): no loss is said after."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(self._ttl * RENEWAL_CALL_SHARE + 1.0)

    def _error(self, why: str) -> LeaseLostError:
        ago = time.monotonic() - self._renewed
        return LeaseLostError(
            f"the lease on {self._name!r} ({self._backend.where}) was lost: {why} "
            f"(last renewed {ago:.1f} s ago, ttl {self._ttl:g} s); another "
            "process may hold the name now, so stop acting on it"
        )

    def _run(self) -> None:
        try:
            why = self._renew_until_lost()
        finally:
            self._backend.close()
        if why is None or self._stopped.is_set():
            return
        self._lost = error = self._error(why)
        try:
            self._on_lost(error)
        except Exception:  # noqa: BLE001  (the user's callback: logged, as threads do)
            _log.exception("on_lost of %r failed", self._name)

    def _renew_until_lost(self) -> str | None:
        """Renew while held: why it was lost, or ``None`` once stopped."""
        ttl = self._ttl
        next_at = self._renewed + ttl * RENEW_EVERY
        failure = "it was not renewed in time"
        while not self._stopped.wait(
            max(0.0, min(next_at, self.deadline) - time.monotonic())
        ):
            sent = time.monotonic()
            if sent >= self.deadline:
                return failure
            if sent + ttl * RENEWAL_CALL_SHARE > self.deadline:
                next_at = self.deadline  # no time for a call that could end late
                continue
            try:
                outcome = self._lease.renew(self._token, ttl)
            except BackendUnavailableError as exc:
                failure = f"the server did not answer ({exc})"
                next_at = time.monotonic() + ttl * RETRY_AFTER
                continue
            if time.monotonic() >= self.deadline:
                return "the renewal was answered after the holder's deadline"
            if outcome == "lost":
                return "the server no longer has it under this holder's token"
            self._renewed = sent
            self.deadline = sent + ttl * BELIEVED_FOR
            if outcome == "asked":  # still ours: the release hands it over
                return "another process asked it to step down (on_conflict='replace')"
            next_at = sent + ttl * RENEW_EVERY
        return None
