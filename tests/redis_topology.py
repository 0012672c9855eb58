"""A Redis Cluster and a Sentinel setup for the topology tests, on loopback.

Every server is a :class:`~redis_server.RedisServer` of the test's, started
and stopped by pid. Readiness that no server announces on its own (a
cluster's ``cluster_state:ok``, a replica's link, the sentinels knowing
each other, a promotion) is polled under a generous bound.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from typing import TYPE_CHECKING, Any

from redis_server import RedisServer, free_port, require

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

_BOUND = 30.0
#: The Sentinel service name of the tests' primary.
SERVICE = "lease-primary"


def _until(what: str, check: Callable[[], bool]) -> None:
    """Poll ``check`` every 50 ms until true; fail after :data:`_BOUND`."""
    deadline = time.monotonic() + _BOUND
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {_BOUND:.0f} s: {what}")
        time.sleep(0.05)


def _needs(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            package = "redis-sentinel" if "sentinel" in program else "redis-server"
            require(program, f"Debian/Ubuntu: apt-get install {package}")
    try:
        import redis  # noqa: F401, PLC0415
    except ImportError:
        require("redis-py", "pip install -e '.[redis]'")


def _two_free_ports() -> tuple[int, int]:
    """Two distinct loopback ports free at this moment."""
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def make_certificates(directory: Path) -> Path:
    """A CA, and a certificate for 127.0.0.1 that it signed, made by openssl."""
    if shutil.which("openssl") is None:
        require("openssl", "Debian/Ubuntu: apt-get install openssl")
    directory.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True
        )

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "redis.key",
            "-out", "redis.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.cnf").write_text(  # what Python 3.13's strict check asks
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey",
            "ca.key", "-CAcreateserial", "-days", "1", "-out", "redis.crt",
            "-extfile", "san.cnf")  # fmt: skip
    return directory


class Cluster:
    """Three primaries, no replicas, every slot covered; TLS only with ``tls``."""

    def __init__(self, workdir: Path, tls: Path | None = None) -> None:
        """Start the nodes and join them with ``redis-cli --cluster create``.

        ``tls``: a directory of :func:`make_certificates`; every node then
        speaks TLS only, to clients and on the cluster bus.
        """
        self.tls = tls
        self.nodes: list[RedisServer] = []
        self._clients: list[Any] = []
        try:
            self._start(workdir)
        except BaseException:
            self.stop()
            raise

    def _start(self, workdir: Path) -> None:
        for index in range(3):
            node_dir = workdir / f"node-{index}"
            node_dir.mkdir()
            port, bus = _two_free_ports()
            self.nodes.append(
                RedisServer(
                    node_dir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",  # not port + 10000, which may be taken
                    str(bus),
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    *self._tls_options(port),
                    port=port,
                )
            )
        tls = (
            [] if self.tls is None else ["--tls", "--cacert", str(self.tls / "ca.crt")]
        )
        subprocess.run(
            [
                "redis-cli",
                *tls,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=_BOUND,
        )
        _until("cluster_state:ok on every node", self._ok)

    def _tls_options(self, port: int) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--port", "0", "--tls-port", str(port), "--tls-cluster", "yes",
            "--tls-cert-file", str(self.tls / "redis.crt"),
            "--tls-key-file", str(self.tls / "redis.key"),
            "--tls-ca-cert-file", str(self.tls / "ca.crt"),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def _tls_settings(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.tls / "ca.crt")}

    def _ok(self) -> bool:
        for node in self.nodes:
            with contextlib.closing(node.client(**self._tls_settings())) as client:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
        return True

    @property
    def url(self) -> str:
        """The cluster URL form, naming the first node."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def client(self, **options: Any) -> Any:
        """A ``RedisCluster`` client of the test's own, closed with the cluster."""
        from redis.cluster import RedisCluster  # noqa: PLC0415

        client = RedisCluster(
            host="127.0.0.1",
            port=self.nodes[0].port,
            socket_timeout=10,
            **self._tls_settings(),
            **options,
        )
        self._clients.append(client)
        return client

    def stop(self) -> None:
        """Close the test's clients; stop every node by pid."""
        for client in self._clients:
            client.close()
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def redis_cluster(workdir: Path, tls: Path | None = None) -> Iterator[Cluster]:
    """A 3-primary cluster for the block, or skip/fail where it cannot run."""
    _needs("redis-server", "redis-cli")
    cluster = Cluster(workdir, tls)
    try:
        yield cluster
    finally:
        cluster.stop()


