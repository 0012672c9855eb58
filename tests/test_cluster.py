"""One instance across hosts (``backend=``) on a real ``redis-server``: the policies.

Each simulated host is a process with a lock directory of its own, so only
the lease can make them exclude each other. The faults (kills, pauses,
restarts, partitions) are in ``test_cluster_faults``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from singleton_proc import (
    AlreadyRunningError,
    BackendUnavailableError,
    LeaseLostError,
    SingleInstance,
    is_running,
    list_instances,
)

from helpers import DEADLINE, TESTS, env_without_coverage, finish, read_line, reap

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from redis_server import RedisServer

LEASE_SCRIPT = TESTS / "child_lease.py"
#: SPEC's bound in tests for a "wait" hand-over after a clean release.
HANDOVER_BOUND = 2.0


def start_lease(
    name: str, directory: Path, url: str, *flags: str, host: str = ""
) -> subprocess.Popen[str]:
    """Start ``child_lease.py`` (see its docstring); reap it after.

    With ``host``, it runs under that host name, in a UTS namespace of its
    own (``unshare --uts``, as root), as on another machine.
    """
    command = [sys.executable, str(LEASE_SCRIPT), name, str(directory), url, *flags]
    if host:
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("another host name needs root and unshare(1) (util-linux)")
        rename = 'hostname "$0" && exec "$@"'
        command = ["unshare", "--uts", "sh", "-c", rename, host, *command]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ready_fence(proc: subprocess.Popen[str]) -> int:
    """Wait for ``ready <fence>``; return the fence."""
    line = read_line(proc)
    words = line.split()
    assert words[:1] == ["ready"], f"pid {proc.pid} said {line!r}, status {proc.poll()}"
    return int(words[1])


def on_host(host: Path, url: str, **options: Any) -> SingleInstance:
    """``SingleInstance("bot")`` as a process on host ``host`` (its lock
    directory) makes it, on the backend at ``url``."""
    return SingleInstance("bot", directory=host, backend=url, **options)


def lease_keys(server: RedisServer) -> set[bytes]:
    """The keys on the server that hold or describe a lease (not fences)."""
    with server.client() as client:
        keys = set(client.keys("singleton_proc:*"))
    return {key for key in keys if not key.endswith((b":fence",))}


def test_a_name_is_held_across_hosts_and_fences_grow(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    proc = start_lease("bot", host_dir("a"), redis_server.url, host="host-a")
    try:
        first = ready_fence(proc)
        contender = SingleInstance(
            "bot", directory=host_dir("b"), backend=redis_server.url
        )
        with pytest.raises(AlreadyRunningError) as caught:
            contender.acquire()
        assert caught.value.holder is not None
        assert caught.value.holder.pid == proc.pid  # from the record in Redis
        assert caught.value.holder.host == "host-a"
        assert "on host host-a" in str(caught.value)
        assert not contender.held
        # The local lock of host b was let go: a local-only instance takes it.
        with SingleInstance("bot", directory=host_dir("b")):
            pass
        status, out, _ = finish(proc)
        assert status == 0, out
        assert lease_keys(redis_server) == set()  # released: lease and record gone
        with contender:
            assert contender.fence is not None
            assert contender.fence > first
            contender.check()
        assert contender.fence is None
    finally:
        reap(proc)


def test_exit_policy_names_the_remote_holder(
    redis_server: RedisServer,
    host_dir: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    proc = start_lease("bot", host_dir("a"), redis_server.url)
    try:
        ready_fence(proc)
        contender = on_host(
            host_dir("b"), redis_server.url, on_conflict="exit", exit_code=7
        )
        with pytest.raises(SystemExit) as caught:
            contender.acquire()
        assert caught.value.code == 7
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err
        assert "on host" in err
    finally:
        reap(proc)


@pytest.mark.parametrize("subscription_killed", [False, True])
def test_wait_is_handed_over_promptly_with_a_higher_fence(
    redis_server: RedisServer,
    host_dir: Callable[[str], Path],
    subscription_killed: bool,
) -> None:
    """Also when the waiter's subscription was killed while it waited."""
    holder = start_lease("bot", host_dir("a"), redis_server.url)
    waiter = None
    try:
        first = ready_fence(holder)
        waiter = start_lease("bot", host_dir("b"), redis_server.url, "--policy", "wait")
        wait_for_subscriber(redis_server, "bot")
        if subscription_killed:
            with redis_server.client() as admin:
                assert admin.client_kill_filter(_type="pubsub") == 1
            wait_for_subscriber(redis_server, "bot")  # it subscribed again
        assert holder.stdin is not None
        holder.stdin.close()
        released = float(read_line(holder).split()[1])
        line = read_line(waiter).split()
        assert line[0] == "ready"
        assert int(line[1]) > first
        assert float(line[2]) - released < HANDOVER_BOUND  # not the ttl of 15 s
        status, _, _ = finish(waiter)
        assert status == 0
    finally:
        reap(holder)
        if waiter is not None:
            reap(waiter)


