"""Never two holders: a barrier of 16 processes, and heavy churn."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from singleton_proc import is_running

from helpers import DEADLINE, TESTS, read_line, reap

if TYPE_CHECKING:
    from pathlib import Path

CONTENDERS = 16
ROUNDS = 30


def _send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


@pytest.mark.slow
def test_sixteen_processes_released_together_get_exactly_one_winner(
    lock_dir: Path,
) -> None:
    go_read, go_write = os.pipe()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(TESTS / "child_contender.py"),
                "bot",
                str(lock_dir),
                str(go_read),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(go_read,),
        )
        for _ in range(CONTENDERS)
    ]
    os.close(go_read)
    try:
        for round_number in range(ROUNDS):
            assert [read_line(p) for p in procs] == ["armed"] * CONTENDERS
            os.write(go_write, b"g" * CONTENDERS)  # the barrier opens for all at once
            results = [read_line(p) for p in procs]
            winners = [
                p for p, result in zip(procs, results, strict=True) if result == "win"
            ]
            assert len(winners) == 1, f"round {round_number}: {results}"
            assert results.count("lose") == CONTENDERS - 1
            _send(winners[0], "release")
            assert read_line(winners[0]) == "released"
            last = round_number == ROUNDS - 1
            for proc in procs:
                _send(proc, "quit" if last else "next")
        for proc in procs:
            assert proc.wait(DEADLINE) == 0
    finally:
        os.close(go_write)
        for proc in procs:
            reap(proc)
    assert not is_running("bot", lock_dir)


@pytest.mark.slow
def test_churn_keeps_exclusion_exact(lock_dir: Path, tmp_path: Path) -> None:
    workers, cycles = 4, 1500
    counter = tmp_path / "counter"
    counter.write_text("0")
    marker = tmp_path / "inside"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(TESTS / "child_churn.py"),
                "bot",
                str(lock_dir),
                str(counter),
                str(marker),
                str(cycles),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    try:
        assert [read_line(p) for p in procs] == ["ready"] * workers
        for proc in procs:
            _send(proc, "go")
        outcomes = [proc.communicate(timeout=300) for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * workers, outcomes
    finally:
        for proc in procs:
            reap(proc)
    assert int(counter.read_text()) == workers * cycles
    assert not marker.exists()
    assert sorted(p.name for p in lock_dir.iterdir()) == ["bot.lock"], (
        "every record removed"
    )
