"""Leases on Redis: one key per name, changed only by scripts that compare tokens.

The keys of a name share one hash tag, so they live in one slot of a Redis
Cluster; the tag is the name percent-encoded (``{`` and ``}`` included), so
no name can break it::

    singleton_proc:{<name>}:lease      the holder's token, with the lease's TTL
    singleton_proc:{<name>}:record     a hash: the holder's record (JSON),
                                       fence, ttl (ms), renewed (server time)
    singleton_proc:{<name>}:stepdown   a token asked to step down
    singleton_proc:{<name>}:fence      the last fence drawn (never expires)
    singleton_proc:{<name>}:released   the pub/sub channel of releases

Each change of state is one ``EVAL``: one round trip, atomic on the server.
The fence is the count of grants, floored by the server's clock in
microseconds, so it still grows after a restart that lost every key.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any, cast

import redis

from singleton_proc._errors import BackendUnavailableError

from .lease import RENEWAL_CALL_SHARE, Granted, Occupied, Renewal
from .redis_clients import (
    CALL_TIMEOUT,
    UNREACHABLE,
    Client,
    close_client,
    follow_primary,
    from_spec,
    renewal_copy,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from typing_extensions import Self

__all__ = ["RedisBackend", "open_redis"]

_PREFIX = "singleton_proc:"
#: A renewal's share of the TTL for each of connect and reply.
_RENEWAL_SHARE = RENEWAL_CALL_SHARE / 2

# KEYS: lease, record, stepdown, fence. Each script is one atomic step.
_LOOK = """
local function look()
  local token = redis.call('GET', KEYS[1])
  if not token then return {0} end
  local r = redis.call('HMGET', KEYS[2], 'json', 'fence', 'ttl', 'renewed')
  return {2, token, r[1], r[2], r[3], r[4], redis.call('PTTL', KEYS[1])}
end
"""
_TAKE = (
    _LOOK
    + """
local token = redis.call('GET', KEYS[1])
if token and token ~= ARGV[1] then return look() end
local fence = redis.call('INCR', KEYS[4])
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
if fence < floor then
  fence = floor
  redis.call('SET', KEYS[4], string.format('%.0f', floor))
end
fence = string.format('%.0f', fence)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'json', ARGV[3], 'fence', fence, 'ttl', ARGV[2],
           'renewed', now[1] .. '.' .. string.format('%06d', tonumber(now[2])))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {1, fence}
"""
)
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local now = redis.call('TIME')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'renewed',
           now[1] .. '.' .. string.format('%06d', tonumber(now[2])))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then return 2 end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[2], 'released')
return 1
"""
_ASK = """
local ttl = redis.call('PTTL', KEYS[1])
if redis.call('GET', KEYS[1]) ~= ARGV[1] or ttl <= 0 then return 0 end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ttl)
return 1
"""
_REVOKE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local left = math.max(redis.call('PTTL', KEYS[1]), 0)
redis.call('SET', KEYS[1], ARGV[2], 'PX', left + tonumber(ARGV[3]))
redis.call('DEL', KEYS[2], KEYS[3])
return left
"""
_RENEWALS: dict[int, Renewal] = {0: "lost", 1: "held", 2: "asked"}


def _ms(seconds: float) -> int:
    """Whole milliseconds, at least one."""
    return max(1, round(seconds * 1000))


class RedisLease:
    """One name's lease on a Redis server (see the module's key layout)."""

    def __init__(self, backend: RedisBackend, name: str) -> None:
        """Compute the name's keys; nothing is sent."""
        prefix = f"{_PREFIX}{{{urllib.parse.quote(name, safe='')}}}:"
        self._backend = backend
        self._keys = [
            prefix + part for part in ("lease", "record", "stepdown", "fence")
        ]
        self._channel = prefix + "released"

    def _eval(self, script: str, *args: str | bytes | int) -> Any:
        """Run ``script`` on the name's keys, on the primary of now.

        Every call follows a Sentinel failover at once (see
        :func:`.redis_clients.follow_primary`): a release sent to the old
        primary would leave the lease held on the new one.
        """

        def run(client: Client) -> Any:
            follow_primary(client)
            return client.eval(script, len(self._keys), *self._keys, *args)

        return self._backend.call(run)

    def take(self, token: str, ttl: float, record: bytes) -> Granted | Occupied:
        reply = self._eval(_TAKE, token, _ms(ttl), record)
        if reply[0] == 1:
            return Granted(int(reply[1]))
        occupied = _occupied(reply)
        if occupied is None:  # expired between our GET and look(): cannot be
            msg = f"{self._backend.where}: the lease vanished within one script"
            raise BackendUnavailableError(msg)
        return occupied

    def renew(self, token: str, ttl: float) -> Renewal:
        return _RENEWALS[int(self._eval(_RENEW, token, _ms(ttl)))]

    def release(self, token: str) -> None:
        self._eval(_RELEASE, token, self._channel)

    def ask_to_step_down(self, token: str) -> bool:
        return bool(self._eval(_ASK, token))

    def revoke(self, token: str, keeper: str, linger: float) -> float | None:
        left = int(self._eval(_REVOKE, token, keeper, _ms(linger)))
        return None if left < 0 else left / 1000

    def look(self) -> Occupied | None:
        return _occupied(self._eval(_LOOK + "return look()"))

    def watch(self) -> RedisWatch:
        return RedisWatch(self._backend, self._channel)


