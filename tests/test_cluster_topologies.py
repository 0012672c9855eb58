"""``backend=`` on a real Redis Cluster and a real Sentinel setup, on loopback.

The cluster: three primaries made with ``redis-cli --cluster create``,
reached through a ready ``RedisCluster`` client and the
``redis+cluster://`` URL. Sentinel: one primary, one replica, three
sentinels; the holder reaches the primary through ``master_for``, and the
tests fail it over while a lease is held.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest
from redis_topology import (
    Cluster,
    SentinelSetup,
    make_certificates,
    redis_cluster,
    redis_sentinel,
)
from test_cli import cli
from test_cluster import HANDOVER_BOUND, ready_fence, round_fences, start_lease

from singleton_proc import AlreadyRunningError, SingleInstance, list_instances

from helpers import DEADLINE, finish, read_line, reap

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


KINDS = ["client", "url"]
RECORD = b"singleton_proc:{bot}:record"
#: Names whose characters would break a hash tag, and the longest name.
AWKWARD_NAMES = ["}", "{", "}{", "a}b{c", "{}", "x" * 128, "名前-ß-🙂 é"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A 3-primary Redis Cluster of the test's, stopped by pid after."""
    workdir = tmp_path / "cluster"
    workdir.mkdir()
    with redis_cluster(workdir) as started:
        yield started


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    """A primary, a replica and three sentinels of the test's, stopped by pid after."""
    workdir = tmp_path / "sentinel"
    workdir.mkdir()
    with redis_sentinel(workdir) as started:
        yield started


def backend_of(cluster: Cluster, kind: str) -> Any:
    """The cluster as ``backend=``: a ready ``RedisCluster`` or the URL."""
    return cluster.client() if kind == "client" else cluster.url


def start_on_cluster(cluster: Cluster, kind: str, directory: Path, *flags: str) -> Any:
    """``child_lease.py`` holding through the cluster as ``kind`` says."""
    return start_lease("bot", directory, cluster.url, "--client", _child(kind), *flags)


def _child(kind: str) -> str:
    return "cluster" if kind == "client" else "url"


def start_through_sentinel(setup: SentinelSetup, directory: Path, ttl: float) -> Any:
    """``child_lease.py`` holding through ``master_for``, printing a loss."""
    return start_lease(
        "bot", directory, setup.addresses, "--client", "sentinel",
        "--ttl", str(ttl), "--on-lost", "print",
    )  # fmt: skip


def subscribers(cluster: Cluster, name: str) -> int:
    """How many listen for ``name``'s releases, over every node (classic pub/sub)."""
    channel = f"singleton_proc:{{{name}}}:released"
    total = 0
    for node in cluster.nodes:
        with contextlib.closing(node.client()) as client:
            total += dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)
    return total


@pytest.mark.parametrize("kind", KINDS)
def test_cluster_contenders_hold_one_at_a_time(
    cluster: Cluster, host_dir: Callable[[str], Path], kind: str
) -> None:
    procs = [
        start_on_cluster(
            cluster, kind, host_dir(str(i)), "--policy", "wait", "--rounds", "3"
        )
        for i in range(4)
    ]
    try:
        fences = round_fences(procs)
        assert len(fences) == 12
        assert len(set(fences)) == 12  # every grant drew its own fence
    finally:
        for proc in procs:
            reap(proc)


@pytest.mark.parametrize("kind", KINDS)
def test_cluster_conflict_and_hand_over_by_pubsub(
    cluster: Cluster, host_dir: Callable[[str], Path], kind: str
) -> None:
    holder = start_on_cluster(cluster, kind, host_dir("a"), "--ttl", "30")
    waiter = None
    try:
        first = ready_fence(holder)
        contender = SingleInstance(
            "bot", directory=host_dir("b"), backend=backend_of(cluster, kind)
        )
        with pytest.raises(AlreadyRunningError) as caught:
            contender.acquire()
        assert caught.value.holder is not None
        assert caught.value.holder.pid == holder.pid
        waiter = start_on_cluster(cluster, kind, host_dir("c"), "--policy", "wait")
        deadline = time.monotonic() + DEADLINE
        while subscribers(cluster, "bot") == 0:
            assert time.monotonic() < deadline, "the waiter never subscribed"
            time.sleep(0.005)
        assert holder.stdin is not None
        holder.stdin.close()
        released = float(read_line(holder).split()[1])
        words = read_line(waiter).split()
        assert words[0] == "ready"
        assert int(words[1]) > first
        assert float(words[2]) - released < HANDOVER_BOUND  # the ttl is 30 s
    finally:
        reap(holder)
        if waiter is not None:
            reap(waiter)


def test_cluster_replace_asks_the_holder_to_step_down(
    cluster: Cluster, host_dir: Callable[[str], Path]
) -> None:
    holder = start_on_cluster(cluster, "client", host_dir("a"), "--ttl", "3")
    try:
        first = ready_fence(holder)
        newcomer = SingleInstance(
            "bot",
            directory=host_dir("b"),
            backend=cluster.client(),
            on_conflict="replace",
            grace=DEADLINE,
        )
        with newcomer:
            assert newcomer.fence is not None
            assert newcomer.fence > first
            status, out, _ = finish(holder)
        assert status == 143  # its on_lost="exit": SIGTERM's status
        assert "finally" in out
    finally:
        reap(holder)


