"""Redis clients for leases: a server, a Sentinel primary or a Redis Cluster.

A backend is a URL or a ready client:

- ``redis://``, ``rediss://``, ``unix://``: one server (``redis.Redis``);
- ``redis+cluster://host:port`` (or ``rediss+cluster://``): a Redis
  Cluster, discovered from that node (``RedisCluster``);
- a ready ``redis.Redis`` (``Sentinel(...).master_for(...)`` is one) or
  ``redis.cluster.RedisCluster``, used as configured.

A renewal gets a copy of the client with short timeouts and no retries of
redis-py's, so that each of its calls ends within its share of the TTL (a
cluster's or Sentinel's discovery may take a few shares when nodes are
down: the lease clock says a loss on time regardless). Through Sentinel,
each call first asks where the primary is, so that nothing is written to
a primary that was just failed over (:func:`follow_primary`).
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any, Union

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from singleton_proc._base.holder import hide_passwords

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CALL_TIMEOUT",
    "UNREACHABLE",
    "Client",
    "close_client",
    "follow_primary",
    "from_spec",
    "renewal_copy",
]

#: What a backend can be reached through.
Client = Union[redis.Redis, RedisCluster]  # noqa: UP007  (a runtime alias)
#: Each of connect and reply, for acquire and release: a server that cannot
#: be reached, or accepts and never answers, fails a call within 10 s.
CALL_TIMEOUT = 5.0
#: What "the backend cannot be reached" looks like; a cluster adds its own:
#: slots not served (during a failover) and no node reachable.
UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)
_SERVER_SCHEMES = ("redis", "rediss", "unix")
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEMES_TEXT = "redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"
#: Settings of a node's connections that a cluster client's copy carries
#: over (besides every ``ssl_*`` one): who it is and how it speaks.
_CARRIED = (
    "username",
    "password",
    "credential_provider",
    "client_name",
    "lib_name",
    "lib_version",
    "driver_info",
    "protocol",
    "encoding",
    "encoding_errors",
    "decode_responses",
    "socket_keepalive",
    "socket_keepalive_options",
    "socket_read_size",
)


def _no_retry() -> Retry:
    """redis-py's retries off: ours decide (acquire once, renewal by the deadline)."""
    return Retry(NoBackoff(), 0)


def from_spec(spec: object) -> tuple[Callable[[], Client], str, bool]:
    """How to get the client for ``backend=``, where it is, and whether it is ours.

    A URL is checked now and its client made later, at the first call (a
    cluster client connects as it is made); a ready client is the caller's.
    ``where`` has no password.

    Raises:
        ValueError: a string that is not a URL of a known scheme, or a bad URL.
        TypeError: neither a string nor a client.
    """
    if isinstance(spec, (redis.Redis, RedisCluster)):
        return (lambda: spec), _where(spec), False
    if not isinstance(spec, str):
        msg = (
            f"backend must be a {_SCHEMES_TEXT} URL, a redis.Redis or a "
            f"RedisCluster client, not {type(spec).__name__}"
        )
        raise TypeError(msg)
    where = hide_passwords(spec)
    scheme = urllib.parse.urlsplit(spec).scheme
    if scheme not in _SERVER_SCHEMES and scheme not in _CLUSTER_SCHEMES:
        msg = f"backend must be a {_SCHEMES_TEXT} URL, not {where!r}"
        raise ValueError(msg)
    url = _CLUSTER_SCHEMES.get(scheme, scheme) + spec[len(scheme) :]
    try:
        options = parse_url(url)
    except ValueError:  # its message may quote the password: not repeated
        msg = f"backend URL {where!r} is not valid: check its port, database, options"
        raise ValueError(msg) from None
    settings: dict[str, Any] = {
        "socket_connect_timeout": CALL_TIMEOUT,
        "socket_timeout": CALL_TIMEOUT,
        "retry": _no_retry(),
    }
    if scheme in _CLUSTER_SCHEMES:
        if options.get("db", 0) != 0 or not options.get("host"):
            msg = (
                f"backend URL {where!r}: a Redis Cluster URL names a node's "
                "host and port, and no database but 0"
            )
            raise ValueError(msg)
        return (lambda: RedisCluster.from_url(url, **settings)), where, True
    settings["health_check_interval"] = 0
    return (lambda: redis.Redis.from_url(url, **settings)), where, True