def _occupied(reply: list[Any]) -> Occupied | None:
    """The holder :data:`_LOOK` found, its record with fence, ttl and renewed."""
    if reply[0] != 2:  # noqa: PLR2004  (the script's "held" answer)
        return None
    token, raw, fence, ttl, renewed, pttl = reply[1:7]
    record: bytes | None = None
    if raw is not None:
        try:
            fields = json.loads(raw)
            fields.update(fence=int(fence), ttl=int(ttl) / 1000, renewed=float(renewed))
            record = json.dumps(fields).encode()
        except (ValueError, TypeError, AttributeError):
            record = None  # not ours, or damaged: unknown, like a local record
    return Occupied(_text(token), record, max(0, int(pttl)) / 1000)


def _text(value: bytes | str) -> str:
    """A reply as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else value


class RedisWatch:
    """A subscription to one name's releases, confirmed before it is used.

    Classic pub/sub, not sharded (``SSUBSCRIBE``): it works on every server
    version, and in a Redis Cluster a ``PUBLISH`` reaches every node, so
    the subscriber may sit on any of them. A release is one small message.
    """

    def __init__(self, backend: RedisBackend, channel: str) -> None:
        """Subscribe, and read the server's confirmation."""
        self._backend = backend
        self._pubsub = backend.call(lambda client: client.pubsub())
        try:
            backend.call(lambda _: self._subscribe(channel))
        except BaseException:
            self.close()
            raise

    def _subscribe(self, channel: str) -> None:
        self._pubsub.subscribe(channel)
        deadline = time.monotonic() + CALL_TIMEOUT
        while self._pubsub.get_message(timeout=CALL_TIMEOUT) is None:
            if time.monotonic() >= deadline:  # the confirmation never came
                raise redis.exceptions.TimeoutError("no answer to SUBSCRIBE")

    def released(self, wait: float = 0.0) -> bool:
        """Whether a release was announced; ``True`` also when the connection broke.

        A release announced while the subscription was down is lost, so the
        caller looks again; the next call reconnects and subscribes again.
        """
        seen = False
        try:
            message = self._pubsub.get_message(timeout=wait)
            while message is not None:
                seen = seen or message["type"] == "message"
                message = self._pubsub.get_message(timeout=0)
        except UNREACHABLE:
            return True
        return seen

    def close(self) -> None:
        with contextlib.suppress(*UNREACHABLE):
            self._pubsub.close()


class RedisBackend:
    """A Redis server or cluster reached by one client, and where it is for messages."""

    def __init__(self, make: Callable[[], Client], where: str, *, owned: bool) -> None:
        """Get the client from ``make()`` when first used.

        ``owned``: ``make`` builds a client of ours, which keeps its
        connections between acquires and closes them when this object is
        closed or collected; otherwise it returns the caller's. A client
        made at the first call (a cluster client connects as it is made)
        fails that call, as an unreachable server does, rather than the
        caller.
        """
        self.where = where
        self._make = make
        self._owned = owned
        self._client: Client | None = None
        self._close: weakref.finalize[Any, Any] | None = None
        self._making = threading.Lock()  # a quiet release may run in a thread

    @property
    def client(self) -> Client:
        """The client, made now if it was not yet (may raise as a call does)."""
        with self._making:
            if self._client is None:
                self._client = self._make()
                if self._owned:
                    self._close = weakref.finalize(self, close_client, self._client)
            return self._client

    def __repr__(self) -> str:
        """Where it is (never a password)."""
        return f"RedisBackend({self.where!r})"

    def call(self, action: Callable[[Client], Any]) -> Any:
        """Run ``action`` on the client; an unreachable server is our error."""
        try:
            return action(self.client)
        except UNREACHABLE as exc:
            raise BackendUnavailableError(f"{self.where}: {exc}") from None
        except redis.exceptions.ReadOnlyError as exc:
            msg = f"{self.where} is a read-only replica: {exc}"
            raise BackendUnavailableError(msg) from None

    def lease(self, name: str) -> RedisLease:
        return RedisLease(self, name)

    def names(self) -> list[str]:
        def scan(client: Client) -> list[str]:
            keys = client.scan_iter(match=f"{_PREFIX}{{*}}:lease", count=1000)
            return [
                urllib.parse.unquote(_text(key)[len(_PREFIX) + 1 : -len("}:lease")])
                for key in keys
            ]

        return cast("list[str]", self.call(scan))

    def for_renewal(self, ttl: float) -> Self:
        client = self.client
        timeout = ttl * _RENEWAL_SHARE
        return type(self)(lambda: renewal_copy(client, timeout), self.where, owned=True)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def open_redis(spec: object) -> RedisBackend:
    """A backend for a Redis URL or a ready client (see :mod:`.redis_clients`)."""
    make, where, owned = from_spec(spec)
    return RedisBackend(make, where, owned=owned)
