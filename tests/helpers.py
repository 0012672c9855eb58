"""Helpers for tests that start real processes: start, wait for ready, reap."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from singleton_proc._lock.directory import NameFiles
from singleton_proc._lock.identity import current_identity
from singleton_proc._lock.record import decode_record, encode_own_record, read_record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from singleton_proc import Holder

TESTS = Path(__file__).parent
HOLDER_SCRIPT = TESTS / "child_holder.py"
#: Safety net for waits on real processes; never a synchronisation device.
DEADLINE = 30.0
#: The start methods the worker tests run under.
METHODS = ["fork", "spawn", "forkserver"]
#: The same, where one method shows the mechanism and the others are slow
#: (run by the README's suite, left out of the other Pythons' runs).
FORK_FAST = [
    "fork",
    *(pytest.param(method, marks=pytest.mark.slow) for method in METHODS[1:]),
]
#: Bounds from SPEC "Quality bars" (several times the targets).
DEATH_BOUND = 10.0
CTRL_C_BOUND = 5.0
ORPHAN_BOUND = 10.0
#: Python 3.12+ warns when fork() runs in a multi-threaded process: the
#: tests that ask for exactly that say so.
forking_with_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


def read_line(proc: subprocess.Popen[str], timeout: float = DEADLINE) -> str:
    """Read one line from ``proc``'s stdout, failing after ``timeout`` seconds.

    The read runs in a thread: ``select`` on the pipe would miss lines that
    the buffered reader has already pulled in with an earlier one.
    """
    stdout = proc.stdout
    assert stdout is not None
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.append(stdout.readline()), daemon=True
    )
    reader.start()
    reader.join(timeout)
    assert lines, f"pid {proc.pid} printed no line within {timeout} s"
    return lines[0].strip()


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
    name: str,
    directory: Path,
    *flags: str,
    policy: str = "raise",
    exit_code: int = 1,
    new_session: bool = False,
) -> subprocess.Popen[str]:
    """Start ``child_holder.py`` with ``flags`` (see its docstring); reap it after."""
    args = [name, str(directory), "--policy", policy, "--exit-code", str(exit_code)]
    return subprocess.Popen(
        [sys.executable, str(HOLDER_SCRIPT), *flags, *args],  # flags first: visible
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


@contextlib.contextmanager
def holding(name: str, directory: Path, *flags: str) -> Iterator[subprocess.Popen[str]]:
    """A child process that holds ``name`` for the duration of the block."""
    proc = start_holder(name, directory, *flags)
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
    """Wait for ``pid`` to end, reaping it if it was re-parented to us."""
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        return


def env_without_coverage() -> dict[str, str]:
    """The environment minus coverage's start-up hook variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root to act as other users (CI runs as root)",
)


# What a test needs beyond the portable core says so with one of these: it
# skips elsewhere, naming what it needs. Linux for /proc, flock(1) and
# namespaces; POSIX (Linux and macOS, not Windows) for fork, process groups
# and the signals Windows lacks (SIGKILL, SIGSTOP, SIGHUP, ...).


def linux_only(needs: str) -> pytest.MarkDecorator:
    """Skip unless on Linux: the test needs ``needs``, which only Linux has."""
    return pytest.mark.skipif(sys.platform != "linux", reason=f"Linux only: {needs}")


def posix_only(needs: str) -> pytest.MarkDecorator:
    """Skip on Windows: the test needs ``needs`` (POSIX: Linux and macOS)."""
    return pytest.mark.skipif(
        sys.platform == "win32", reason=f"POSIX only (not Windows): {needs}"
    )


def run_leaving_nothing(
    argv: list[str],
    env: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
    timeout: float = DEADLINE,
) -> subprocess.CompletedProcess[str]:
    """Run a program to its end (stdin closed, output captured); it must leave nothing.

    multiprocessing's helpers (a forkserver, a resource tracker) leave a
    moment after their program: this process, a subreaper on Linux, adopts
    and reaps them. One still alive 10 s after the program ended is an
    orphan it left, and fails the test (one that keeps the output pipes
    open fails sooner, as a timeout). Children of ours from before it
    started (a holder the test runs beside it) are not its.
    """
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    done = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    left = [
        child
        for child in psutil.Process().children(recursive=True)
        if child.pid not in before
    ]
    _, alive = psutil.wait_procs(left, timeout=10.0)
    assert not alive, f"{argv} left processes behind: {alive}"
    return done


