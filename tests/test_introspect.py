"""holder, is_running, list_instances: accurate, and never taking the lock."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from singleton_proc import SingleInstance, _platform, holder, is_running, list_instances

from helpers import finish, holding, read_line

if TYPE_CHECKING:
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
