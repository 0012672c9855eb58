"""Ctrl-C and SIGTERM at any moment: the name held or free, never frozen, never leaked.

Real signals from real timers, at random moments, through the public API
only: the child programs raise SIGINT or SIGTERM at themselves from a
SIGALRM handler, and the tests look at what any user could see afterwards
(lock descriptors, ``is_running``, the state of the old holder's processes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from helpers import (
    DEADLINE,
    TESTS,
    env_without_coverage,
    posix_only,
    read_line,
    reads_proc,
    reap,
    start_holder,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = posix_only("signals at any moment (SIGALRM, SIGINT, SIGTERM)")

#: Tries per signal in the random-interrupt run (a few seconds each).
TRIES = 2500
#: Replaces interrupted per case; each at its own moment of the stop.
ROUNDS = 8
#: The replacer's grace: the holder ignores SIGTERM, so the stop reaches the
#: SIGKILL (a second freeze) within the moments the interrupts are spread over.
GRACE = 0.05

REPLACER = """
import os, signal, sys
import psutil
from singleton_proc import SingleInstance
directory, signum, handle, delay, grace, *tree = sys.argv[1:]
def suspended():
    count = 0
    for pid in tree:
        try:
            count += psutil.Process(int(pid)).status() == psutil.STATUS_STOPPED
        except psutil.NoSuchProcess:
            continue
    return count
seen = 0
def interrupt(*_):
    global seen
    if signum != "timeout":
        os.kill(os.getpid(), int(signum))
        return
    # A signal.alarm timeout, as programs write them, that comes while the old
    # tree is being suspended, or being resumed (as drawn).
    count = suspended()
    if count and (count < seen if delay == "resuming" else count > seen):
        raise TimeoutError
    seen = count
    signal.setitimer(signal.ITIMER_REAL, 0.0001)  # the next look, never nested
signal.signal(signal.SIGALRM, interrupt)
instance = SingleInstance(
    "bot", directory=directory, on_conflict="replace", grace=float(grace),
    handle_sigterm=handle == "1",
)
signal.setitimer(signal.ITIMER_REAL, 0.0001 if signum == "timeout" else float(delay))
instance.acquire()
print("replaced", flush=True)
"""


@reads_proc  # the child counts its lock descriptors in /proc/self/fd
@pytest.mark.parametrize("which", ["INT", "TERM", "LIBTERM", "FLAG"])
def test_an_interrupted_acquire_or_release_leaves_the_name_held_or_free(
    lock_dir: Path, which: str
) -> None:
    """Thousands of acquire/release cycles, each interrupted at a random moment.

    After each one the object holds the name exactly when the process has the
    lock open, ``is_running`` agrees, a free name can be taken at once, and
    the program's handlers are back. With SIGTERM left to the library
    (``LIBTERM``), a SIGTERM from the start of an acquire to the end of its
    release is ``SystemExit``, never the default action (the child's death);
    a graceful handler that returns (``FLAG``) sees each SIGTERM by the end
    of its try, once.
    """
    run = subprocess.run(
        [
            sys.executable,
            str(TESTS / "child_interrupts.py"),
            str(lock_dir),
            *(str(TRIES), which),
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 4,
        check=False,
        env=env_without_coverage(),
    )
    assert run.returncode == 0, f"exit status {run.returncode}: {run.stderr}"
    report = json.loads(run.stdout)
    assert report["problems"] == []
    # The timer lands inside a cycle most of the time (its moment is drawn
    # within one cycle's median length): the test must exercise the windows.
    assert report["interrupted"] > TRIES // 4, report


def _stopped(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are suspended (SIGSTOPped) right now."""
    found = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_STOPPED:
                found.append(pid)
        except psutil.NoSuchProcess:
            continue
    return found


def _kill_all(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` still there, by pid (it may be stopped)."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            continue


@pytest.mark.parametrize(
    ("signum", "handle_sigterm"),
    [
        (int(signal.SIGINT), True),
        (int(signal.SIGTERM), True),
        pytest.param(int(signal.SIGTERM), False, marks=pytest.mark.slow),
        pytest.param("timeout", True, marks=pytest.mark.slow),
    ],
    ids=["ctrl-c", "sigterm", "sigterm-unhandled", "alarm-timeout"],
)
def test_an_interrupted_replace_leaves_nobody_frozen(
    lock_dir: Path, signum: int | str, handle_sigterm: bool
) -> None:
    """The replacer is interrupted at moments spread over its stop of the old tree:
    Ctrl-C, SIGTERM, or a ``signal.alarm`` timeout whose handler raises.

    Whatever the stop had suspended is resumed or killed: no process of the
    old tree (holder, pool workers, child, grandchild, all deaf to SIGTERM)
    is left stopped, holding the name and doing nothing.
    """
    draw = random.Random(f"{signum} {handle_sigterm}")  # noqa: S311  (not secrets)
    for moment in draw.sample(range(ROUNDS * 4), ROUNDS):
        delay: float | str = (moment + draw.random()) * 0.08 / (ROUNDS * 4)
        if signum == "timeout":  # while the old tree is being suspended, or resumed
            delay = ("suspending", "resuming")[moment % 2]
        holder = start_holder(
            "bot", lock_dir, "--ignore-term", "--tree", new_session=True
        )
        pids: list[int] = [holder.pid]
        try:
            line = read_line(holder)
            assert line.startswith("tree "), line
            tree: dict[str, Any] = json.loads(line.removeprefix("tree "))
            pids += [*tree["workers"], tree["child"], tree["grandchild"]]
            assert read_line(holder) == "ready"
            args = [signum, int(handle_sigterm), delay, GRACE, *pids]
            replacer = subprocess.run(
                [sys.executable, "-c", REPLACER, str(lock_dir), *map(str, args)],
                capture_output=True,
                text=True,
                timeout=DEADLINE,
                check=False,
            )
            if signum == "timeout":  # it came, in the step drawn
                assert "TimeoutError" in replacer.stderr, replacer.stderr
            assert _stopped(pids) == [], (
                f"interrupted at {delay!r} (seconds in, or a step of the stop): "
                f"the old tree is left frozen; replacer said {replacer.stderr!r}"
            )
        finally:
            _kill_all(pids)
            reap(holder)
            for pid in pids[1:]:  # orphans, re-parented to this test (subreaper)
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    continue


@pytest.mark.parametrize("case", ["handler", "second-sigterm"])
def test_a_signal_at_an_exact_point_of_a_held_step(lock_dir: Path, case: str) -> None:
    """A handler the program installs during a hold stays; a SIGTERM held off in
    a release after a first one does not leave SIGTERM ignored later."""
    run = subprocess.run(
        [sys.executable, str(TESTS / "child_holds.py"), case, str(lock_dir)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert run.stdout.startswith("ok"), (run.stdout, run.stderr)
