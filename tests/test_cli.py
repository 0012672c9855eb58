"""The ``singleton-proc`` console script, driven as users drive it: in subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

import singleton_proc
from singleton_proc._base.holder import command_line
from singleton_proc._cli.show import human_age

from helpers import (
    DEADLINE,
    TESTS,
    finish,
    flock_holder,
    linux_only,
    posix_only,
    read_line,
    reads_proc,
    reap,
    wait_until_gone,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

pytestmark = posix_only("POSIX commands (true, sh, nohup), SIGHUP and SIGKILL")

#: Next to the interpreter in a venv; in its Scripts folder on Windows without one.
_FOUND = shutil.which(
    "singleton-proc",
    path=os.pathsep.join(
        [str(Path(sys.executable).parent), sysconfig.get_path("scripts")]
    ),
)
assert _FOUND, "no singleton-proc beside this Python's scripts: pip install -e . first"
CLI = _FOUND
CMD = [sys.executable, str(TESTS / "child_cli_cmd.py")]
#: SPEC "bound in tests" for a SIGKILLed parent's children to be gone.
ORPHAN_BOUND = 10.0
JSON_KEYS = [
    "name",
    "pid",
    "started_at",
    "age_seconds",
    "command",
    "user",
    "host",
    "create_time",
]


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``singleton-proc ARGS`` to completion: (status, stdout, stderr)."""
    done = subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
        env=env,
    )
    return done.returncode, done.stdout, done.stderr


