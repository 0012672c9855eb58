"""The platform seam: /proc/locks parsing."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from typing import TYPE_CHECKING

from singleton_proc import _platform

from helpers import read_line, reap

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_flock_holders_lists_the_holder_and_not_the_waiters(tmp_path: Path) -> None:
    path = tmp_path / "f.lock"
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        assert _platform.flock_holders(os.fstat(fd)) == frozenset()
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiter = subprocess.Popen(
            ["sh", "-c", f"echo waiting; exec flock {path} true"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert read_line(waiter) == "waiting"
            _wait_for_waiter(os.fstat(fd).st_ino)
            assert _platform.flock_holders(os.fstat(fd)) == frozenset({os.getpid()})
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
    monkeypatch.setattr(_platform, "_PROC_LOCKS", tmp_path / "missing")
    assert _platform.flock_holders(os.stat(tmp_path)) is None


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
    monkeypatch.setattr(_platform, "_PROC_LOCKS", fake)
    assert _platform.flock_holders(st) == frozenset({77})