def wait_for_subscriber(server: RedisServer, name: str) -> None:
    """Return once a waiter listens for ``name``'s releases (it waits then)."""
    channel = f"singleton_proc:{{{name}}}:released"
    deadline = time.monotonic() + DEADLINE
    with server.client() as client:
        while dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) == 0:
            assert time.monotonic() < deadline, "no waiter subscribed"
            time.sleep(0.005)


def test_eight_contenders_hold_one_at_a_time(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    procs = [
        start_lease(
            "crowd",
            host_dir(str(i)),
            redis_server.url,
            "--policy",
            "wait",
            "--rounds",
            "3",
            "--ttl",
            "5",
        )
        for i in range(8)
    ]
    try:
        fences = round_fences(procs)
        assert len(fences) == 24
        assert len(set(fences)) == 24  # every grant drew its own fence
    finally:
        for proc in procs:
            reap(proc)


def round_fences(procs: list[subprocess.Popen[str]]) -> list[int]:
    """Wait for each ``--rounds`` child to end well; the fences of all its rounds."""
    fences: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=DEADLINE * 2)
        assert proc.returncode == 0, (out, err)
        fences += [int(line.split()[1]) for line in out.splitlines()]
    return fences


def test_wait_with_a_timeout_gives_up(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    proc = start_lease("bot", host_dir("a"), redis_server.url)
    try:
        ready_fence(proc)
        contender = on_host(
            host_dir("b"), redis_server.url, on_conflict="wait", timeout=0.3
        )
        start = time.monotonic()
        with pytest.raises(AlreadyRunningError) as caught:
            contender.acquire()
        assert 0.3 <= time.monotonic() - start < DEADLINE
        assert caught.value.holder is not None
        assert caught.value.holder.pid == proc.pid
    finally:
        reap(proc)


def test_async_wait_does_not_block_the_event_loop(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    holder = on_host(host_dir("a"), redis_server.url)
    waiter = SingleInstance(
        "bot", directory=host_dir("b"), backend=redis_server.url, on_conflict="wait"
    )

    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        holder.acquire()
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, holder.release)
        async with waiter:
            assert waiter.fence is not None
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) >= 10  # the loop kept running while it waited


