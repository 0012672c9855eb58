"""One instance across hosts under real faults: kills, pauses, restarts, partitions.

Holders are real processes (or this one), Redis is a real ``redis-server``
paused with SIGSTOP, restarted empty, or reached through a relay the test
cuts; every bound is SPEC's "bound in tests", a safety net.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from relay import Relay
from test_cluster import (
    lease_keys,
    on_host,
    ready_fence,
    start_lease,
    wait_for_subscriber,
)

from singleton_proc import BackendUnavailableError, LeaseLostError

from helpers import DEADLINE, finish, read_line, reap

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from redis_server import RedisServer

#: SPEC: a lost lease is noticed by the holder within ttl + 5 s (tests).
LOSS_SLACK = 5.0


class Losses:
    """An ``on_lost`` callable that records when, and why, it was called."""

    def __init__(self) -> None:
        """Nothing lost yet."""
        self.errors: list[LeaseLostError] = []
        self.at: list[float] = []
        self.event = threading.Event()

    def __call__(self, error: LeaseLostError) -> None:
        """Record the loss."""
        self.at.append(time.monotonic())
        self.errors.append(error)
        self.event.set()


@pytest.fixture
def losses() -> Losses:
    """A fresh :class:`Losses`."""
    return Losses()


def test_a_sigkilled_holder_is_taken_over_with_a_higher_fence(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    ttl = 1.0
    holder = start_lease("bot", host_dir("a"), redis_server.url, "--ttl", str(ttl))
    waiter = None
    try:
        first = ready_fence(holder)
        waiter = start_lease("bot", host_dir("b"), redis_server.url, "--policy", "wait")
        wait_for_subscriber(redis_server, "bot")
        killed = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)
        line = read_line(waiter, timeout=3 * ttl + DEADLINE).split()
        assert line[0] == "ready"
        assert int(line[1]) > first
        assert float(line[2]) - killed < 3 * ttl  # SPEC: ttl + 1 s, bound 3 x ttl
        assert finish(waiter)[0] == 0
    finally:
        reap(holder)
        if waiter is not None:
            reap(waiter)


def test_a_holder_stopped_past_its_ttl_loses_and_leaves_cleanly(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    ttl = 1.0
    holder = start_lease("bot", host_dir("a"), redis_server.url, "--ttl", str(ttl))
    try:
        first = ready_fence(holder)
        os.kill(holder.pid, signal.SIGSTOP)
        newcomer = on_host(
            host_dir("b"),
            redis_server.url,
            on_conflict="wait",
            timeout=3 * ttl + DEADLINE,
        )
        with newcomer:
            assert newcomer.fence is not None
            assert newcomer.fence > first
            os.kill(holder.pid, signal.SIGCONT)
            holder.wait(DEADLINE)  # it leaves by itself, its stdin still open
            status, out, _ = finish(holder)
            assert status == 143  # on_lost="exit": as if SIGTERM came
            assert out.splitlines()[-1] == "finally"
            newcomer.check()  # the resumed holder took nothing from us
            assert lease_keys(redis_server)
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
        reap(holder)


def test_a_paused_server_makes_the_holder_declare_the_loss_by_its_deadline(
    redis_server: RedisServer, host_dir: Callable[[str], Path], losses: Losses
) -> None:
    ttl = 1.5
    instance = on_host(host_dir("a"), redis_server.url, ttl=ttl, on_lost=losses)
    with instance:
        paused = time.monotonic()
        redis_server.pause()
        try:
            assert losses.event.wait(ttl + LOSS_SLACK)
            # The deadline is 2/3 ttl after the last renewal sent, which was
            # at most ttl/3 before the pause.
            assert losses.at[0] - paused <= ttl + LOSS_SLACK
            assert "was lost" in str(losses.errors[0])
            with pytest.raises(LeaseLostError):
                instance.check()
        finally:
            redis_server.resume()
    assert len(losses.errors) == 1


def test_a_server_restarted_empty_is_a_loss_and_fences_still_grow(
    redis_server: RedisServer, host_dir: Callable[[str], Path], losses: Losses
) -> None:
    ttl = 1.5
    instance = on_host(host_dir("a"), redis_server.url, ttl=ttl, on_lost=losses)
    with instance:
        first = instance.fence
        assert first is not None
        redis_server.restart_empty()
        assert losses.event.wait(ttl + LOSS_SLACK)
        assert "no longer has it" in str(losses.errors[0])
    with instance:
        assert instance.fence is not None
        assert instance.fence > first


def test_killed_connections_do_not_cost_the_lease(
    redis_server: RedisServer, host_dir: Callable[[str], Path], losses: Losses
) -> None:
    ttl = 1.0
    instance = on_host(host_dir("a"), redis_server.url, ttl=ttl, on_lost=losses)
    with redis_server.client() as admin, instance:
        token = admin.get(b"singleton_proc:{bot}:lease")
        end = time.monotonic() + 3 * ttl
        kills = 0
        while time.monotonic() < end:
            kills += admin.client_kill_filter(_type="normal", skipme=True)
            time.sleep(ttl / 10)  # a fault every tenth of the TTL
        assert kills >= 3  # the renewal connection was killed, again and again
        instance.check()
        assert admin.get(b"singleton_proc:{bot}:lease") == token
    assert losses.errors == []


def test_a_partition_makes_the_holder_give_up_before_the_server_lets_go(
    redis_server: RedisServer, host_dir: Callable[[str], Path], losses: Losses
) -> None:
    ttl = 3.0
    relay = Relay(redis_server.port)
    try:
        instance = on_host(
            host_dir("a"), f"redis://127.0.0.1:{relay.port}/0", ttl=ttl, on_lost=losses
        )
        with instance, redis_server.client() as admin:
            cut = time.monotonic()
            relay.cut()
            while admin.exists(b"singleton_proc:{bot}:lease"):  # until it expires
                assert time.monotonic() - cut < ttl + DEADLINE, "it never expired"
                time.sleep(0.005)
            expired = time.monotonic()
            assert losses.event.wait(LOSS_SLACK)
            # The holder stopped believing before anyone else could take the
            # name (its deadline is a third of the TTL before the expiry).
            assert losses.at[0] < expired
            assert losses.at[0] - cut <= ttl + LOSS_SLACK
            other = on_host(host_dir("b"), redis_server.url)
            with other:  # across the partition, another host takes it
                assert other.fence is not None
    finally:
        relay.close()


def test_replace_asks_a_remote_holder_to_step_down(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    ttl = 3.0
    holder = start_lease("bot", host_dir("a"), redis_server.url, "--ttl", str(ttl))
    try:
        first = ready_fence(holder)
        newcomer = on_host(
            host_dir("b"), redis_server.url, on_conflict="replace", grace=DEADLINE
        )
        start = time.monotonic()
        with newcomer:
            # Seen by the holder's next renewal (within ttl/3), which exits.
            assert time.monotonic() - start < ttl + LOSS_SLACK
            assert newcomer.fence is not None
            assert newcomer.fence > first
            status, out, _ = finish(holder)
            assert status == 143
            assert out.splitlines()[-1] == "finally"
    finally:
        reap(holder)


#: A holder of another make: renews its lease by token, ignores step-downs.
STUBBORN_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


def test_replace_revokes_a_holder_that_does_not_step_down(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    ttl_ms, key = 2000, b"singleton_proc:{bot}:lease"
    revoked_at: list[float] = []
    stop = threading.Event()

    def stubborn() -> None:  # renews every 50 ms until its token is gone
        with redis_server.client() as client:
            while not stop.wait(0.05):
                if not client.eval(STUBBORN_RENEW, 1, key, "stubborn", ttl_ms):
                    revoked_at.append(time.monotonic())
                    return

    with redis_server.client() as admin:
        admin.set(key, "stubborn", px=ttl_ms)
    renewer = threading.Thread(target=stubborn)
    renewer.start()
    try:
        grace = 0.3
        newcomer = on_host(
            host_dir("b"), redis_server.url, on_conflict="replace", grace=grace
        )
        start = time.monotonic()
        with newcomer:
            held_at = time.monotonic()
            assert revoked_at, "the stubborn lease was never revoked"
            assert revoked_at[0] - start >= grace  # asked first, revoked after grace
            # Taken only once the revoked lease would have expired: its last
            # renewal (50 ms before the revoke, more under load) set 2 s.
            assert held_at - revoked_at[0] >= ttl_ms / 1000 - 0.5
            assert newcomer.fence is not None
            newcomer.check()
    finally:
        stop.set()
        renewer.join(DEADLINE)


def test_ctrl_c_while_keeping_a_revoked_lease_leaves_no_key(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    ttl = 30.0
    holder = start_lease(
        "bot", host_dir("a"), redis_server.url, "--ttl", str(ttl), "--on-lost", "print"
    )
    newcomer = None
    try:
        ready_fence(holder)
        newcomer = start_lease(
            "bot",
            host_dir("b"),
            redis_server.url,
            "--policy",
            "replace",
            "--grace",
            "0",
        )
        with redis_server.client() as admin:
            deadline = time.monotonic() + DEADLINE
            while admin.exists(b"singleton_proc:{bot}:record"):  # until revoked
                assert time.monotonic() < deadline, "the lease was never revoked"
                time.sleep(0.005)
            assert admin.exists(b"singleton_proc:{bot}:lease")  # kept, by the newcomer
            os.kill(newcomer.pid, signal.SIGINT)
            status, _, err = finish(newcomer)
            assert status != 0
            assert "KeyboardInterrupt" in err
            assert not admin.exists(b"singleton_proc:{bot}:lease")
    finally:
        reap(holder)
        if newcomer is not None:
            reap(newcomer)


#: Takes and lets go of "bot" on a backend, round after round, until stopped.
CHURN = (
    "import sys\n"
    "from singleton_proc import SingleInstance\n"
    "instance = SingleInstance('bot', directory=sys.argv[1], backend=sys.argv[2])\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    with instance:\n"
    "        pass\n"
)


def test_ctrl_c_at_any_point_of_acquire_or_release_leaves_no_key(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    # Each press lands at another point of the acquire/release cycle (about
    # a millisecond each): the offsets only vary where, they wait for nothing.
    for offset in (0.0, 0.0013, 0.0029, 0.0047, 0.0061, 0.0083, 0.0101, 0.0137):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHURN, str(host_dir("a")), redis_server.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert read_line(proc) == "ready"
            time.sleep(0.05 + offset)  # some rounds in
            os.kill(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=DEADLINE)
            assert "KeyboardInterrupt" in err
            # Held and released, or never taken: no key left under its token.
            assert lease_keys(redis_server) == set(), f"offset {offset}"
        finally:
            reap(proc)


def test_renewals_refused_for_a_while_do_not_end_the_renewals(
    redis_server: RedisServer, host_dir: Callable[[str], Path], losses: Losses
) -> None:
    ttl = 3.0
    with redis_server.client() as admin:
        admin.acl_setuser("holder", enabled=True, passwords=["+pw"], keys=["*"],
                          channels=["*"], commands=["+@all"])  # fmt: skip
        url = f"redis://holder:pw@127.0.0.1:{redis_server.port}/0"
        instance = on_host(host_dir("a"), url, ttl=ttl, on_lost=losses)
        with instance:
            renewed = admin.hget(b"singleton_proc:{bot}:record", "renewed")
            refused = _rejected_evals(admin)
            admin.acl_setuser("holder", enabled=True, commands=["-eval"])  # NOPERM
            deadline = time.monotonic() + DEADLINE
            while _rejected_evals(admin) == refused:  # until a renewal is refused
                assert time.monotonic() < deadline, "no renewal was refused"
                time.sleep(0.005)
            admin.acl_setuser("holder", enabled=True, commands=["+eval"])
            while admin.hget(b"singleton_proc:{bot}:record", "renewed") == renewed:
                assert time.monotonic() < deadline, "the renewals did not go on"
                time.sleep(0.005)
            instance.check()
    assert losses.errors == []


def _rejected_evals(admin: Any) -> int:
    """How many EVALs the server refused so far (``INFO commandstats``)."""
    stats = admin.info("commandstats").get("cmdstat_eval", {})
    return int(stats.get("rejected_calls", 0))


def test_async_with_never_blocks_the_loop_on_a_server_that_does_not_answer(
    redis_server: RedisServer, host_dir: Callable[[str], Path], losses: Losses
) -> None:
    # Short timeouts of the URL's own, so the test need not wait 5 s each.
    url = f"{redis_server.url}?socket_timeout=0.5&socket_connect_timeout=0.5"
    instance = on_host(host_dir("a"), url, on_lost=losses)

    async def ticking_while(work: Callable[[], Awaitable[object]]) -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        try:
            await work()
        finally:
            ticker.cancel()
        return ticks

    async def hold_then_pause() -> None:
        async with instance:
            redis_server.pause()  # the release's round trip waits 0.5 s

    async def acquire_paused() -> None:
        with pytest.raises(BackendUnavailableError):
            async with instance:
                pass

    try:
        assert asyncio.run(ticking_while(hold_then_pause)) >= 10
        assert not instance.held
        assert asyncio.run(ticking_while(acquire_paused)) >= 10
    finally:
        redis_server.resume()
