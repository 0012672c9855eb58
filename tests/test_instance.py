"""SingleInstance across real processes: refused, exit, crash, same process."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

import pytest

from singleton_proc import AlreadyRunningError, SingleInstance, holder, is_running

from helpers import finish, holding, posix_only, read_line, record_of, start_holder

if TYPE_CHECKING:
    from pathlib import Path


def test_a_second_process_is_refused_and_sees_the_holder(lock_dir: Path) -> None:
    with holding("bot", lock_dir) as first:
        second = start_holder("bot", lock_dir)
        code, out, err = finish(second)
        assert (code, out.strip(), err) == (3, f"conflict {first.pid}", "")


def test_raise_names_the_holder(lock_dir: Path) -> None:
    with holding("bot", lock_dir) as first:
        with pytest.raises(AlreadyRunningError) as info:
            SingleInstance("bot", directory=lock_dir).acquire()
        assert info.value.holder is not None
        assert info.value.holder.pid == first.pid
        assert f"'bot' is already running (pid {first.pid}, since " in str(info.value)
        assert "child_holder.py" in str(info.value)
    assert not is_running("bot", lock_dir)


@pytest.mark.parametrize("exit_code", [1, 7])
def test_exit_prints_one_line_naming_the_holder(lock_dir: Path, exit_code: int) -> None:
    with holding("bot", lock_dir) as first:
        second = start_holder("bot", lock_dir, policy="exit", exit_code=exit_code)
        code, out, err = finish(second)
    assert code == exit_code
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(
        f"singleton_proc: 'bot' is already running (pid {first.pid}, since "
    )
    assert "command: " in err
    assert "child_holder.py bot" in err


@posix_only("SIGKILL")
def test_a_sigkilled_holder_frees_the_name_at_once(lock_dir: Path) -> None:
    with holding("bot", lock_dir) as first:
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert record_of(lock_dir, "bot") is not None, (
            "a killed holder leaves its record"
        )
        assert not is_running("bot", lock_dir)
        assert holder("bot", lock_dir) is None, "a stale record is not believed"
        with SingleInstance("bot", directory=lock_dir):
            found = record_of(lock_dir, "bot")
            assert found is not None
            assert found.pid == os.getpid(), "the stale record is overwritten"


def test_a_deleted_lock_file_does_not_let_a_newcomer_in(lock_dir: Path) -> None:
    with holding("bot", lock_dir) as first:
        (lock_dir / "bot.lock").unlink()
        with pytest.raises(AlreadyRunningError, match="lock file was deleted") as info:
            SingleInstance("bot", directory=lock_dir).acquire()
        assert info.value.holder is not None
        assert info.value.holder.pid == first.pid
        assert is_running("bot", lock_dir)
        found = holder("bot", lock_dir)
        assert found is not None
        assert found.pid == first.pid
        second = start_holder("bot", lock_dir)
        assert finish(second)[:2] == (3, f"conflict {first.pid}\n")


def test_same_process_second_instance_is_refused(lock_dir: Path) -> None:
    with SingleInstance("bot", directory=lock_dir):
        with pytest.raises(
            AlreadyRunningError, match="held by this very process"
        ) as info:
            SingleInstance("bot", directory=lock_dir).acquire()
        assert info.value.holder is not None
        assert info.value.holder.pid == os.getpid()
        assert is_running("bot", lock_dir)
    assert not is_running("bot", lock_dir)


def test_entering_a_held_object_again_is_a_runtime_error(lock_dir: Path) -> None:
    instance = SingleInstance("bot", directory=lock_dir)
    with instance:
        with pytest.raises(RuntimeError, match="already held"):
            instance.acquire()
        assert instance.held
    assert not instance.held


def test_release_when_not_held_is_a_no_op_and_reacquire_works(lock_dir: Path) -> None:
    instance = SingleInstance("bot", directory=lock_dir)
    instance.release()
    for _ in range(3):
        assert instance.acquire() is instance
        assert "held=True" in repr(instance)
        instance.release()
        instance.release()
    assert not is_running("bot", lock_dir)


def test_acquire_without_release_is_cleaned_up_at_exit(lock_dir: Path) -> None:
    proc = start_holder("bot", lock_dir, "--no-release")
    assert read_line(proc) == "ready"
    assert (lock_dir / "bot.pid").exists()
    code, out, _ = finish(proc)  # EOF: it returns without calling release()
    assert code == 0
    assert "released" not in out, "the program itself never released"
    assert not is_running("bot", lock_dir)
    assert not (lock_dir / "bot.pid").exists(), "atexit removed the record"


@pytest.mark.parametrize("policy", ["kill", "RAISE", ""])
def test_unknown_policies_are_refused_naming_the_allowed_ones(policy: str) -> None:
    with pytest.raises(
        ValueError,
        match="on_conflict must be one of 'raise', 'exit', 'wait', 'replace'",
    ):
        SingleInstance("bot", on_conflict=policy)  # type: ignore[arg-type]


def test_exit_code_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="exit_code"):
        SingleInstance("bot", exit_code="1")  # type: ignore[arg-type]


def test_default_directory_is_used_without_directory(private_default_dir: Path) -> None:
    with SingleInstance("bot"):
        assert (private_default_dir / "bot.lock").exists()
        assert is_running("bot")


def test_the_exit_line_stays_one_printable_line_whatever_the_command(
    lock_dir: Path,
) -> None:
    nasty = "\x1b]0;pwned\x07 line\u2028sep\x0bvt\x85nel\nnl"
    first = start_holder("bot", lock_dir, "--note", nasty)
    try:
        assert read_line(first) == "ready"
        second = start_holder("bot", lock_dir, policy="exit")
        code, _, err = finish(second)
    finally:
        finish(first)
    assert code == 1
    line = err.removesuffix("\n")
    assert "\n" not in line
    assert line.isprintable()
    assert "\\x1b]0;pwned" in line