def test_the_backend_comes_from_the_environment(
    redis_server: RedisServer,
    host_dir: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SINGLETON_PROC_BACKEND", redis_server.url)
    instance = SingleInstance("env", directory=host_dir("a"))
    assert redis_server.url in repr(instance)
    with instance:
        assert instance.fence is not None
        assert lease_keys(redis_server)
    monkeypatch.setenv("SINGLETON_PROC_BACKEND", "")
    assert SingleInstance("env", directory=host_dir("a")).fence is None


def test_a_ready_client_is_used_as_given(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    with redis_server.client() as client:
        with on_host(host_dir("a"), client) as held:
            assert held.fence is not None
            assert client.get(b"singleton_proc:{bot}:lease") is not None
        assert client.ping()  # not closed by the release: it is the caller's


def test_names_that_would_break_a_hash_tag_keep_one_tag(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    with SingleInstance("a}b{c d", directory=host_dir("a"), backend=redis_server.url):
        keys = lease_keys(redis_server)
    assert keys == {
        b"singleton_proc:{a%7Db%7Bc%20d}:lease",
        b"singleton_proc:{a%7Db%7Bc%20d}:record",
    }


def test_an_unreachable_backend_fails_fast_and_lets_the_local_lock_go(
    host_dir: Callable[[str], Path],
) -> None:
    pytest.importorskip("redis")
    from redis_server import free_port  # noqa: PLC0415

    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    instance = on_host(host_dir("a"), url)
    start = time.monotonic()
    with pytest.raises(BackendUnavailableError) as caught:
        instance.acquire()
    assert time.monotonic() - start < 10.0
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(instance)
    assert not instance.held
    with SingleInstance("bot", directory=host_dir("a")):  # the local lock is free
        pass


def test_a_wrong_password_is_an_error_that_never_shows_it(
    tmp_path: Path, host_dir: Callable[[str], Path]
) -> None:
    from redis_server import redis_server  # noqa: PLC0415

    workdir = tmp_path / "redis"
    workdir.mkdir()
    with redis_server(workdir, "--requirepass", "right-one") as server:
        url = f"redis://:wrong-one@127.0.0.1:{server.port}/0"
        instance = on_host(host_dir("a"), url)
        with pytest.raises(BackendUnavailableError) as caught:
            instance.acquire()
        assert "wrong-one" not in str(caught.value)
        assert "***" in str(caught.value)
        good = f"redis://:right-one@127.0.0.1:{server.port}/0"
        with on_host(host_dir("a"), good) as held:
            assert "right-one" not in repr(held)
            assert held.fence is not None


@pytest.mark.parametrize(
    ("backend", "error", "words"),
    [
        ("http://127.0.0.1:1/0", ValueError, "redis://"),
        ("redis://127.0.0.1:notaport/0", ValueError, "not valid"),
        (42, TypeError, "not int"),
    ],
)
def test_bad_backends_are_refused_by_name(
    backend: object, error: type[Exception], words: str
) -> None:
    pytest.importorskip("redis")
    with pytest.raises(error, match=words):
        SingleInstance("bot", backend=backend)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"ttl": 0.05}, "ttl must be >= 0.1"),
        ({"ttl": float("nan")}, "ttl must be"),
        ({"on_lost": "ignore"}, "on_lost must be"),
    ],
)
def test_bad_lease_options_are_refused_by_name(
    options: dict[str, object], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        SingleInstance("bot", **options)  # type: ignore[arg-type]


def test_without_redis_py_the_error_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'redis' or name.startswith('redis.'):\n"
        "            raise ModuleNotFoundError(f'blocked: {name}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from singleton_proc import SingleInstance\n"
        "SingleInstance('x', backend='redis://127.0.0.1:1/0')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={**env_without_coverage(), "SINGLETON_PROC_DIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 1
    assert "ImportError: backend= needs redis-py" in result.stderr
    assert "singleton-proc[redis]" in result.stderr


def test_check_raises_once_the_lease_is_lost(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    instance = on_host(host_dir("a"), redis_server.url, ttl=1.0, on_lost="raise")
    instance.acquire()
    instance.check()
    with redis_server.client() as client:
        client.delete(b"singleton_proc:{bot}:lease")  # as if it had expired
    deadline = time.monotonic() + DEADLINE
    while not lost(instance):  # the next renewal (within ttl/3) finds it gone
        assert time.monotonic() < deadline, "the loss was never seen"
        time.sleep(0.01)
    with pytest.raises(LeaseLostError, match="no longer has it"):
        instance.check()
    with pytest.raises(LeaseLostError):
        instance.__exit__(None, None, None)  # the block's exit says it too
    assert not instance.held


def lost(instance: SingleInstance) -> bool:
    """Whether ``instance.check()`` says the lease is lost."""
    try:
        instance.check()
    except LeaseLostError:
        return True
    return False


def test_a_client_that_decodes_replies_works_too(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    proc = start_lease("bot", host_dir("a"), redis_server.url)
    try:
        ready_fence(proc)
        with redis_server.client(decode_responses=True) as client:
            with pytest.raises(AlreadyRunningError) as caught:
                on_host(host_dir("b"), client).acquire()
            assert caught.value.holder is not None
            assert caught.value.holder.pid == proc.pid
            assert is_running("bot", backend=client)
            assert [h.pid for h in list_instances(backend=client)] == [proc.pid]
    finally:
        reap(proc)


@pytest.mark.parametrize("ttl", [0.6, 30.0])
def test_a_released_lease_leaves_no_thread_behind(
    redis_server: RedisServer, host_dir: Callable[[str], Path], ttl: float
) -> None:
    """With ttl 0.6 it is renewed meanwhile; with 30, released before any renewal."""
    before = {thread.ident for thread in threading.enumerate()}
    instance = on_host(host_dir("a"), redis_server.url, ttl=ttl)
    with instance, redis_server.client() as admin:
        renewed = admin.hget(b"singleton_proc:{bot}:record", "renewed")
        deadline = time.monotonic() + DEADLINE
        while (
            ttl < 1 and admin.hget(b"singleton_proc:{bot}:record", "renewed") == renewed
        ):
            assert time.monotonic() < deadline, "never renewed"
            time.sleep(0.01)  # until the renewal thread has renewed it once
        assert {t.ident for t in threading.enumerate()} - before  # ours run
    # A program that holds nothing runs no thread of ours (so, for one, its
    # workers may still be forked, which needs a single-threaded process),
    # well before the 20 s the lease's deadline was still away.
    released = time.monotonic()
    while left := {t.ident for t in threading.enumerate()} - before:
        assert time.monotonic() - released < 5.0, f"threads left: {left}"
        time.sleep(0.01)