def _where(client: Client) -> str:
    """Where a ready client connects, for messages."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        return f"the Redis Cluster of {node.host}:{node.port}"
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    if isinstance(pool, SentinelConnectionPool):  # Sentinel's master_for()
        return f"the primary of {pool.service_name!r} (Sentinel)"
    host, port = kwargs.get("host", "?"), kwargs.get("port", "?")
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


def renewal_copy(client: Client, timeout: float) -> Client:
    """A client of its own like ``client``, each connect and reply within ``timeout``.

    It reaches the same server (or cluster, or Sentinel primary) with the
    same credentials and TLS settings; only a cluster's copy connects as it
    is made (to learn the slots).
    """
    ours = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "health_check_interval": 0,
    }
    if isinstance(client, RedisCluster):
        return _cluster_copy(client, ours)
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return redis.Redis(connection_pool=_sentinel_pool_copy(pool, ours))
    settings = {**pool.connection_kwargs, **ours, "retry": _no_retry()}
    own = redis.ConnectionPool(connection_class=pool.connection_class, **settings)
    return redis.Redis(connection_pool=own)


def _cluster_copy(client: RedisCluster, ours: dict[str, Any]) -> RedisCluster:
    """A cluster client of its own: the same nodes, credentials, TLS and remap.

    It needs only the slot of one name, so it does not insist on a fully
    covered cluster.
    """
    nodes = client.get_nodes()
    pool = client.get_redis_connection(nodes[0]).connection_pool
    settings: dict[str, Any] = {
        key: value
        for key, value in pool.connection_kwargs.items()
        if key in _CARRIED or key.startswith("ssl_")
    }
    if issubclass(pool.connection_class, redis.SSLConnection):
        settings["ssl"] = True
    if client.user_on_connect_func is not None:
        settings["redis_connect_func"] = client.user_on_connect_func
    return RedisCluster(
        startup_nodes=[ClusterNode(node.host, node.port) for node in nodes],
        retry=_no_retry(),
        require_full_coverage=False,
        address_remap=getattr(client.nodes_manager, "address_remap", None),
        **{**settings, **ours},
    )


def _sentinel_pool_copy(
    pool: SentinelConnectionPool, ours: dict[str, Any]
) -> SentinelConnectionPool:
    """A pool of its own for the same service, asking sentinels of its own.

    Each sentinel is asked within ``ours``' timeouts too, in turn.
    """
    manager = pool.sentinel_manager
    addresses = [
        (
            sentinel.connection_pool.connection_kwargs["host"],
            sentinel.connection_pool.connection_kwargs["port"],
        )
        for sentinel in manager.sentinels
    ]
    own_manager = Sentinel(
        addresses,
        min_other_sentinels=manager.min_other_sentinels,
        sentinel_kwargs={**manager.sentinel_kwargs, **ours, "retry": _no_retry()},
        force_master_ip=getattr(manager, "_force_master_ip", None),  # kept private
    )
    settings = {
        key: value
        for key, value in pool.connection_kwargs.items()
        if key != "connection_pool"  # the original pool's: ours gets its own
    }
    return SentinelConnectionPool(
        pool.service_name,
        own_manager,
        is_master=pool.is_master,
        check_connection=pool.check_connection,
        connection_class=pool.connection_class,
        **{**settings, **ours, "retry": _no_retry()},
    )


def follow_primary(client: Client) -> None:
    """With Sentinel, ask where the primary is now (one round trip to a sentinel).

    A primary that was failed over stays writable until the sentinels
    demote it, up to ten seconds later; a lease taken or renewed there in
    the meantime would be lost with it. Asking first drops the pool's idle
    connections to it, so the call reaches the new primary.
    """
    if isinstance(client, redis.Redis):
        pool = client.connection_pool
        if isinstance(pool, SentinelConnectionPool) and pool.is_master:
            pool.get_master_address()


def close_client(client: Client) -> None:
    """Close a client of ours and every connection it opened.

    ``close()`` alone leaves connections open where redis-py gave a pool
    to a client that does not own it (a cluster's nodes when the cluster
    was made from a URL; Sentinel's pools), so every pool is disconnected.
    """
    if isinstance(client, RedisCluster):
        nodes = [node.redis_connection for node in client.get_nodes()]
        pools = [node.connection_pool for node in nodes if node is not None]
    else:
        pools = [client.connection_pool]
        if isinstance(client.connection_pool, SentinelConnectionPool):
            manager = client.connection_pool.sentinel_manager
            pools += [sentinel.connection_pool for sentinel in manager.sentinels]
    client.close()
    for pool in pools:
        pool.disconnect()
