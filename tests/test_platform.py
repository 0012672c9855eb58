"""The platform seam: /proc/locks parsing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil
import pytest

from singleton_proc import holder, is_running
from singleton_proc._base import procfs

from helpers import (
    DEADLINE,
    holding,
    linux_only,
    needs_root,
    read_line,
    reap,
    wait_until_gone,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = linux_only("/proc (/proc/locks, environ, maps) and PR_SET_PDEATHSIG")


def test_flock_holders_lists_the_holder_and_not_the_waiters(tmp_path: Path) -> None:
    import fcntl  # noqa: PLC0415  (POSIX: the module is collected on Windows too)

    path = tmp_path / "f.lock"
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        assert procfs.flock_holders(str(tmp_path), os.fstat(fd)) == frozenset()
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiter = subprocess.Popen(
            ["sh", "-c", f"echo waiting; exec flock {path} true"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert read_line(waiter) == "waiting"
            _wait_for_waiter(os.fstat(fd).st_ino)
            assert procfs.flock_holders(str(tmp_path), os.fstat(fd)) == frozenset(
                {os.getpid()}
            )
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            assert waiter.wait(30) == 0
            reap(waiter)
    finally:
        os.close(fd)


def _wait_for_waiter(inode: int) -> None:
    """Poll /proc/locks until a blocked waiter on ``inode`` shows up."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open("/proc/locks", encoding="ascii") as locks:
            if any(
                "->" in line and line.split()[6].endswith(f":{inode}") for line in locks
            ):
                return
        time.sleep(0.005)
    raise AssertionError("the waiter never blocked on the lock")


def test_flock_holders_without_proc_locks_cannot_tell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "_PROC_LOCKS", tmp_path / "missing")
    assert procfs.flock_holders(str(tmp_path), os.stat(tmp_path)) is None


def test_flock_holders_skips_malformed_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = os.stat(tmp_path)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    fake = tmp_path / "locks"
    fake.write_text(
        f"1: FLOCK  ADVISORY  WRITE 77 {key} 0 EOF\n"
        f"2: FLOCK  ADVISORY  WRITE notapid {key} 0 EOF\n"
        f"3: -> FLOCK  ADVISORY  WRITE 88 {key} 0 EOF\n"
        f"4: POSIX  ADVISORY  WRITE 99 {key} 0 EOF\n"
        "garbage\n"
    )
    monkeypatch.setattr(procfs, "_PROC_LOCKS", fake)
    assert procfs.flock_holders(str(tmp_path), st) == frozenset({77})


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=60
    )


@pytest.fixture
def overlay_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on overlayfs over layers on two filesystems, as in containers.

    There ``stat`` reports one device for a file and ``/proc/locks`` another.
    """
    layers = {name: tmp_path / name for name in ("lower", "upper", "work", "merged")}
    for path in layers.values():
        path.mkdir()
    options = "lowerdir={lower},upperdir={upper},workdir={work}".format(**layers)
    mounted = []
    try:
        for command in (
            ("mount", "-t", "tmpfs", "tmpfs", str(layers["lower"])),
            ("mount", "-t", "overlay", "overlay", "-o", options, str(layers["merged"])),
        ):
            result = _run(*command)
            if result.returncode != 0:
                pytest.skip(f"cannot mount here: {result.stderr.strip()}")
            mounted.append(command[-1])
        locks = layers["merged"] / "locks"
        locks.mkdir(mode=0o700)
        yield locks
    finally:
        for point in reversed(mounted):
            _run("umount", point)


@needs_root
def test_holders_are_seen_on_overlayfs(overlay_dir: Path) -> None:
    with holding("bot", overlay_dir) as first:
        st = os.lstat(overlay_dir / "bot.lock")
        in_proc_locks = procfs._device(st.st_dev)  # noqa: SLF001
        assert procfs._mount_device(str(overlay_dir)) != in_proc_locks  # noqa: SLF001
        assert procfs.flock_holders(str(overlay_dir), st) == frozenset({first.pid})
        assert is_running("bot", overlay_dir)
        found = holder("bot", overlay_dir)
        assert found is not None
        assert found.pid == first.pid


#: A parent that starts an idle child under set_parent_death_signal, prints
#: the child's pid and waits. The child waits on nothing the parent's death
#: would end (no pipe from it): only the death signal can stop it.
_DEATH_SIGNAL_PARENT = """
import subprocess, sys
from singleton_proc._base import platform as _platform
idle = "import signal; signal.pause()"
child = subprocess.Popen(
    [sys.executable, "-c", idle],
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    preexec_fn=_platform.set_parent_death_signal,
)
print(child.pid, flush=True)
sys.stdin.read()
"""


def test_set_parent_death_signal_kills_the_child_with_its_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _DEATH_SIGNAL_PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = int(read_line(parent))
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()
        parent.wait(DEADLINE)
        wait_until_gone(child, 10)  # adopted by us (a subreaper), then reaped
        assert not psutil.pid_exists(child)
    finally:
        reap(parent)


def test_start_environments_read_the_variable_and_tell_equal_environments() -> None:
    """Its words, not a look-alike's; equal environments, equal digests."""
    marked = {"XSINGLETON_PROC_TREE": "look-alike", "SINGLETON_PROC_TREE": "a1 b2"}
    settings = [marked, {"XSINGLETON_PROC_TREE": "look-alike"}, dict(marked)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", "print('ready', flush=True); input()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for env in settings
    ]
    try:
        # Running, past exec: while it execs, a process's environ reads empty.
        assert [read_line(child) for child in children] == ["ready"] * 3
        seen = procfs.start_environments("SINGLETON_PROC_TREE")
        assert seen is not None
        (words, digest), (other_words, other), (_, same) = (
            seen[child.pid] for child in children
        )
        assert (words, other_words) == (frozenset({"a1", "b2"}), frozenset())
        assert digest == same != other
    finally:
        for child in children:
            reap(child)


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux memory files")
def test_a_named_memory_mapping_is_seen_in_a_fork_not_after_exec() -> None:
    """What ``lineage`` relies on for a daemon forked off without ``exec``."""
    from singleton_proc._base import platform  # noqa: PLC0415

    mapping = platform.map_named_memory("singleton-proc-test:m1")
    assert mapping is not None
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(write_end)
            os.read(read_end, 1)
            sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
            os.execv(sys.executable, sleeper)  # noqa: S606
        finally:
            os._exit(1)
    os.close(read_end)
    try:
        assert procfs.mapped_memory_names(child, "singleton-proc-test:") == frozenset(
            {"singleton-proc-test:m1"}
        )
        assert procfs.mapped_memory_names(child, "other:") == frozenset()
        os.write(write_end, b"x")  # exec now: a new program maps nothing of ours
        deadline = time.monotonic() + DEADLINE
        while procfs.mapped_memory_names(child, "singleton-proc-test:"):
            assert time.monotonic() < deadline, "the mapping survived exec"
            time.sleep(0.005)
    finally:
        os.close(write_end)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        mapping.close()