class SentinelSetup:
    """One primary, one replica, three sentinels watching :data:`SERVICE`."""

    def __init__(self, workdir: Path) -> None:
        """Start them all; return once the replica is in sync and sentinels agree."""
        self.workdir = workdir
        self.servers: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        self._clients: list[Any] = []
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        (self.workdir / "primary").mkdir()
        (self.workdir / "replica").mkdir()
        primary = RedisServer(self.workdir / "primary")
        self.servers.append(primary)
        replica = RedisServer(
            self.workdir / "replica", "--replicaof", "127.0.0.1", str(primary.port)
        )
        self.servers.append(replica)
        _until("the replica in sync", lambda: self._linked(replica))
        for index in range(3):
            self.sentinels.append(self._sentinel(index, primary.port))
        _until("three sentinels that know each other", self._agreed)

    def _sentinel(self, index: int, primary_port: int) -> RedisServer:
        directory = self.workdir / f"sentinel-{index}"
        directory.mkdir()
        port = free_port()
        config = directory / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"  # a failed election: 6 s
        )
        return RedisServer(
            directory,
            port=port,
            program="redis-sentinel",
            config=config,
            ready="+monitor master",
        )

    @staticmethod
    def _linked(replica: RedisServer) -> bool:
        with contextlib.closing(replica.client()) as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def _agreed(self) -> bool:
        for sentinel in self.sentinels:
            with contextlib.closing(sentinel.client()) as client:
                known = client.execute_command("SENTINEL", "SENTINELS", SERVICE)
                replicas = client.execute_command("SENTINEL", "REPLICAS", SERVICE)
                if len(known) < len(self.sentinels) - 1 or not replicas:
                    return False
        return True

    @property
    def addresses(self) -> str:
        """The sentinels as ``host:port,...`` (``child_lease.py --client sentinel``)."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def client(self) -> Any:
        """A client of the primary through the sentinels (``master_for``).

        It and its sentinel connections are closed with the setup.
        """
        from redis.sentinel import Sentinel  # noqa: PLC0415

        sentinel = Sentinel(
            [("127.0.0.1", s.port) for s in self.sentinels],
            socket_timeout=10,
            sentinel_kwargs={"socket_timeout": 10},
        )
        client = sentinel.master_for(SERVICE)
        self._clients += [client, *sentinel.sentinels]
        return client

    def primary(self) -> RedisServer:
        """The server the first sentinel names as primary now."""
        with contextlib.closing(self.sentinels[0].client()) as client:
            _, port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
            )
        return next(s for s in self.servers if s.port == int(port))

    def failover(self) -> RedisServer:
        """``SENTINEL FAILOVER``; return the new primary once it serves writes."""
        old = self.primary()
        with contextlib.closing(self.sentinels[0].client()) as client:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        return self.promoted_instead_of(old)

    def promoted_instead_of(self, old: RedisServer) -> RedisServer:
        """The new primary, once every sentinel names it, in good standing."""

        def promoted() -> bool:
            for sentinel in self.sentinels:
                with contextlib.closing(sentinel.client()) as client:
                    state = client.sentinel_master(SERVICE)
                if state["flags"] != "master" or int(state["port"]) == old.port:
                    return False
            with contextlib.closing(self.primary().client()) as client:
                return bool(client.info("replication")["role"] == "master")

        _until("a replica promoted, as every sentinel says", promoted)
        return self.primary()

    def stop(self) -> None:
        """Close the test's clients; stop every server and sentinel by pid."""
        for client in self._clients:
            client.close()
        for server in (*self.sentinels, *self.servers):
            server.stop()


@contextlib.contextmanager
def redis_sentinel(workdir: Path) -> Iterator[SentinelSetup]:
    """A Sentinel-managed primary for the block, or skip/fail where it cannot run."""
    _needs("redis-server", "redis-sentinel")
    setup = SentinelSetup(workdir)
    try:
        yield setup
    finally:
        setup.stop()
