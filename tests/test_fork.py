"""Fork safety both ways: a forked child releases nothing and keeps nothing alive."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from singleton_proc import SingleInstance, is_running

from helpers import (
    DEADLINE,
    TESTS,
    posix_only,
    read_line,
    reads_proc,
    reap,
    wait_until_gone,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = posix_only("os.fork")

FORK_SCRIPT = TESTS / "child_fork.py"


def _run(name: str, directory: Path, how: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, str(FORK_SCRIPT), name, str(directory), how],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@reads_proc  # /proc/locks: who holds the lock after the child ended
@pytest.mark.parametrize("how", ["exit", "sys.exit", "atexit", "release", "mp-fork"])
def test_a_forked_child_ending_releases_and_deletes_nothing(
    lock_dir: Path, how: str
) -> None:
    facts: dict[str, Any] = {}
    for line in _run("bot", lock_dir, how):
        facts.update(line)
    parent = facts["parent_pid"]
    assert facts["child_sees_held"] is False, "the child does not think it holds"
    assert facts["child_sigterm_default"] is True, "SIGTERM kills a child as usual"
    assert facts.get("child_status", 0) == 0
    assert facts["parent_held"] is True
    assert facts["record_pid"] == parent, "the parent's record is still there"
    assert facts["lock_pids"] == [parent], "the parent still holds the lock"
    assert facts["running"] is True
    assert not is_running("bot", lock_dir), "the parent released at its exit"


def test_the_parent_exiting_frees_the_name_while_its_forked_child_lives(
    lock_dir: Path,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(FORK_SCRIPT), "bot", str(lock_dir), "parent-exits"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    child_pid = None
    try:
        facts: dict[str, Any] = {}
        for _ in range(2):
            facts.update(json.loads(read_line(proc)))
        child_pid = facts["child_pid"]
        assert proc.wait(DEADLINE) == 0
        assert psutil.pid_exists(child_pid), "the forked child lives on"
        assert not is_running("bot", lock_dir)
        with SingleInstance("bot", directory=lock_dir) as instance:
            assert instance.held
    finally:
        reap(proc)  # closes the stdin pipe the forked child reads: it exits
        if child_pid is not None:
            wait_until_gone(child_pid)
