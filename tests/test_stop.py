"""Replacing a holder, and terminate(): proven identity, whole trees, bounded time."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from singleton_proc import (
    AlreadyRunningError,
    LockTimeoutError,
    ReplaceRefusedError,
    SingleInstance,
    holder,
    is_running,
    terminate,
)
from singleton_proc._base.waits import run_blocking
from singleton_proc._lock.stop import stopping

from helpers import (
    DEADLINE,
    finish,
    flock_holder,
    holding,
    needs_root,
    own_holder,
    posix_only,
    read_line,
    reap,
    record_of,
    runs_flock_1,
    start_holder,
    wait_until_gone,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = posix_only("stops process trees with SIGTERM, SIGSTOP and SIGKILL")

REPLACE_BOUND = 2.0  # SPEC "bound in tests"; the target (bench) is 50 ms


def _replace(lock_dir: Path, grace: float = 5.0) -> SingleInstance:
    return SingleInstance("bot", directory=lock_dir, on_conflict="replace", grace=grace)


def test_a_holder_that_exits_on_sigterm_is_replaced_promptly(
    lock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = start_holder("bot", lock_dir)
    try:
        assert read_line(old) == "ready"
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="singleton_proc"), _replace(lock_dir):
            elapsed = time.monotonic() - started
            assert old.wait(DEADLINE) == 143, "SIGTERM became a clean SystemExit"
            found = record_of(lock_dir, "bot")
            assert found is not None
            assert found.pid == os.getpid()
        assert elapsed < REPLACE_BOUND
        assert read_line(old) == "finally", "the old copy shut down cleanly"
        assert f"stopping 'bot': SIGTERM to {old.pid} (" in caplog.text
        assert "stopped 'bot': 1 process(es) gone" in caplog.text
        assert "SIGKILL" not in caplog.text
    finally:
        reap(old)


def test_a_holder_that_ignores_sigterm_is_killed_after_grace(
    lock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with holding("bot", lock_dir, "--ignore-term") as old:
        started = time.monotonic()
        with (
            caplog.at_level(logging.INFO, logger="singleton_proc"),
            _replace(lock_dir, grace=0.3) as instance,
        ):
            assert instance.held
        elapsed = time.monotonic() - started
        assert old.wait(DEADLINE) == -signal.SIGKILL
    assert 0.3 <= elapsed < 0.3 + REPLACE_BOUND
    assert f"SIGKILL needed after 0.3 s for {old.pid} (" in caplog.text


def _tree(proc: subprocess.Popen[str]) -> dict[str, Any]:
    line = read_line(proc)
    assert line.startswith("tree "), line
    tree: dict[str, Any] = json.loads(line.removeprefix("tree "))
    assert read_line(proc) == "ready"
    return tree


@pytest.mark.parametrize("new_session", [False, True], ids=["our-group", "own-group"])
def test_the_whole_tree_goes_and_nothing_else(
    lock_dir: Path, new_session: bool
) -> None:
    """Pool workers (whose pool respawns them), a child, a SIGTERM-deaf grandchild.

    Every process that ever belonged to the old tree ends up dead: those we
    know by pid, and any spawned during the stop, which are re-parented to
    this test (a subreaper) and must all be zombies, not running.
    """
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    old = start_holder("bot", lock_dir, "--tree", new_session=new_session)
    try:
        tree = _tree(old)
        pids = [old.pid, *tree["workers"], tree["child"], tree["grandchild"]]
        with _replace(lock_dir, grace=0.5):
            assert bystander.poll() is None, "a process outside the tree is untouched"
            known = [pid for pid in pids if _runs(pid)]
            assert known == [], "every process of the old tree is gone"
            adopted = [
                p.pid for p in psutil.Process().children() if p.pid != bystander.pid
            ]
            assert [pid for pid in adopted if _runs(pid)] == [], (
                "and those spawned since"
            )
    finally:
        reap(old)
        for proc in psutil.Process().children():  # reap the adopted zombies
            if proc.pid != bystander.pid:
                wait_until_gone(proc.pid)
        finish(bystander)  # type: ignore[arg-type]


def _runs(pid: int) -> bool:
    """Whether ``pid`` is a running process (not gone, not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_pid_reuse_is_refused_and_nothing_is_stopped(lock_dir: Path) -> None:
    with holding("bot", lock_dir) as old:
        record = json.loads((lock_dir / "bot.pid").read_text())
        record["create_time"] -= 3600  # as if the pid now belonged to another program
        (lock_dir / "bot.pid").write_text(json.dumps(record))
        with pytest.raises(ReplaceRefusedError, match="the pid was reused") as info:
            _replace(lock_dir).acquire()
        assert "Nothing was stopped" in str(info.value)
        assert info.value.holder is None
        assert old.poll() is None


@runs_flock_1
def test_a_missing_record_is_refused_naming_the_lock_holder(lock_dir: Path) -> None:
    flock = flock_holder(lock_dir / "bot.lock")
    try:
        with pytest.raises(
            ReplaceRefusedError, match=f"held by pid {flock.pid}"
        ) as refused:
            _replace(lock_dir).acquire()
        assert flock.poll() is None
        assert refused.value.holder is None
        assert refused.value.reason == (  # why, for code that reads the error
            "its record is missing or unreadable; the lock is held by pid "
            f"{flock.pid} (another tool, such as flock(1), may hold it)"
        )
    finally:
        finish(flock)


@runs_flock_1
def test_a_record_of_a_dead_process_is_refused(lock_dir: Path) -> None:
    with holding("other", lock_dir) as dead:
        record = (lock_dir / "other.pid").read_text().replace('"other"', '"bot"')
    (lock_dir / "bot.pid").write_text(record)
    flock = flock_holder(lock_dir / "bot.lock")
    try:
        with pytest.raises(
            ReplaceRefusedError,
            match=f"pid {dead.pid} named by the record does not hold",
        ):
            _replace(lock_dir).acquire()
        assert flock.poll() is None
    finally:
        finish(flock)


REPLACER = """
import sys
from singleton_proc import ReplaceRefusedError, SingleInstance
try:
    SingleInstance("bot", directory=sys.argv[1], on_conflict="replace").acquire()
except ReplaceRefusedError as exc:
    print(exc)
"""


def test_our_own_ancestor_is_refused(lock_dir: Path) -> None:
    """The holder starts the replacer itself: replacing would kill its parent."""
    code = (
        "import subprocess, sys\n"
        "from singleton_proc import SingleInstance\n"
        "with SingleInstance('bot', directory=sys.argv[1]):\n"
        "    replacer, directory = sys.argv[2], sys.argv[1]\n"
        "    subprocess.run([sys.executable, '-c', replacer, directory], check=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(lock_dir), REPLACER],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "is an ancestor of this process" in proc.stdout
    assert "Nothing was stopped" in proc.stdout


@pytest.fixture
def other_users_holder(shared_dir: Path) -> Iterator[int]:
    """A process of uid 65534 holding "bot" in a shared directory; yields its pid."""
    ready_read, ready_write = os.pipe()
    stop_read, stop_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_read)
            os.close(stop_write)
            os.setgid(65534)
            os.setgroups([])
            os.setuid(65534)
            SingleInstance("bot", directory=shared_dir).acquire()
            os.write(ready_write, b"ready")
            os.read(stop_read, 1)
        finally:
            os._exit(0)
    os.close(ready_write)
    os.close(stop_read)
    try:
        assert os.read(ready_read, 5) == b"ready"
        yield pid
    finally:
        os.close(stop_write)
        os.close(ready_read)
        os.waitpid(pid, 0)


@needs_root
def test_another_users_process_is_refused(
    shared_dir: Path, other_users_holder: int
) -> None:
    with pytest.raises(ReplaceRefusedError, match="runs as user 'nobody', not as you"):
        SingleInstance("bot", directory=shared_dir, on_conflict="replace").acquire()
    with pytest.raises(ReplaceRefusedError, match="cannot stop 'bot'"):
        terminate("bot", directory=shared_dir)
    assert psutil.pid_exists(other_users_holder)
    assert is_running("bot", shared_dir)


def test_a_second_replace_in_the_same_process_is_refused_not_suicidal(
    lock_dir: Path,
) -> None:
    with (
        SingleInstance("bot", directory=lock_dir),
        pytest.raises(AlreadyRunningError, match="held by this very process"),
    ):
        _replace(lock_dir).acquire()


def test_terminate_stops_the_holder_without_taking_the_name(lock_dir: Path) -> None:
    assert terminate("bot", directory=lock_dir) is None, "nothing running"
    with holding("bot", lock_dir) as old:
        stopped = terminate("bot", grace=5, directory=lock_dir)
        assert stopped is not None
        assert stopped.pid == old.pid
        assert old.wait(DEADLINE) == 143
    assert not is_running("bot", lock_dir)
    assert holder("bot", lock_dir) is None
    assert not (lock_dir / "bot.pid").exists(), "the holder removed its record"


@pytest.mark.parametrize(
    ("grace", "error"), [(-1, ValueError), (float("inf"), ValueError), ("5", TypeError)]
)
def test_bad_grace_is_refused(grace: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="grace must be"):
        SingleInstance("bot", on_conflict="replace", grace=grace)  # type: ignore[arg-type]
    with pytest.raises(error, match="grace must be"):
        terminate("bot", grace=grace)  # type: ignore[arg-type]


def test_replacing_inside_async_with_keeps_the_loop_running(lock_dir: Path) -> None:
    import asyncio  # noqa: PLC0415

    with holding("bot", lock_dir, "--ignore-term") as old:

        async def main() -> int:
            ticks = 0
            done = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await asyncio.sleep(0.005)

            async def replace() -> None:
                async with _replace(lock_dir, grace=0.3):
                    done.set()

            await asyncio.gather(replace(), ticker())
            return ticks

        ticks = asyncio.run(main())
        assert old.wait(DEADLINE) == -signal.SIGKILL
    assert ticks >= 10, "the event loop kept running during the grace period"


def test_a_daemonized_child_that_left_the_tree_but_not_the_group_goes_too(
    lock_dir: Path,
) -> None:
    old = start_holder("bot", lock_dir, "--daemon-child", new_session=True)
    daemon = None
    try:
        line = read_line(old)
        assert line.startswith("daemon "), line
        daemon = int(line.split()[1])
        assert read_line(old) == "ready"
        assert daemon not in {
            p.pid for p in psutil.Process(old.pid).children(recursive=True)
        }
        with _replace(lock_dir, grace=0.3):
            assert not _runs(daemon), "reached through the holder's own group"
    finally:
        reap(old)
        if daemon is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(daemon).kill()
            wait_until_gone(daemon)


def test_a_stopped_holder_is_resumed_to_see_its_sigterm(lock_dir: Path) -> None:
    with holding("bot", lock_dir) as old:
        old.send_signal(signal.SIGSTOP)  # Ctrl-Z
        started = time.monotonic()
        with _replace(lock_dir, grace=5):
            assert time.monotonic() - started < REPLACE_BOUND
        assert old.wait(DEADLINE) == 143, "it got SIGTERM and exited cleanly"
        assert read_line(old) == "finally"


def test_a_pid_reused_before_the_stop_signals_nobody() -> None:
    """The holder exits and its pid goes to another program between proof and stop."""
    unrelated = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        start_new_session=True,  # a group leader, like a daemon would be
    )
    try:
        impostor = dataclasses.replace(
            own_holder("bot"),
            pid=unrelated.pid,
            create_time=psutil.Process(unrelated.pid).create_time() - 100,
        )
        report = run_blocking(stopping(impostor, grace=0.1))
        assert report.signalled == ()
        assert unrelated.poll() is None, "the new owner of the pid is untouched"
    finally:
        finish(unrelated)  # type: ignore[arg-type]


