"""Across hosts from the outside: introspection and the command line with a backend."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil
import pytest
from redis_server import free_port, redis_server
from test_cli import CLI, cli, one_error_line
from test_cluster import ready_fence, start_lease

from singleton_proc import holder, is_running, list_instances, terminate

from helpers import DEADLINE, TESTS, read_line, reap, wait_until_gone

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from redis_server import RedisServer

#: A command for ``run``: start a daemon that leaves its tree (setsid),
#: print ``ready <daemon pid> <fence>``, then wait for stdin to close.
ESCAPING_CMD = (
    "import os, sys\n"
    f"sys.path.insert(0, {str(TESTS)!r})\n"
    "import child_daemon\n"
    "daemon = child_daemon.start('setsid')\n"
    "print('ready', daemon, os.environ['SINGLETON_PROC_FENCE'], flush=True)\n"
    "sys.stdin.read()\n"
)


def test_introspection_takes_a_backend(
    redis_server: RedisServer,
    host_dir: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = start_lease("bot", host_dir("a"), redis_server.url)
    try:
        ready_fence(proc)
        found = holder("bot", backend=redis_server.url)
        assert found is not None
        assert found.pid == proc.pid
        assert is_running("bot", backend=redis_server.url)
        assert not is_running("bot")  # not on this machine's default directory
        assert not is_running("other", backend=redis_server.url)
        assert [h.pid for h in list_instances(backend=redis_server.url)] == [proc.pid]
        monkeypatch.setenv("SINGLETON_PROC_BACKEND", redis_server.url)
        assert is_running("bot")  # backend=None reads the environment
    finally:
        reap(proc)


def test_terminate_asks_the_holder_to_step_down(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    proc = start_lease("bot", host_dir("a"), redis_server.url, "--ttl", "3")
    try:
        ready_fence(proc)
        stopped = terminate("bot", grace=DEADLINE, backend=redis_server.url)
        assert stopped is not None
        assert stopped.pid == proc.pid
        assert proc.wait(DEADLINE) == 143  # it left by itself, as on SIGTERM
        assert not is_running("bot", backend=redis_server.url)
        assert terminate("bot", backend=redis_server.url) is None
    finally:
        reap(proc)


def test_status_shows_the_host_and_json_the_lease(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    proc = start_lease(
        "bot", host_dir("a"), redis_server.url, "--ttl", "7", host="host-a"
    )
    try:
        fence = ready_fence(proc)
        status, out, _ = cli("status", "--backend", redis_server.url)
        assert status == 0
        head, row = out.splitlines()
        assert head.split() == ["NAME", "HOST", "PID", "AGE", "COMMAND"]
        assert row.split()[:3] == ["bot", "host-a", str(proc.pid)]
        status, out, _ = cli("status", "bot", "--json", "--backend", redis_server.url)
        assert status == 0
        (one,) = json.loads(out)
        assert one["pid"] == proc.pid
        assert one["host"] == "host-a"
        assert one["fence"] == fence
        assert one["ttl"] == 7.0
        assert abs(one["renewed"] - time.time()) < 60
        status, out, _ = cli("status", "other", "--backend", redis_server.url)
        assert status == 1
    finally:
        reap(proc)


def test_stop_asks_for_a_step_down(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    proc = start_lease("bot", host_dir("a"), redis_server.url, "--ttl", "3")
    try:
        ready_fence(proc)
        status, out, _ = cli("stop", "bot", "--backend", redis_server.url)
        assert status == 0, out
        assert f"pid {proc.pid}" in out
        assert proc.wait(DEADLINE) == 143
        assert cli("stop", "bot", "--backend", redis_server.url)[0] == 1
    finally:
        reap(proc)


def test_run_gives_the_fence_and_a_lost_lease_stops_the_whole_tree(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    wrapper = subprocess.Popen(
        [
            CLI,
            "run",
            "--backend",
            redis_server.url,
            "--ttl",
            "1.5",
            "--dir",
            str(host_dir("a")),
            "bot",
            "--",
            sys.executable,
            "-c",
            ESCAPING_CMD,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon = 0
    try:
        word, daemon_text, fence = read_line(wrapper).split()
        assert word == "ready"
        daemon = int(daemon_text)
        assert int(fence) > 0
        tree = [child.pid for child in psutil.Process(wrapper.pid).children()]
        assert daemon in tree  # it escaped CMD's tree, to the wrapper
        with redis_server.client() as admin:
            admin.delete(b"singleton_proc:{bot}:lease")  # as if it had expired
        assert wrapper.wait(DEADLINE) == 75
        assert wrapper.stderr is not None
        assert "was lost" in one_error_line(wrapper.stderr.read())
        for pid in tree:  # stopped before the wrapper exited
            assert not psutil.pid_exists(pid) or is_zombie_or_gone(pid)
    finally:
        reap(wrapper)
        if daemon:
            wait_until_gone(daemon)


def is_zombie_or_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting to be reaped counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_an_unreachable_backend_exits_75_with_one_line(
    host_dir: Callable[[str], Path],
) -> None:
    pytest.importorskip("redis")
    url = f"redis://:hush@127.0.0.1:{free_port()}/0"
    status, out, err = cli(
        "run", "--backend", url, "--dir", str(host_dir("a")), "bot", "--", "true"
    )
    assert status == 75
    assert out == ""
    line = one_error_line(err)
    assert "hush" not in line
    assert "127.0.0.1" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["status", "--backend", "http://x"], "redis://"),
        (["run", "--ttl", "5", "bot", "--", "true"], "--ttl applies only"),
        (["run", "--backend", "redis://h/0", "--ttl", "0", "b", "--", "true"], "ttl"),
    ],
)
def test_bad_backend_options_are_usage_errors(args: list[str], words: str) -> None:
    pytest.importorskip("redis")
    status, _, err = cli(*args)
    assert status == 2
    assert words in one_error_line(err)


def test_a_password_on_the_holders_command_line_is_never_shown(
    tmp_path: Path, host_dir: Callable[[str], Path]
) -> None:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    with redis_server(workdir, "--requirepass", "s3cret") as server:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/0"
        proc = start_lease("bot", host_dir("a"), url)  # the URL is in its argv
        try:
            ready_fence(proc)
            assert "s3cret" in " ".join(psutil.Process(proc.pid).cmdline())
            local = (host_dir("a") / "bot.pid").read_text()
            with server.client(password="s3cret") as admin:  # noqa: S106
                remote = admin.hget(b"singleton_proc:{bot}:record", "json")
            for shown in (
                local,
                remote.decode(),
                cli("status", "--backend", url)[1],
                cli("status", "--json", "--backend", url)[1],
                str(holder("bot", backend=url)),
            ):
                assert "s3cret" not in shown
                assert ":***@" in shown
        finally:
            reap(proc)
