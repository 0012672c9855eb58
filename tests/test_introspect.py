"""holder, is_running, list_instances: accurate, and never taking the lock."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import psutil
import pytest
from test_cli import CLI, cli

from singleton_proc import (
    AlreadyRunningError,
    SingleInstance,
    holder,
    is_running,
    list_instances,
)
from singleton_proc._base import platform as _platform

from helpers import (
    DEADLINE,
    HOLDER_SCRIPT,
    finish,
    forks,
    holding,
    linux_only,
    read_line,
    runs_flock_1,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def never_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything takes a lock while the test looks."""

    def refuse(fd: int) -> bool:
        raise AssertionError(f"introspection tried to lock fd {fd}")

    monkeypatch.setattr(_platform, "try_lock", refuse)


@pytest.mark.usefixtures("never_lock")
def test_nothing_running(lock_dir: Path) -> None:
    assert holder("bot", lock_dir) is None
    assert not is_running("bot", lock_dir)
    assert list_instances(lock_dir) == []


@pytest.mark.usefixtures("never_lock")
def test_a_missing_explicit_directory_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert holder("bot", missing) is None
    assert not is_running("bot", missing)
    assert list_instances(missing) == []
    assert not missing.exists()


@runs_flock_1
def test_every_holder_is_listed_and_nothing_else(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with holding("alpha", lock_dir) as alpha, holding("beta", lock_dir) as beta:
        with holding("stale", lock_dir) as stale:
            stale.kill()  # SIGKILL: its record stays, its lock is gone
            stale.wait()
        assert (lock_dir / "stale.pid").exists()
        (lock_dir / "not a name\x01.lock").write_text("")
        flock = subprocess.Popen(
            [
                "flock",
                "-n",
                str(lock_dir / "foreign.lock"),
                "sh",
                "-c",
                "echo locked; exec cat",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert read_line(flock) == "locked"

            def refuse(fd: int) -> bool:
                raise AssertionError(f"introspection tried to lock fd {fd}")

            monkeypatch.setattr(_platform, "try_lock", refuse)
            listed = list_instances(lock_dir)
            assert [(h.name, h.pid) for h in listed] == [
                ("alpha", alpha.pid),
                ("beta", beta.pid),
            ]
            found = holder("alpha", lock_dir)
            assert found is not None
            assert found.pid == alpha.pid
            assert is_running("foreign", lock_dir), "a lock without a record still runs"
            assert holder("foreign", lock_dir) is None
            assert not is_running("stale", lock_dir)
            assert holder("stale", lock_dir) is None
            assert stale.returncode is not None
        finally:
            finish(flock)  # EOF ends cat, then flock(1) exits: nobody orphaned


def test_a_record_naming_another_live_process_is_not_believed(lock_dir: Path) -> None:
    """The lock is held by one process, the record names another: unknown."""
    with holding("bot", lock_dir) as first:
        record = (lock_dir / "bot.pid").read_text()
        (lock_dir / "bot.pid").write_text(
            record.replace(f'"pid": {first.pid}', f'"pid": {os.getpid()}')
        )
        assert is_running("bot", lock_dir)
        assert holder("bot", lock_dir) is None


@pytest.mark.usefixtures("never_lock")
def test_introspection_in_the_default_directory() -> None:
    assert list_instances() == []
    assert not is_running("bot")


def test_introspection_validates_the_name() -> None:
    with pytest.raises(ValueError, match="path separator"):
        holder("../etc/passwd")
    with pytest.raises(ValueError, match="path separator"):
        is_running("a/b")


def test_holder_inside_the_holding_process(lock_dir: Path) -> None:
    with SingleInstance("bot", directory=lock_dir):
        found = holder("bot", lock_dir)
        assert found is not None
        assert found.pid == os.getpid()


# --- PID namespaces (containers) ----------------------------------------------

#: A command's prefix that runs it as the first process of a new PID namespace
#: with its own /proc, as a container does.
NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
pid_namespaces_are_linux = linux_only("PID namespaces (unshare(1), /proc)")


@pytest.fixture
def pid_namespaces() -> None:
    """Skip unless this machine lets us make PID namespaces (root, unshare(1))."""
    try:
        done = subprocess.run(
            [*NAMESPACE, "true"],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("unshare(1) is not installed")
    if done.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {done.stderr.strip()}")


@contextlib.contextmanager
def holding_in_a_namespace(name: str, directory: Path) -> Iterator[int]:
    """``child_holder.py`` holding ``name`` in a PID namespace of its own.

    Yields its pid as seen here; it is pid 1 in its namespace.
    """
    proc = subprocess.Popen(
        [*NAMESPACE, sys.executable, str(HOLDER_SCRIPT), name, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(proc) == "ready"
        (child,) = psutil.Process(proc.pid).children()
        yield child.pid
    finally:
        finish(proc)  # stdin closes: the holder releases and exits, then unshare


@pid_namespaces_are_linux
@pytest.mark.usefixtures("pid_namespaces")
def test_a_holder_in_a_pid_namespace_below_is_seen_with_its_pid_here(
    lock_dir: Path,
) -> None:
    with holding_in_a_namespace("bot", lock_dir) as pid:
        assert json.loads((lock_dir / "bot.pid").read_text())["pid"] == 1
        found = holder("bot", lock_dir)
        assert found is not None
        assert found.pid == pid
        assert [h.pid for h in list_instances(lock_dir)] == [pid]
        status, out, _ = cli("status", "bot", "--dir", str(lock_dir))
        assert status == 0
        assert out.splitlines()[1].split()[:2] == ["bot", str(pid)]


LOOK = """
import sys
from singleton_proc import holder, is_running
print(is_running("bot", sys.argv[1]), holder("bot", sys.argv[1]))
"""


@pid_namespaces_are_linux
@pytest.mark.usefixtures("pid_namespaces")
def test_a_holder_outside_this_pid_namespace_is_running_and_says_so(
    lock_dir: Path,
) -> None:
    with holding("bot", lock_dir):
        looked = subprocess.run(
            [*NAMESPACE, sys.executable, "-c", LOOK, str(lock_dir)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=True,
        )
        assert looked.stdout.split() == ["True", "None"]
        status = subprocess.run(
            [*NAMESPACE, CLI, "status", "bot", "--dir", str(lock_dir)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert "held by a process outside this PID namespace" in status.stdout


# --- holders that vanish while they are looked at -----------------------------

#: Forks holders of "bot" that die at once, COUNT times, then prints "done".
VANISHING = """
import os, sys
from singleton_proc import SingleInstance
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:
        SingleInstance("bot", directory=sys.argv[1], on_conflict="wait").acquire()
        os._exit(0)
    os.waitpid(pid, 0)
print("done", flush=True)
"""


@forks  # the holders VANISHING starts
@pytest.mark.slow  # 2 s of churn, the same on every Python
def test_holders_that_vanish_while_looked_at_are_a_normal_case(lock_dir: Path) -> None:
    """Every look and every acquire answers; none raises what psutil saw."""
    churn = subprocess.Popen(
        [sys.executable, "-c", VANISHING, str(lock_dir), "400"],
        stdout=subprocess.PIPE,
        text=True,
    )
    looks = 0
    try:
        assert read_line(churn) == "ready"
        while churn.poll() is None:
            holder("bot", lock_dir)
            is_running("bot", lock_dir)
            list_instances(lock_dir)
            with contextlib.suppress(AlreadyRunningError):
                SingleInstance("bot", directory=lock_dir).acquire().release()
            looks += 1
        assert read_line(churn) == "done"
    finally:
        finish(churn)
    assert churn.returncode == 0
    assert looks > 0
