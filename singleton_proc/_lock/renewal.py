"""The renewal thread of a lease, and the holder's local deadline.

A lease is renewed every ``ttl/3`` from a thread of its own, on a connection
of its own. The holder believes it holds the lease only until its *deadline*:
``2/3·ttl`` after the send time (monotonic clock) of its last successful
renewal, a third of the TTL before the server could expire it. The deadline
is kept here, so asking whether the lease is still held is a clock read,
never a network call. Past it (the server unreachable, the process stopped),
or when a renewal finds the lease gone, someone else's, or asked to step
down, the lease is *lost*: ``on_lost`` is told once. The process's lease
clock (``lease_clock``) watches the deadline, so the loss is told on time
even while a renewal call hangs where no socket timeout reaches (a name
lookup, say); it also starts the renewal thread, when the first renewal is
due, so a hold shorter than ``ttl/3`` starts no thread and opens no
connection. Whatever a renewal call raises only counts as a failed renewal.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from singleton_proc._errors import LeaseLostError

from . import lease_clock
from .lease import RENEWAL_CALL_SHARE

if TYPE_CHECKING:
    from collections.abc import Callable

    from .lease import Backend

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
        connect: Makes the renewal's own connection (``Backend.for_renewal``)
            when the first renewal is due; closed when the renewals end.
        where: Where the backend is, for messages.
        name: The name.
        token: The holder's token.
        ttl: The lease's TTL in seconds.
        sent: When the grant was sent (``time.monotonic()``).
        on_lost: Called once, in a thread of the lease's, with the error that
            says why, when the lease is lost while still held.
    """

    def __init__(
        self,
        connect: Callable[[], Backend],
        *,
        where: str,
        name: str,
        token: str,
        ttl: float,
        sent: float,
        on_lost: Callable[[LeaseLostError], None],
    ) -> None:
        """Watch the deadline; renew from a thread of its own once it is due."""
        self._connect, self._where, self._name = connect, where, name
        self._token, self._ttl = token, ttl
        self._renewed = sent
        self.deadline = sent + ttl * BELIEVED_FOR
        self._first_renewal = sent + ttl * RENEW_EVERY
        self._failure = "it was not renewed in time"
        self._on_lost = on_lost
        self._lost: LeaseLostError | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()  # guards the fields above
        lease_clock.at(self._first_renewal, self._tick)
        lease_clock.at(self.deadline, self._tick)

    def lost(self) -> LeaseLostError | None:
        """Why the lease is lost, or ``None`` while it is held (no network call)."""
        if self._lost is None and time.monotonic() >= self.deadline:
            return self._error(self._failure)
        return self._lost

    def answered_lately(self) -> bool:
        """Whether the server answered a renewal within the deadline.

        If not, a release would likely wait for a server that does not
        answer, and the lease is lost anyway.
        """
        return time.monotonic() < self.deadline

    def stop(self) -> None:
        """Stop renewing (before the lease is released): no loss is said after."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            thread = self._thread
        lease_clock.forget(self._tick)
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._ttl * RENEWAL_CALL_SHARE + 1.0)

    def _error(self, why: str) -> LeaseLostError:
        ago = time.monotonic() - self._renewed
        return LeaseLostError(
            f"the lease on {self._name!r} ({self._where}) was lost: {why} "
            f"(last renewed {ago:.1f} s ago, ttl {self._ttl:g} s); another "
            "process may hold the name now, so stop acting on it"
        )

    def _tick(self) -> None:
        """In the clock's thread: start the renewals when due; at the deadline, lose.

        Quick, never waiting: the user's ``on_lost`` runs in a thread of its own.
        """
        with self._changed:
            if self._stopped or self._lost is not None:
                return
            now = time.monotonic()
            if now >= self.deadline:
                self._lost = error = self._error(self._failure)
                self._changed.notify_all()
            else:
                if self._thread is None and now >= self._first_renewal:
                    self._thread = threading.Thread(
                        target=self._renew,
                        name=f"singleton_proc lease {self._name!r}",
                        daemon=True,
                    )
                    self._thread.start()
                return
        threading.Thread(target=self._tell, args=(error,), daemon=True).start()

    def _lose(self, why: str) -> None:
        """In the renewal thread: say the loss once (unless stopped)."""
        with self._changed:
            if self._stopped or self._lost is not None:
                return
            self._lost = error = self._error(why)
            self._changed.notify_all()
        self._tell(error)

    def _tell(self, error: LeaseLostError) -> None:
        try:
            self._on_lost(error)
        except Exception:  # noqa: BLE001  (the user's callback: logged, as threads do)
            _log.exception("on_lost of %r failed", self._name)

    def _renew(self) -> None:
        """Renew every ``ttl/3`` until stopped or lost, on a connection of its own."""
        backend = self._connect()
        try:
            self._renew_until_lost(backend)
        finally:
            backend.close()

    def _renew_until_lost(self, backend: Backend) -> None:
        ttl, lease = self._ttl, backend.lease(self._name)
        next_at = self._first_renewal
        while True:
            with self._changed:
                while not self._stopped and self._lost is None:
                    left = min(next_at, self.deadline) - time.monotonic()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                sent = time.monotonic()
                if self._stopped or self._lost is not None or sent >= self.deadline:
                    return  # the clock says a loss at the deadline
            if sent + ttl * RENEWAL_CALL_SHARE > self.deadline:
                next_at = self.deadline  # no time for a call that could end late
                continue
            try:
                outcome = lease.renew(self._token, ttl)
            except Exception as exc:  # noqa: BLE001  (any failure is a failed renewal)
                self._failure = f"the server did not renew it ({exc})"
                next_at = time.monotonic() + ttl * RETRY_AFTER
                continue
            if outcome == "lost":
                self._lose("the server no longer has it under this holder's token")
                return
            with self._changed:
                if time.monotonic() >= self.deadline:
                    return  # answered too late: the clock says so
                self._renewed = sent
                self.deadline = sent + ttl * BELIEVED_FOR
            lease_clock.at(self.deadline, self._tick)
            if outcome == "asked":  # still ours: the release hands it over
                self._lose(
                    "another process asked it to step down (on_conflict='replace')"
                )
                return
            next_at = sent + ttl * RENEW_EVERY