def test_cluster_sigkilled_holder_is_taken_over_after_its_ttl(
    cluster: Cluster, host_dir: Callable[[str], Path]
) -> None:
    ttl = 1.5
    holder = start_on_cluster(cluster, "url", host_dir("a"), "--ttl", str(ttl))
    try:
        first = ready_fence(holder)
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        reap(holder)
        waiter = SingleInstance(
            "bot", directory=host_dir("b"), backend=cluster.url, on_conflict="wait"
        )
        with waiter:
            assert time.monotonic() - killed < 3 * ttl
            assert waiter.fence is not None
            assert waiter.fence > first
    finally:
        reap(holder)


def test_awkward_names_keep_all_their_keys_in_one_slot(
    cluster: Cluster, host_dir: Callable[[str], Path]
) -> None:
    client = cluster.client()
    with contextlib.closing(cluster.nodes[0].client()) as admin:
        for name in AWKWARD_NAMES:
            with SingleInstance(name, directory=host_dir("a"), backend=client):
                assert [h.name for h in list_instances(backend=client)] == [name]
                keys = [
                    key
                    for key in client.scan_iter(match="singleton_proc:*")
                    if not key.endswith(b":fence")
                ]
            assert len(keys) == 2, keys  # the lease and its record, while held
            fence = keys[0].rsplit(b":", 1)[0] + b":fence"
            assert client.exists(fence)
            slots = {admin.cluster("keyslot", key) for key in [*keys, fence]}
            assert len(slots) == 1, (name, keys)


def test_a_tls_cluster_renews_the_lease(
    tmp_path: Path, host_dir: Callable[[str], Path]
) -> None:
    """The renewal's own client speaks TLS too (a plaintext one is reset)."""
    workdir = tmp_path / "cluster"
    workdir.mkdir()
    with redis_cluster(workdir, make_certificates(tmp_path / "tls")) as tls_cluster:
        client = tls_cluster.client()
        instance = SingleInstance(
            "bot", directory=host_dir("a"), backend=client, ttl=1.5, on_lost="raise"
        )
        with instance:
            first = float(client.hget(RECORD, "renewed"))
            renewed_after(client, first)
            renewed_after(client, float(client.hget(RECORD, "renewed")))
            instance.check()  # still held: LeaseLostError otherwise


def test_status_reads_the_cluster_url(
    cluster: Cluster, host_dir: Callable[[str], Path]
) -> None:
    holder = start_on_cluster(cluster, "url", host_dir("a"))
    try:
        ready_fence(holder)
        status, out, _ = cli("status", "bot", "--json", "--backend", cluster.url)
        assert status == 0, out
        (row,) = json.loads(out)
        assert row["pid"] == holder.pid
    finally:
        reap(holder)


def lines_of(out: str, word: str) -> list[list[str]]:
    """The words of each line of ``out`` that starts with ``word``."""
    return [line.split() for line in out.splitlines() if line.startswith(word)]


def server_time(client: Any) -> float:
    """The server's clock, as the record's ``renewed`` field gives it."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1e6


def renewed_after(admin: Any, moment: float) -> None:
    """Return once the lease's record says it was renewed after ``moment``."""
    deadline = time.monotonic() + DEADLINE
    while float(admin.hget(RECORD, "renewed") or 0) <= moment:
        assert time.monotonic() < deadline, f"not renewed after {moment}"
        time.sleep(0.05)


def test_sentinel_failover_keeps_the_lease(
    sentinel_setup: SentinelSetup, host_dir: Callable[[str], Path]
) -> None:
    """A planned failover: the replica had the lease; renewals move over."""
    setup = sentinel_setup
    holder = start_through_sentinel(setup, host_dir("a"), ttl=6)
    try:
        first = ready_fence(holder)
        with contextlib.closing(setup.primary().client()) as admin:
            renewed_after(admin, float(admin.hget(RECORD, "renewed")))
        new = setup.failover()  # with the renewal's connection open to the old one
        with contextlib.closing(new.client()) as admin:
            renewed_after(admin, server_time(admin))
        contender = SingleInstance(
            "bot",
            directory=host_dir("b"),
            backend=setup.client(),
        )
        with pytest.raises(AlreadyRunningError) as caught:
            contender.acquire()
        assert caught.value.holder is not None
        assert caught.value.holder.pid == holder.pid
        status, out, err = finish(holder)
        assert status == 0, (out, err)
        assert lines_of(out, "lost") == []  # it never stopped believing
        with contender:
            assert contender.fence is not None
            assert contender.fence > first
    finally:
        reap(holder)


def test_sentinel_primary_killed_the_holder_says_so_before_anyone_takes_over(
    sentinel_setup: SentinelSetup, host_dir: Callable[[str], Path]
) -> None:
    """The primary SIGKILLed: no renewal succeeds until a replica is promoted.

    With a TTL of 2 s the holder's deadline (2/3 of it after its last
    renewal) comes before the sentinels even agree that the primary is down
    (1 s of silence), so it says the loss; the name is free on the new
    primary once the lease expires there, with a higher fence.
    """
    setup = sentinel_setup
    holder = start_through_sentinel(setup, host_dir("a"), ttl=2)
    try:
        first = ready_fence(holder)
        old = setup.primary()
        with contextlib.closing(old.client()) as admin:  # its renewal runs
            renewed_after(admin, float(admin.hget(RECORD, "renewed")))
        os.kill(old.pid, signal.SIGKILL)
        setup.promoted_instead_of(old)
        contender = SingleInstance(
            "bot",
            directory=host_dir("b"),
            backend=setup.client(),
            on_conflict="wait",
            timeout=DEADLINE,
        )
        with contender:
            taken = time.monotonic()
            assert contender.fence is not None
            assert contender.fence > first
        _, out, _ = finish(holder)
        (lost,) = lines_of(out, "lost")
        assert float(lost[1]) < taken  # it stopped believing first
    finally:
        reap(holder)
