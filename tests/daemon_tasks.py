"""Tasks that start daemons, for the tests of every stop path (importable)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import child_daemon
from child_tasks import say_ready

from helpers import wait_for_file

DAEMON_SCRIPT = Path(__file__).with_name("child_daemon.py")


def start_daemon(kind: str, *, clean_environment: bool = False) -> int:
    """Run ``child_daemon.py KIND``; return the pid of the daemon it left behind.

    With ``clean_environment`` it starts with an empty environment, as
    ``env -i`` would run it: it carries no mark. The ``forked`` kind is the
    textbook ``detached`` daemon forked off this very process without
    ``exec``, as ``python-daemon`` makes one.
    """
    if kind == "forked":
        return child_daemon.start("detached")
    done = subprocess.run(
        [sys.executable, str(DAEMON_SCRIPT), kind],
        capture_output=True,
        text=True,
        check=True,
        env={} if clean_environment else None,
    )
    return int(done.stdout)


def daemon_then_block(kind: str, report: str) -> None:
    """Start a daemon, write its pid to ``report``, then run until stopped."""
    say_ready(report, str(start_daemon(kind)))
    while True:
        time.sleep(3600)


def daemon_then_return(kind: str) -> int:
    """Start a daemon and return its pid: a task that ends normally."""
    return start_daemon(kind)


def exit_status_of_a_subprocess(status: int) -> int:
    """Run a child that exits with ``status``; return what ``subprocess`` saw."""
    code = f"raise SystemExit({status})"
    return subprocess.run([sys.executable, "-c", code], check=False).returncode


def step(item: tuple[str, str, str]) -> None:
    """A pool item ``(what, kind, report)``: ``"daemon"`` runs
    :func:`daemon_then_block`; ``"fail"`` raises once the daemon is
    reported, so that the pool stops on an error while the other item runs.
    """
    what, kind, report = item
    if what == "daemon":
        daemon_then_block(kind, report)
    wait_for_file(report)
    raise ValueError(f"failing while pid {os.getpid()}'s sibling runs a daemon")
