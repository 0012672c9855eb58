"""SIGTERM while held: a clean exit, and the previous handler restored politely."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

from singleton_proc import SingleInstance, is_running

from helpers import DEADLINE, finish, holding, posix_only, read_line

if TYPE_CHECKING:
    from pathlib import Path
    from types import FrameType

pytestmark = posix_only("SIGTERM to a handler (Windows ends the process at once)")


def test_sigterm_runs_finally_blocks_and_removes_the_record(lock_dir: Path) -> None:
    with holding("bot", lock_dir) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 143
        assert read_line(proc) == "finally"
    assert not (lock_dir / "bot.pid").exists()
    assert not is_running("bot", lock_dir)


def test_handle_sigterm_false_leaves_the_default_death(lock_dir: Path) -> None:
    with holding("bot", lock_dir, "--no-handle-sigterm") as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == -signal.SIGTERM
        _, out, _ = finish(proc)
    assert "finally" not in out
    assert (lock_dir / "bot.pid").exists(), "killed outright: the record stays (stale)"
    assert not is_running("bot", lock_dir)


def test_the_handler_is_installed_and_restored(lock_dir: Path) -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with SingleInstance("a", directory=lock_dir):
        ours = signal.getsignal(signal.SIGTERM)
        assert callable(ours)
        with SingleInstance("b", directory=lock_dir):
            assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGTERM) is ours, "nested: still held"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def _users_handler(signum: int, frame: FrameType | None) -> None:
    """A handler of the user's own."""


def test_a_handler_the_user_set_meanwhile_stays(lock_dir: Path) -> None:
    try:
        with SingleInstance("a", directory=lock_dir):
            signal.signal(signal.SIGTERM, _users_handler)
        assert signal.getsignal(signal.SIGTERM) is _users_handler
        with SingleInstance("a", directory=lock_dir):  # not default: left alone
            assert signal.getsignal(signal.SIGTERM) is _users_handler
        assert signal.getsignal(signal.SIGTERM) is _users_handler
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_opting_out_and_other_threads_install_nothing(lock_dir: Path) -> None:
    with SingleInstance("a", directory=lock_dir, handle_sigterm=False):
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    seen = []

    def in_a_thread() -> None:
        with SingleInstance("b", directory=lock_dir):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join(DEADLINE)
    assert seen == [signal.SIG_DFL]


def test_sigterm_with_a_lingering_thread_still_ends_the_process(lock_dir: Path) -> None:
    """A non-daemon thread would keep the process running without its name."""
    with holding("bot", lock_dir, "--thread") as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == -signal.SIGTERM, "it died of the SIGTERM"
        assert read_line(proc) == "finally", "after its cleanup ran"
    assert not (lock_dir / "bot.pid").exists()


RELEASED_ELSEWHERE = """
import sys, threading
from singleton_proc import SingleInstance
instance = SingleInstance("bot", directory=sys.argv[1]).acquire()
thread = threading.Thread(target=instance.release)
thread.start()
thread.join()
print("released", flush=True)
sys.stdin.read()
"""


def test_released_off_the_main_thread_sigterm_kills_as_usual(lock_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RELEASED_ELSEWHERE, str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(proc) == "released"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == -signal.SIGTERM
    finally:
        finish(proc)