def test_a_cancelled_replace_says_what_it_did_and_leaves_nobody_frozen(
    lock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio  # noqa: PLC0415

    with holding("bot", lock_dir, "--ignore-term") as old:

        async def main() -> None:
            with pytest.raises(asyncio.TimeoutError):  # not TimeoutError before 3.11
                await asyncio.wait_for(_replace(lock_dir, grace=30).__aenter__(), 0.2)

        with caplog.at_level(logging.INFO, logger="singleton_proc"):
            asyncio.run(main())
        assert "was interrupted: SIGTERM was sent to" in caplog.text
        assert "SIGKILL was not" in caplog.text
        assert psutil.Process(old.pid).status() != psutil.STATUS_STOPPED
        assert old.poll() is None, "it ignores SIGTERM and nobody sent SIGKILL"
        old.kill()


def test_the_log_escapes_hostile_command_lines(
    lock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        holding("bot", lock_dir, "--note", "x\nCRITICAL forged\x1b[2J"),
        caplog.at_level(logging.INFO, logger="singleton_proc"),
        _replace(lock_dir),
    ):
        pass
    lines = [r.getMessage() for r in caplog.records]
    assert all(line.isprintable() for line in lines), lines
    assert any("x\\nCRITICAL forged\\x1b[2J" in line for line in lines)


def test_a_detached_holder_is_replaced_and_waited_for(lock_dir: Path) -> None:
    """Its lock file was deleted: "wait" times out, "replace" stops it."""
    with holding("bot", lock_dir) as old:
        (lock_dir / "bot.lock").unlink()
        with pytest.raises(LockTimeoutError, match="lock file was deleted"):
            SingleInstance(
                "bot", directory=lock_dir, on_conflict="wait", timeout=0.1
            ).acquire()
        with _replace(lock_dir):
            assert old.wait(DEADLINE) == 143