#: Exec a program with SIGINT, SIGTERM and SIGHUP at their default actions, as
#: an interactive shell would start it: CI runs us as a background job, where
#: SIGINT is ignored and would stay ignored in the wrapper and in CMD.
_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys\n"
    "for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
    "    signal.signal(signum, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def start(*args: str) -> subprocess.Popen[str]:
    """Start ``singleton-proc ARGS`` with pipes and default signals; reap it after."""
    return subprocess.Popen(
        [sys.executable, "-c", _WITH_DEFAULT_SIGNALS, CLI, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def running(
    name: str, *options: str, flags: Sequence[str] = ()
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``singleton-proc run NAME -- child_cli_cmd.py FLAGS``, ready: (wrapper, CMD pid).

    CMD runs until the wrapper's stdin closes (CMD inherits it). Afterwards
    the wrapper is reaped, and so is CMD if it was orphaned to us.
    """
    wrapper = start("run", *options, name, "--", *CMD, *flags)
    cmd_pid = 0
    try:
        line = read_line(wrapper)
        assert line.startswith("ready "), f"{line!r}, status {wrapper.poll()}"
        cmd_pid, parent = (int(word) for word in line.split()[1:])
        assert parent == wrapper.pid, "CMD is the wrapper's own child"
        yield wrapper, cmd_pid
    finally:
        reap(wrapper)
        if cmd_pid:
            wait_until_gone(cmd_pid)


def one_error_line(stderr: str) -> str:
    """The single ``singleton-proc: ...`` line on stderr, checked as such."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("singleton-proc: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def command_of(pid: int) -> str:
    """A process's command line as status and messages print it (maybe cut)."""
    return command_line(psutil.Process(pid).cmdline())


# --- help and version -------------------------------------------------------


def test_python_m_singleton_proc_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "singleton_proc", "--help"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: singleton-proc ")
    for command in ("run", "status", "stop"):
        assert command in done.stdout


def test_version() -> None:
    assert cli("--version") == (0, f"singleton-proc {singleton_proc.__version__}\n", "")


@pytest.mark.parametrize("command", ["run", "status", "stop"])
def test_every_subcommand_has_help(command: str) -> None:
    status, out, err = cli(command, "--help")
    assert status == 0, err
    assert out.startswith(f"usage: singleton-proc {command} ")
    assert "Exit status" in out


# --- run, status, stop ------------------------------------------------------


def test_round_trip_run_status_stop(private_default_dir: Path) -> None:
    with running("bot") as (wrapper, cmd_pid):
        status, out, _ = cli("status")
        assert status == 0
        header, row = out.splitlines()
        assert header.split() == ["NAME", "PID", "AGE", "COMMAND"]
        assert row.split()[:2] == ["bot", str(wrapper.pid)]
        assert row.endswith(command_of(wrapper.pid)), "the record names the wrapper"
        assert "run bot -- " in row
        assert cli("status", "bot")[0] == 0
        assert (private_default_dir / "bot.pid").exists()

        status, out, err = cli("stop", "bot")
        assert status == 0, err
        assert out.startswith(f"stopped 'bot' and its process tree: pid {wrapper.pid}")
        assert wrapper.wait(DEADLINE) == 128 + signal.SIGTERM
        wait_until_gone(cmd_pid)
    assert not (private_default_dir / "bot.pid").exists(), "released cleanly"
    assert cli("status", "bot") == (1, "'bot' is not running\n", "")
    assert cli("stop", "bot") == (1, "'bot' is not running\n", "")
    assert cli("status") == (0, "nothing is running\n", "")


def test_status_json_schema() -> None:
    assert cli("status", "--json") == (0, "[]\n", "")
    assert cli("status", "bot", "--json") == (1, "[]\n", "")
    with running("bot") as (wrapper, _):
        status, out, _ = cli("status", "--json")
        assert status == 0
    (entry,) = json.loads(out)
    assert list(entry) == JSON_KEYS
    assert entry["name"] == "bot"
    assert entry["pid"] == wrapper.pid
    started = datetime.fromisoformat(entry["started_at"])
    assert started.tzinfo is not None
    assert isinstance(entry["age_seconds"], float)
    assert 0 <= entry["age_seconds"] < DEADLINE * 4
    assert entry["command"][-len(CMD) - 3 :] == ["run", "bot", "--", *CMD]
    assert entry["user"] == psutil.Process().username()
    assert isinstance(entry["host"], str)
    assert isinstance(entry["create_time"], float)


def test_status_of_one_name_as_json_matches_the_list() -> None:
    with running("bot"), running("other"):
        everything = json.loads(cli("status", "--json")[1])
        status, out, _ = cli("status", "bot", "--json")
    assert status == 0
    assert [e["name"] for e in everything] == ["bot", "other"]
    (one,) = json.loads(out)
    assert {k: v for k, v in one.items() if k != "age_seconds"} == {
        k: v for k, v in everything[0].items() if k != "age_seconds"
    }


def test_looking_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert cli("status", "--dir", str(missing)) == (0, "nothing is running\n", "")
    assert cli("status", "bot", "--dir", str(missing))[0] == 1
    assert cli("stop", "bot", "--dir", str(missing))[0] == 1
    assert not missing.exists()


@pytest.mark.parametrize("code", [0, 7])
def test_run_exits_with_the_commands_status(
    code: int, private_default_dir: Path
) -> None:
    status, _, err = cli("run", "bot", "--", sys.executable, "-c", f"exit({code})")
    assert (status, err) == (code, "")
    assert not (private_default_dir / "bot.pid").exists()


def test_run_exits_128_plus_n_when_the_command_dies_by_signal_n() -> None:
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"
    status, _, _ = cli("run", "bot", "--", sys.executable, "-c", suicide)
    assert status == 128 + signal.SIGUSR1


def test_the_command_gets_its_arguments_untouched() -> None:
    echo = "import sys; print(sys.argv[1:])"
    args = ["--replace", "--", "-x", "--dir"]
    status, out, _ = cli("run", "bot", "--", sys.executable, "-c", echo, *args)
    assert (status, out) == (0, f"{args}\n")


def test_inherited_descriptors_reach_the_command(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("w") as file:
        fd = file.fileno()
        write = f"import os; os.write({fd}, b'through\\n')"
        done = subprocess.run(
            [CLI, "run", "bot", "--", sys.executable, "-c", write],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    assert (done.returncode, done.stderr) == (0, "")
    assert out.read_text() == "through\n"


def test_a_held_name_is_a_conflict_naming_the_holder() -> None:
    with running("bot") as (wrapper, _):
        status, out, err = cli("run", "bot", "--", "true")
        assert (status, out) == (1, "")
        line = one_error_line(err)
        prefix = f"singleton-proc: 'bot' is already running (pid {wrapper.pid}, up "
        assert line.startswith(prefix)
        assert line.endswith(f"command: {command_of(wrapper.pid)})")
        status, _, err = cli("run", "--conflict-exit-code", "75", "bot", "--", "true")
        assert status == 75
        one_error_line(err)
        status, _, err = cli("run", "--wait", "--timeout", "0.2", "bot", "--", "true")
        assert status == 1, err
        assert "'bot' is still running after waiting 0.2 s (pid " in one_error_line(err)
        args = ["--wait", "--timeout", "0", "--conflict-exit-code", "9"]
        assert cli("run", *args, "bot", "--", "true")[0] == 9


def test_wait_runs_the_command_once_the_name_is_free() -> None:
    with running("bot") as (holder_proc, _):
        waiter = start(
            "run", "--wait", "bot", "--", sys.executable, "-c", "print('ran')"
        )
        try:
            assert finish(holder_proc)[0] == 0, "CMD exits 0 when its stdin closes"
            assert finish(waiter) == (0, "ran\n", "")
        finally:
            reap(waiter)


def test_replace_stops_the_holder_and_its_command() -> None:
    with running("bot") as (old, old_cmd):
        new = [sys.executable, "-c", "print('new')"]
        status, out, err = cli("run", "--replace", "--grace", "5", "bot", "--", *new)
        assert (status, out, err) == (0, "new\n", "")
        assert old.wait(DEADLINE) == 128 + signal.SIGTERM
        wait_until_gone(old_cmd)


def test_stop_kills_what_ignores_sigterm_after_grace_and_says_so() -> None:
    with running("bot", flags=["--ignore-term"]) as (wrapper, cmd_pid):
        status, out, err = cli("stop", "bot", "--grace", "0.2")
        assert status == 0
        assert out.startswith(f"stopped 'bot' and its process tree: pid {wrapper.pid}")
        warning = one_error_line(err)  # the library's warning, as one line
        assert "SIGKILL" in warning
        assert str(cmd_pid) in warning
        assert wrapper.wait(DEADLINE) == -signal.SIGKILL
        wait_until_gone(cmd_pid)
    assert cli("status", "bot")[0] == 1


@pytest.fixture
def flock_held(lock_dir: Path) -> Iterator[tuple[Path, int]]:
    """``flock(1)`` holds ``bot.lock`` in ``lock_dir``: (lock_dir, its pid)."""
    proc = flock_holder(lock_dir / "bot.lock")
    try:
        yield lock_dir, proc.pid
    finally:
        finish(proc)


@linux_only("flock(1) from util-linux, and /proc/locks to find its pid")
def test_a_holder_that_cannot_be_identified(flock_held: tuple[Path, int]) -> None:
    """Running, holder unknowable: status still shows the pid holding the lock."""
    lock_dir, pid = flock_held
    where = ["--dir", str(lock_dir)]
    status, out, _ = cli("status", "bot", *where)
    assert status == 0
    assert out.splitlines()[1].split()[:3] == ["bot", str(pid), "?"]
    assert "holder unknown" in out
    (entry,) = json.loads(cli("status", "bot", "--json", *where)[1])
    unknown = dict.fromkeys(JSON_KEYS)
    assert entry == {**unknown, "name": "bot", "pid": pid}
    status, out, _ = cli("status", *where)  # listed among all names too
    assert status == 0
    assert out.splitlines()[1].split()[:3] == ["bot", str(pid), "?"]

    status, _, err = cli("stop", "bot", *where)
    assert status == 3
    assert one_error_line(err).startswith("singleton-proc: cannot stop 'bot': ")
    status, _, err = cli("run", "bot", *where, "--", "true")
    assert status == 1
    assert one_error_line(err) == (  # the library's reason, not a guess
        "singleton-proc: 'bot' is already running (holder unknown: its record is "
        f"missing or unreadable; the lock is held by pid {pid} (another tool, such "
        "as flock(1), may hold it))"
    )
    status, _, err = cli("run", "--replace", "bot", *where, "--", "true")
    assert status == 1
    assert one_error_line(err).startswith("singleton-proc: cannot replace 'bot': ")
    args = ["--replace", "--conflict-exit-code", "5", "bot", *where]
    assert cli("run", *args, "--", "true")[0] == 5


# --- signals ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "trap"),
    [("SIGTERM", False), ("SIGTERM", True), ("SIGHUP", True), ("SIGINT", True)],
)
def test_signals_reach_the_command(
    name: str, trap: bool, private_default_dir: Path
) -> None:
    signum = getattr(signal, name)  # by name: Windows has no SIGHUP to collect
    expected = (40 if trap else 128) + signum
    with running("bot", flags=["--trap"] if trap else []) as (wrapper, cmd_pid):
        os.kill(wrapper.pid, signum)
        if trap:
            assert read_line(wrapper) == f"signal {int(signum)}"
        assert wrapper.wait(DEADLINE) == expected
        wait_until_gone(cmd_pid)
    assert not (private_default_dir / "bot.pid").exists()
    assert cli("status", "bot")[0] == 1


def _in_mask(pid: int, field: str, signum: int) -> bool:
    """Whether ``signum`` is in mask ``field`` (``SigCgt``, ``SigIgn``) of ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    prefix = f"{field}:"
    mask = next(
        line.split()[1] for line in status.splitlines() if line.startswith(prefix)
    )
    return bool(int(mask, 16) & (1 << (signum - 1)))


@reads_proc  # /proc/<pid>/status: when the waiter handles SIGTERM
def test_sigterm_while_waiting_for_the_name_exits_143() -> None:
    with running("bot") as (holder_proc, _):
        waiter = start("run", "--wait", "bot", "--", "true")
        try:
            deadline = time.monotonic() + DEADLINE
            while not _in_mask(waiter.pid, "SigCgt", signal.SIGTERM):  # handled
                assert time.monotonic() < deadline, "the waiter never got ready"
                time.sleep(0.005)
            waiter.terminate()
            assert finish(waiter) == (128 + signal.SIGTERM, "", "")
        finally:
            reap(waiter)
        status, out, _ = cli("status", "bot")
        assert status == 0
        assert str(holder_proc.pid) in out, "the holder never noticed"


@reads_proc  # /proc/<pid>/status: the command's ignored signals
def test_a_signal_ignored_at_start_stays_ignored() -> None:
    wrapper = subprocess.Popen(
        ["nohup", CLI, "run", "bot", "--", *CMD],  # nohup: SIGHUP ignored, then exec
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        cmd_pid = int(read_line(wrapper).split()[1])
        assert _in_mask(cmd_pid, "SigIgn", signal.SIGHUP), "CMD inherits the ignore"
        os.kill(wrapper.pid, signal.SIGHUP)  # discarded on the spot: ignored
        assert finish(wrapper)[0] == 0
        wait_until_gone(cmd_pid)
    finally:
        reap(wrapper)


def test_a_sigkilled_wrapper_takes_its_command_along(private_default_dir: Path) -> None:
    with running("bot") as (wrapper, cmd_pid):
        wrapper.kill()
        wrapper.wait(DEADLINE)
        wait_until_gone(cmd_pid, ORPHAN_BOUND)  # adopted by us, then reaped
        assert not psutil.pid_exists(cmd_pid)
    assert (private_default_dir / "bot.pid").exists(), "a stale record stays"
    assert cli("status", "bot") == (1, "'bot' is not running\n", "")
    assert cli("status") == (0, "nothing is running\n", "")


# --- errors -----------------------------------------------------------------


def test_a_closed_stdout_is_exit_141_without_a_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `singleton-proc status | head -0`, deterministically
    try:
        done = subprocess.run(
            [CLI, "status"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, "")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["run", "bot"],
        ["run", "bot", "--"],
        ["run", "bot", "sleep", "1"],
        ["run", "a/b", "--", "true"],
        ["run", "", "--", "true"],
        ["run", "--wait", "--timeout", "-1", "bot", "--", "true"],
        ["run", "--wait", "--timeout", "soon", "bot", "--", "true"],
        ["run", "--wait", "--timeout", "inf", "bot", "--", "true"],
        ["run", "--timeout", "1", "bot", "--", "true"],
        ["run", "--replace", "--grace", "-2", "bot", "--", "true"],
        ["run", "--grace", "1", "bot", "--", "true"],
        ["run", "--replace", "--wait", "bot", "--", "true"],
        ["run", "--conflict-exit-code", "256", "bot", "--", "true"],
        ["run", "--conflict-exit-code", "-1", "bot", "--", "true"],
        ["status", "a/b"],
        ["status", "bot", "extra"],
        ["stop"],
        ["stop", "..", "--grace", "1"],
        ["stop", "bot", "--grace", "nan"],
        ["run", "--dir", "locks", "bot", "--", "true"],  # relative: refused
        ["status", "--dir", "./locks"],
        ["stop", "bot", "--dir", "locks"],
    ],
)
def test_user_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    status, out, err = cli(*args)
    assert (status, out) == (2, "")
    one_error_line(err)


def test_an_insecure_directory_is_exit_2(tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    unsafe.chmod(0o777)  # writable by all, not sticky
    for args in (
        ["run", "bot", "--dir", str(unsafe), "--", "true"],
        ["status", "--dir", str(unsafe)],
    ):
        status, _, err = cli(*args)
        assert status == 2
        assert "not sticky" in one_error_line(err)
    env = {**os.environ, "SINGLETON_PROC_DIR": "relative/dir"}
    status, _, err = cli("status", env=env)
    assert status == 2
    assert "absolute" in one_error_line(err)


#: A bug for ``status`` to hit: listing the lock directory fails the way no
#: OS error does (a sitecustomize module runs in every Python process; other
#: listings, such as coverage's at exit, work).
_INJECTED_BUG = """
import os
_real_scandir = os.scandir
def scandir(path=".", /):
    if os.fspath(path) == os.environ.get("BUGGY_DIRECTORY"):
        raise RuntimeError("a bug, injected")
    return _real_scandir(path)
os.scandir = scandir
"""


def test_a_bug_shows_its_traceback_and_exits_70(tmp_path: Path, lock_dir: Path) -> None:
    """Never 1, 2 or 3: cron and systemd must not read a crash as "already running"."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_INJECTED_BUG)
    env = {**os.environ, "PYTHONPATH": str(inject), "BUGGY_DIRECTORY": str(lock_dir)}
    status, out, err = cli("status", "--dir", str(lock_dir), env=env)
    assert (status, out) == (70, "")
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: a bug, injected" in err
    last = err.splitlines()[-1]
    assert last == "singleton-proc: an internal error (a bug): please report it"
    assert cli("status", "--dir", str(lock_dir)) == (0, "nothing is running\n", "")


def test_a_command_not_found_is_127_and_releases(private_default_dir: Path) -> None:
    status, out, err = cli("run", "bot", "--", "/nonexistent/no-such-command")
    assert (status, out) == (127, "")
    assert one_error_line(err) == (
        "singleton-proc: /nonexistent/no-such-command: command not found"
    )
    assert not (private_default_dir / "bot.pid").exists()
    assert cli("status", "bot")[0] == 1


def test_a_command_that_cannot_execute_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)  # not executable, even by root
    for command in (script, tmp_path):
        status, _, err = cli("run", "bot", "--", str(command))
        assert status == 126
        assert one_error_line(err).startswith(
            f"singleton-proc: {command}: cannot execute: "
        )
    assert cli("status", "bot")[0] == 1


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (192, "3m 12s"),
        (3599, "59m 59s"),
        (2 * 3600 + 5 * 60 + 9, "2h 05m"),
        (4 * 86400 + 3 * 3600 + 59 * 60, "4d 3h"),
    ],
)
def test_ages_read_in_two_units(seconds: float, shown: str) -> None:
    assert human_age(seconds) == shown
