"""Programs as users write them (SPEC): every worker API, every start method.

Each case runs ``child_program.py`` as a program of its own: without a main
guard, with one, with a thread running, or fed through stdin (no main
file). A worker must never re-run the script (it prints "top" once), and a
lambda, a closure, a function and a class of the script must all cross,
the class's instances coming back as the very class. The program runs in a
session of its own: once it has exited, nothing of that session may be
left (its workers, and the helpers a start method keeps: forkserver,
resource tracker).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil
import pytest

from helpers import DEADLINE, METHODS, TESTS, posix_only

if TYPE_CHECKING:
    from pathlib import Path
    from typing import IO

pytestmark = posix_only("programs under every start method (fork, forkserver)")

PROGRAM = TESTS / "child_program.py"
APIS = ["run_in_pool", "iter_in_pool", "process_pool", "run_process", "start_process"]
KINDS = ["unguarded", "guarded", "threaded", "stdin"]
EXPECTED = {
    "points": [["Point", True, 10], ["Point", True, 20]],
    "closure": [101, 102],
    "function": [9, 16],
}
#: In the fast run, one row per API: the hardest program (no guard, a
#: start method that starts a fresh interpreter, a thread); the rest is slow.
FAST = {("unguarded", "forkserver"), ("threaded", "spawn")}


def _cases() -> list[object]:
    return [
        pytest.param(
            api,
            method,
            kind,
            marks=[] if (kind, method) in FAST else [pytest.mark.slow],
        )
        for api in APIS
        for method in METHODS
        for kind in KINDS
    ]


def _in_session(sid: int) -> list[psutil.Process]:
    """The processes of session ``sid`` (looked at, never signalled)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (psutil.Error, OSError):  # gone meanwhile, or not ours to ask
            continue
    return found


def _left_in_session(sid: int) -> list[psutil.Process]:
    """What of session ``sid`` is still there once it had time to end."""
    deadline = time.monotonic() + DEADLINE
    while (left := _in_session(sid)) and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.2)  # ends when they do
    return left


def _run_program(args: list[str], cwd: Path, stdin: IO[str] | None = None) -> str:
    """Run ``python ARGS`` in a session of its own; its stdout once it exited well.

    Fails unless it exits with 0 and nothing of its session is left.
    """
    program = subprocess.Popen(
        [sys.executable, *args], stdin=stdin or subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        start_new_session=True)  # fmt: skip
    try:
        out, err = program.communicate(timeout=DEADLINE * 2)
    finally:
        if program.poll() is None:
            program.kill()
        program.communicate()
    assert program.returncode == 0, err
    assert _left_in_session(program.pid) == []  # its session: sid == its pid
    return out


@pytest.mark.parametrize(("api", "method", "kind"), _cases())
def test_a_program_as_users_write_it_gets_its_results(
    api: str, method: str, kind: str, tmp_path: Path
) -> None:
    flags = [kind] if kind in {"guarded", "threaded"} else []
    script = "-" if kind == "stdin" else str(PROGRAM)
    with PROGRAM.open() as source:
        out = _run_program(
            [script, api, method, *flags], tmp_path,
            stdin=source if kind == "stdin" else None)  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "top", out
    assert [json.loads(line) for line in lines[1:]] == [EXPECTED], out


@pytest.mark.parametrize("method", METHODS)
def test_the_scripts_globals_behave_as_a_forked_worker_s_would(
    method: str, tmp_path: Path
) -> None:
    """An initializer's global is seen by the tasks; the script's classes and
    exceptions come back as themselves and are left untouched; under fork, a
    function whose global cannot be pickled still runs (by reference)."""
    out = _run_program([str(TESTS / "child_globals.py"), method], tmp_path)
    expected: dict[str, object] = {
        "submit": ["loaded", 1],
        "map": [["loaded", 2], ["loaded", 3]],
        "run_in_pool": [["loaded", 4]],
        "class": [True, True, 10],
        "exception": "caught",
    }
    if method == "fork":
        expected["locked"] = True
    assert json.loads(out) == expected
