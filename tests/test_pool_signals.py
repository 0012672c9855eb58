"""A pool and signals, with real processes: Ctrl-C again and again; a parent gone.

A child script runs the pool (``child_pool.py``); the test signals it by
pid, as a terminal or a user would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil
import pytest

from singleton_proc._workers.bootstrap import PIPE_LOST_EXIT

from helpers import (
    DEADLINE,
    METHODS,
    TESTS,
    all_gone,
    assert_one_keyboard_interrupt,
    pids_in,
    posix_only,
    read_line,
    reap,
    wait_for_file,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = posix_only("Ctrl-C to a process tree, and fork")

RUNNER = TESTS / "child_pool.py"
ORPHANED = TESTS / "child_pool_orphan.py"
#: Ctrl-C presses in a burst, and the pause between two (five within 50 ms).
PRESSES = 5
PAUSE = 0.01


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["run", "iter"])
def test_ctrl_c_pressed_five_times_gives_one_short_keyboard_interrupt(
    method: str, mode: str, tmp_path: Path
) -> None:
    parent = subprocess.Popen(
        [sys.executable, str(RUNNER), mode, method, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        workers = pids_in(tmp_path, ["0", "1"])
        below = psutil.Process(parent.pid).children(recursive=True)
        for _ in range(PRESSES):  # the load: a user hammering Ctrl-C
            for pid in [parent.pid, *(proc.pid for proc in below)]:
                with contextlib.suppress(ProcessLookupError):  # a worker gone
                    os.kill(pid, signal.SIGINT)
            time.sleep(PAUSE)
        _, err = parent.communicate(timeout=DEADLINE)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.communicate()
    assert_one_keyboard_interrupt(parent, err)
    assert "Exception ignored" not in err, err
    assert "During handling" not in err, err
    assert len(err.splitlines()) < 40, err  # one traceback (four chained: ~100)
    all_gone(workers)
    psutil.wait_procs(below, timeout=DEADLINE)  # the forkserver ends with it


# Not under fork: a forked worker holds a copy of the parent's end of its
# pipe, so it meets no broken pipe; its watcher ends it (see child_pool_orphan).
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_worker_whose_parent_died_before_it_was_ready_exits_quietly(
    method: str, tmp_path: Path
) -> None:
    errors = tmp_path / "stderr"
    with errors.open("w") as stderr:
        parent = subprocess.Popen(
            [sys.executable, str(ORPHANED), method, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    left: list[psutil.Process] = []
    try:
        holder = int(read_line(parent))
        worker = int(wait_for_file(str(tmp_path / "ready")))
        left = psutil.Process(parent.pid).children(recursive=True)
        assert {holder, worker} <= {proc.pid for proc in left}
        # Looked up now: the forkserver's child may end and be reaped by it
        # before the file below is even written.
        worker_proc = next(proc for proc in left if proc.pid == worker)
        parent.kill()
        parent.wait(DEADLINE)
        (tmp_path / "go").touch()  # the worker goes on, to say "ready"
        exitcode = worker_proc.wait(DEADLINE)  # ours now: a subreaper
    finally:
        reap(parent)
        for proc in left:  # the holder, the forkserver, whatever is left
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(left, timeout=DEADLINE)
    # The forkserver's child: the forkserver reaps it, we see no status.
    assert exitcode == (PIPE_LOST_EXIT if method == "spawn" else None)
    assert errors.read_text() == ""
