"""Helpers for tests that start real processes: start, wait for ready, reap."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from collections.abc import Iterator

TESTS = Path(__file__).parent
HOLDER_SCRIPT = TESTS / "child_holder.py"
#: Safety net for waits on real processes; never a synchronisation device.
DEADLINE = 30.0


def read_line(proc: subprocess.Popen[str], timeout: float = DEADLINE) -> str:
    """Read one line from ``proc``'s stdout, failing after ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"pid {proc.pid} printed nothing within {timeout} s"
    return proc.stdout.readline().strip()


def reap(proc: subprocess.Popen[str]) -> None:
    """Terminate, wait, kill if needed, wait: ``proc`` is gone afterwards."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def start_holder(
    name: str, directory: Path, policy: str = "raise", exit_code: int = 1
) -> subprocess.Popen[str]:
    """Start ``child_holder.py``; the caller reaps it."""
    return subprocess.Popen(
        [
            sys.executable,
            str(HOLDER_SCRIPT),
            name,
            str(directory),
            policy,
            str(exit_code),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def holding(name: str, directory: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process that holds ``name`` for the duration of the block."""
    proc = start_holder(name, directory)
    try:
        line = read_line(proc)
        assert line == "ready", f"holder said {line!r}, exit status {proc.poll()}"
        yield proc
    finally:
        reap(proc)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Close ``proc``'s stdin, wait for it, return (returncode, stdout, stderr)."""
    try:
        out, err = proc.communicate("", timeout=DEADLINE)
    finally:
        reap(proc)
    return proc.returncode, out, err


def wait_until_gone(pid: int, timeout: float = DEADLINE) -> None:
    """Wait for a process we do not own (not our child) to disappear."""
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid):
        assert time.monotonic() < deadline, f"pid {pid} still exists"
        time.sleep(0.01)


def env_without_coverage() -> dict[str, str]:
    """The environment minus coverage's start-up hook variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