reads_proc = linux_only("reads /proc")
runs_flock_1 = linux_only("runs flock(1) from util-linux")
forks = posix_only("os.fork")


def as_user(uid: int, work: Callable[[], object]) -> object:
    """Run ``work()`` in a forked child running as ``uid``; return its value.

    The child needs no interpreter of its own (the venv under /root is not
    readable by other users): it is this process, forked, with its
    privileges dropped. Its result or exception comes back as JSON.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            os.setgid(uid)
            os.setgroups([])
            os.setuid(uid)
            reply = {"value": work()}
        except BaseException as exc:  # noqa: BLE001  (reported to the parent)
            reply = {"error": f"{type(exc).__name__}: {exc}"}
            status = 1
        with os.fdopen(write_end, "w") as out:
            json.dump(reply, out, default=str)
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as replies:
        data = replies.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise AssertionError(f"as uid {uid}: no reply (exit status {status})")
    reply = json.loads(data)
    if "error" in reply:
        raise AssertionError(f"as uid {uid}: {reply['error']}")
    return reply["value"]


def record_of(directory: Path, name: str) -> Holder | None:
    """The record of ``name`` in ``directory``, as the library reads it."""
    return read_record(NameFiles.of(directory, name))


def own_holder(name: str) -> Holder:
    """The holder this process records when it takes ``name`` now."""
    found = decode_record(encode_own_record(current_identity(), name), name)
    assert found is not None
    return found


def open_lock_fds(directory: Path) -> list[str]:
    """Descriptors of this process that point into ``directory`` (Linux: /proc)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def flock_holder(lock_file: Path) -> subprocess.Popen[str]:
    """``flock(1)`` holding ``lock_file`` until its stdin closes (reap: finish()).

    A test that calls it is marked :data:`runs_flock_1`.
    """
    proc = subprocess.Popen(
        ["flock", "-n", str(lock_file), "sh", "-c", "echo locked; exec cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert read_line(proc) == "locked"
    return proc


def wait_for_file(path: str, timeout: float = 30.0) -> str:
    """Wait until ``path`` exists; return its text. The timeout is a safety net."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.002)
    return Path(path).read_text()


def pids_in(directory: Path, names: list[str]) -> list[int]:
    """The pids that workers wrote to ``directory/<name>`` (waiting for each)."""
    return [int(wait_for_file(str(directory / name))) for name in names]


def all_gone(pids: list[int]) -> None:
    """Fail unless every pid ends within the deadline (reaping those that are ours)."""
    for pid in pids:
        wait_until_gone(pid, timeout=DEADLINE)


def press_ctrl_c(
    parent: subprocess.Popen[str],
) -> tuple[str, float, list[psutil.Process]]:
    """Do what a terminal does on Ctrl-C, and wait for ``parent`` to exit.

    SIGINT goes to the parent and every process below it (the foreground
    group), each by pid. Returns the parent's stderr, the seconds until it
    exited, and the processes below it that were signalled.

    A terminal signals the group at once; here one by one, so a process
    below may be gone by its turn (the parent stopped it first): skipped.
    """
    try:
        below = psutil.Process(parent.pid).children(recursive=True)
        pressed = time.monotonic()
        psutil.Process(parent.pid).send_signal(signal.SIGINT)
        for proc in below:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGINT)
        _, err = parent.communicate(timeout=DEADLINE)
        elapsed = time.monotonic() - pressed
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.communicate()
    return err, elapsed, below


def assert_one_keyboard_interrupt(parent: subprocess.Popen[str], err: str) -> None:
    """``parent`` died of SIGINT, printing exactly one KeyboardInterrupt traceback."""
    assert parent.returncode in {-signal.SIGINT, 128 + signal.SIGINT}, err
    assert err.count("KeyboardInterrupt") == 1, err
    assert err.count("Traceback") == 1, err


def fork_a_child_that_exits() -> None:
    """Fork a child that exits normally (its atexit hooks run); reap it."""
    child = os.fork()
    if child == 0:
        try:
            atexit._run_exitfuncs()  # noqa: SLF001  (a normal exit, minus pytest)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
