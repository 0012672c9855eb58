"""The lock file: never followed through a symlink, re-checked after locking."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from singleton_proc import (
    AlreadyRunningError,
    InsecureLockPathError,
    SingleInstance,
)
from singleton_proc._base import platform as _platform
from singleton_proc._base import procfs
from singleton_proc._lock.directory import NameFiles
from singleton_proc._lock.lockfile import lock_state, try_lock_file

from helpers import finish, holding, posix_only, read_line, reads_proc, runs_flock_1

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = posix_only("symlinks (a privilege on Windows), sh and fcntl locks")


def _locked_inodes() -> set[int]:
    with open("/proc/locks", encoding="ascii") as locks:
        return {
            int(line.split()[5].rsplit(":", 1)[1]) for line in locks if "FLOCK" in line
        }


@reads_proc  # /proc/locks: the target was never locked
def test_symlink_at_the_lock_path_is_refused_and_its_target_untouched(
    lock_dir: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (lock_dir / "bot.lock").symlink_to(precious)
    with pytest.raises(InsecureLockPathError, match="symlink"):
        SingleInstance("bot", directory=lock_dir).acquire()
    assert precious.read_text() == "keep me"
    assert precious.stat().st_ino not in _locked_inodes()
    assert sorted(p.name for p in lock_dir.iterdir()) == ["bot.lock"]
    with pytest.raises(InsecureLockPathError, match="symlink"):
        lock_state(NameFiles.of(lock_dir, "bot"))


def test_dangling_symlink_at_the_lock_path_creates_nothing(
    lock_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "would-be-created"
    (lock_dir / "bot.lock").symlink_to(target)
    with pytest.raises(InsecureLockPathError, match="symlink"):
        SingleInstance("bot", directory=lock_dir).acquire()
    assert not target.exists()


def test_a_fifo_at_the_lock_path_is_refused_without_hanging(lock_dir: Path) -> None:
    os.mkfifo(lock_dir / "bot.lock")
    with pytest.raises(InsecureLockPathError, match="not a regular file"):
        SingleInstance("bot", directory=lock_dir).acquire()


@reads_proc  # /proc/locks: which inode is locked
def test_a_file_replaced_between_open_and_lock_does_not_count(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = lock_dir / "bot.lock"
    real_try_lock = _platform.try_lock
    calls = []

    def racing_try_lock(fd: int) -> bool:
        calls.append(fd)
        locked = real_try_lock(fd)
        if len(calls) == 1:  # someone swaps the file right after our open
            (lock_dir / "new").write_text("")
            os.replace(lock_dir / "new", path)
        return locked

    monkeypatch.setattr(_platform, "try_lock", racing_try_lock)
    lock = try_lock_file(str(path))
    assert lock is not None
    try:
        assert len(calls) == 2
        assert lock.key == (path.stat().st_dev, path.stat().st_ino)
        assert path.stat().st_ino in _locked_inodes()
    finally:
        lock.release()


@runs_flock_1
def test_lock_taken_by_flock_1_counts_as_running(lock_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            "flock",
            "-n",
            str(lock_dir / "bot.lock"),
            "sh",
            "-c",
            "echo locked; exec cat",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(proc) == "locked"
        state = lock_state(NameFiles.of(lock_dir, "bot"))
        assert state.held
        assert state.pids == frozenset({proc.pid})
        with pytest.raises(
            AlreadyRunningError,
            match=f"missing or unreadable; the lock is held by pid {proc.pid}",
        ) as info:
            SingleInstance("bot", directory=lock_dir).acquire()
        assert info.value.holder is None
    finally:
        finish(proc)  # EOF ends cat, then flock(1) exits: nobody orphaned


def test_lock_state_without_proc_locks_probes_the_lock(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "flock_holders", lambda directory, st: None)  # noqa: ARG005
    files = NameFiles.of(lock_dir, "bot")
    assert not lock_state(files).held, "a missing file is not held"
    with holding("bot", lock_dir):
        state = lock_state(files)
        assert state.held
        assert state.pids is None
    state = lock_state(files)
    assert not state.held
    assert state.pids is None
    with SingleInstance("bot", directory=lock_dir):
        pass  # the probe let go of the lock
