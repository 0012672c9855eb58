"""No descendant escapes a stop: daemons that double-fork, on every stop path.

Each stop path is tried with four kinds of daemon (see ``child_daemon.py``):
a double fork, a double fork with ``setsid``, the textbook daemon that
also changes to ``/`` and closes every descriptor, and that same daemon
forked off the holder or the task itself without ``exec`` (as
``python-daemon`` does). Each leaves its parent's tree at once,
re-parented to init, so only the mark it inherited (see
``singleton_proc._base.lineage``) ties it to the tree being stopped. A
bystander daemon of each kind, with the very same command line but started
by the tests themselves, must outlive every stop. Daemons left by a task
that returned normally are the task's business: a normal end leaves them.
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
from daemon_tasks import (
    daemon_then_block,
    daemon_then_return,
    exit_status_of_a_subprocess,
    start_daemon,
    step,
)

import singleton_proc
from singleton_proc import (
    SingleInstance,
    TaskTimeoutError,
    process_pool,
    run_in_pool,
    run_process,
    start_process,
    terminate,
)
from singleton_proc._base import lineage
from singleton_proc._base.lineage import MARK_VARIABLE, holder_mark

from helpers import (
    DEADLINE,
    TESTS,
    posix_only,
    read_line,
    reads_proc,
    reap,
    start_holder,
    wait_for_file,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = posix_only("daemons double-fork (os.fork)")

#: The textbook daemon runs on every Python CI tries; the two lighter kinds
#: and the stop paths that share their code with another (marked slow) on
#: the main run only, to keep CI within its time.
SLOW = pytest.mark.slow
KINDS = [
    pytest.param("double-fork", marks=SLOW),
    pytest.param("setsid", marks=SLOW),
    "detached",
    pytest.param("forked", marks=SLOW),  # on the main run: Linux memory files
]
#: The grace of every stop, and the time limit of the tasks that time out
#: (long enough for a task to start its daemon on a loaded machine).
GRACE = 2.0


def _singleton_proc_stop(directory: Path) -> None:
    """Run ``singleton-proc stop bot`` for ``directory``; it must succeed."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "singleton_proc", "stop", "bot"),
            *("--dir", str(directory), "--grace", str(GRACE)),
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone_within(pid: int, timeout: float = DEADLINE) -> bool:
    """Whether ``pid`` ends within ``timeout`` (a safety net: it ends at once)."""
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """The daemons a test makes, bystanders included: ended by pid after it.

    The test process adopts orphans (see ``conftest``), so the daemons
    become our children once their parents exit: each is killed if a stop
    missed it, and reaped.
    """
    made: list[int] = []
    yield made
    for pid in made:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    for pid in made:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(DEADLINE)


def _bystander(kind: str, made: list[int]) -> int:
    """A daemon of ``kind``, the same command line, outside any tree we stop."""
    pid = start_daemon(kind)
    made.append(pid)
    return pid


def _holder_with_daemon(
    name: str, directory: Path, kind: str, made: list[int]
) -> subprocess.Popen[str]:
    """A holder of ``name`` that has started a daemon of ``kind``."""
    holder = start_holder(name, directory, "--daemon", kind)
    word, pid = read_line(holder).split()
    assert word == "daemon"
    made.append(int(pid))
    assert read_line(holder) == "ready"
    return holder


# --- the lock wing: a holder's daemons go with it -------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "path",
    [
        "replace",
        pytest.param("terminate", marks=SLOW),  # the same stop as replace
        pytest.param("singleton-proc stop", marks=SLOW),
    ],
)
def test_a_stopped_holder_takes_its_daemons_along(
    path: str,
    kind: str,
    lock_dir: Path,
    daemons: list[int],
) -> None:
    bystander = _bystander(kind, daemons)
    holder = _holder_with_daemon("bot", lock_dir, kind, daemons)
    try:
        if path == "replace":
            replacing = SingleInstance(
                "bot", directory=lock_dir, on_conflict="replace", grace=GRACE
            )
            with replacing:
                pass
        elif path == "terminate":
            assert terminate("bot", grace=GRACE, directory=lock_dir) is not None
        else:
            _singleton_proc_stop(lock_dir)
        holder.wait(DEADLINE)
    finally:
        reap(holder)
    assert _gone_within(daemons[1]), f"{kind} daemon {daemons[1]} escaped {path}"
    assert _alive(bystander)


@pytest.mark.parametrize("kind", ["detached", "forked"])
def test_a_daemon_started_as_the_holder_exits_is_stopped_too(
    kind: str, lock_dir: Path, daemons: list[int]
) -> None:
    """A SIGTERM handler that starts a daemon, then exits: a last look finds it."""
    holder = start_holder("bot", lock_dir, "--daemon-on-term", kind)
    try:
        assert read_line(holder) == "ready"
        assert terminate("bot", grace=GRACE, directory=lock_dir) is not None
        word, pid = read_line(holder).split()
        assert word == "daemon"
        daemons.append(int(pid))
        holder.wait(DEADLINE)
    finally:
        reap(holder)
    assert _gone_within(daemons[0]), f"daemon {daemons[0]} escaped as its parent left"


NEW_COPY = """
import subprocess, sys
from singleton_proc import SingleInstance
helper = subprocess.Popen(
    [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
)
with SingleInstance("bot", directory=sys.argv[1], on_conflict="replace", grace=2):
    print("helper alive:", helper.poll() is None, flush=True)
helper.stdin.close()
helper.wait()
"""


def test_a_new_copy_started_by_the_old_one_keeps_its_own_helpers(
    lock_dir: Path,
) -> None:
    """A replacer that carries the old holder's mark spares what it started itself."""
    holder = start_holder("bot", lock_dir)
    try:
        assert read_line(holder) == "ready"
        old = singleton_proc.holder("bot", directory=lock_dir)
        assert old is not None
        env = {**os.environ, MARK_VARIABLE: holder_mark(old.pid, old.create_time)}
        done = subprocess.run(
            [sys.executable, "-c", NEW_COPY, str(lock_dir)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
            env=env,  # as if the old copy had started it
        )
        assert (done.returncode, done.stdout) == (0, "helper alive: True\n"), done
        holder.wait(DEADLINE)
    finally:
        reap(holder)


RUN_COMMAND = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from daemon_tasks import start_daemon
kind, environment, then = sys.argv[2:5]
pid = start_daemon(kind, clean_environment=environment == "cleared")
print(pid, flush=True)
if then == "kill":
    os.kill(pid, signal.SIGKILL)  # by pid; it was ours to start
    print("killed", flush=True)
sys.stdin.read()
"""


def _run(
    directory: Path, kind: str, environment: str, then: str = ""
) -> subprocess.Popen[str]:
    """``singleton-proc run bot -- CMD`` where CMD starts a daemon of ``kind``."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "singleton_proc", "run", "--dir", str(directory)),
            *("bot", "--", sys.executable, "-c", RUN_COMMAND, str(TESTS)),
            *(kind, environment, then),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    ("kind", "environment"),
    [
        pytest.param("double-fork", "inherited", marks=SLOW),
        pytest.param("setsid", "inherited", marks=SLOW),
        ("detached", "inherited"),
        ("detached", "cleared"),
    ],
)
def test_singleton_proc_run_then_stop_takes_the_commands_daemons(
    kind: str, environment: str, lock_dir: Path, daemons: list[int]
) -> None:
    """``run``'s command started a daemon; ``stop`` ends it too.

    Even one started with an empty environment, so without the mark: on
    Linux ``run`` adopts the orphans of its command.
    """
    bystander = _bystander(kind, daemons)
    run = _run(lock_dir, kind, environment)
    try:
        daemons.append(int(read_line(run)))
        _singleton_proc_stop(lock_dir)
        run.wait(DEADLINE)
    finally:
        reap(run)
    assert _gone_within(daemons[1]), f"{kind} daemon {daemons[1]} escaped"
    assert _alive(bystander)


def test_singleton_proc_run_reaps_the_orphans_it_adopts(
    lock_dir: Path, daemons: list[int]
) -> None:
    """An adopted daemon that ends is reaped by ``run`` at once, by pid."""
    run = _run(lock_dir, "detached", "cleared", "kill")
    try:
        daemons.append(int(read_line(run)))
        assert read_line(run) == "killed"
        deadline = time.monotonic() + DEADLINE
        while psutil.pid_exists(daemons[0]):  # a zombie of run's until reaped
            assert time.monotonic() < deadline, "run left its adopted child a zombie"
            time.sleep(0.005)
        run.communicate("", timeout=DEADLINE)
        assert run.returncode == 0
    finally:
        reap(run)


def test_singleton_proc_run_adopting_a_crowd_keeps_the_commands_status(
    lock_dir: Path,
) -> None:
    """Orphans that end in a burst are reaped without losing CMD's exit status.

    Each one's SIGCHLD may come while the wrapper reaps the one before.
    """
    # Each (... &) leaves an orphan that run adopts; all end before CMD does.
    crowd = "for i in $(seq 1000); do (true &); done; sleep 1; exit 5"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "singleton_proc", "run", "--dir", str(lock_dir)),
            *("bot", "--", "sh", "-c", crowd),
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert (done.returncode, done.stderr) == (5, "")


# --- the worker wing: a task's daemons go with its worker's stop ----------------


def _run_until_timeout(path: str, kind: str, report: str) -> object:
    """Run a task that starts a daemon and blocks, under a timeout, by ``path``."""
    if path == "run_process":
        return run_process(daemon_then_block, kind, report, timeout=GRACE)
    if path == "run_in_pool":
        return run_in_pool(step, [("daemon", kind, report)], n=1, timeout=GRACE)
    with process_pool(1, timeout=GRACE) as pool:
        return pool.submit(daemon_then_block, kind, report).result()


def _stop_a_worker(path: str, kind: str, report: str) -> None:
    """Run a task that starts a daemon and blocks, then stop it by ``path``."""
    if path == "terminate_tree":
        with start_process(daemon_then_block, kind, report) as handle:
            wait_for_file(report)
            handle.terminate_tree(GRACE)
        return
    with pytest.raises(TaskTimeoutError):
        _run_until_timeout(path, kind, report)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "path",
    [
        "run_process",
        pytest.param("run_in_pool", marks=SLOW),  # the same stop of a worker
        pytest.param("process_pool", marks=SLOW),
        pytest.param("terminate_tree", marks=SLOW),
    ],
)
def test_a_stopped_worker_takes_the_tasks_daemons_along(
    path: str,
    kind: str,
    tmp_path: Path,
    daemons: list[int],
) -> None:
    """A task timeout (each driver) or ``terminate_tree()`` ends the task's daemons."""
    bystander = _bystander(kind, daemons)
    report = str(tmp_path / "daemon")
    try:
        _stop_a_worker(path, kind, report)
    finally:
        if os.path.exists(report):
            daemons.append(int(wait_for_file(report)))
    assert len(daemons) == 2, "the task never started its daemon"
    assert _gone_within(daemons[1]), f"{kind} daemon {daemons[1]} escaped {path}"
    assert _alive(bystander)


@pytest.mark.parametrize("start_method", ["fork", pytest.param("spawn", marks=SLOW)])
def test_a_daemon_forked_off_a_task_is_found_under_every_start_method(
    start_method: str, tmp_path: Path, daemons: list[int]
) -> None:
    """A task's fork without ``exec`` carries its worker's mark, however it started.

    The bystander, forked off this process, starts with the very environment
    a ``fork``-started worker shows: only the worker's mark tells them apart.
    """
    bystander = _bystander("forked", daemons)
    report = str(tmp_path / "daemon")
    try:
        with pytest.raises(TaskTimeoutError):
            run_process(
                daemon_then_block,
                "forked",
                report,
                timeout=GRACE,
                start_method=start_method,
            )
    finally:
        if os.path.exists(report):
            daemons.append(int(wait_for_file(report)))
    assert len(daemons) == 2, "the task never started its daemon"
    assert _gone_within(daemons[1]), f"daemon {daemons[1]} escaped ({start_method})"
    assert _alive(bystander)


@pytest.mark.parametrize("kind", KINDS)
def test_a_pool_stopped_by_an_error_takes_the_daemons_along(
    kind: str, tmp_path: Path, daemons: list[int]
) -> None:
    bystander = _bystander(kind, daemons)
    report = str(tmp_path / "daemon")
    try:
        with pytest.raises(ValueError, match="sibling runs a daemon"):
            run_in_pool(
                step,
                [("daemon", kind, report), ("fail", kind, report)],
                n=2,
                chunksize=1,
            )
    finally:
        if os.path.exists(report):
            daemons.append(int(wait_for_file(report)))
    assert len(daemons) == 2, "the task never started its daemon"
    assert _gone_within(daemons[1]), f"{kind} daemon {daemons[1]} escaped"
    assert _alive(bystander)


@pytest.mark.parametrize("kind", ["detached", "forked"])
@pytest.mark.parametrize("path", ["run_process", "run_in_pool"])
def test_a_task_that_returns_keeps_its_daemon(
    path: str, kind: str, daemons: list[int]
) -> None:
    """A normal end stops nothing: the daemon is what the task was for."""
    if path == "run_process":
        daemons.append(run_process(daemon_then_return, kind))
    else:
        daemons.extend(run_in_pool(daemon_then_return, [kind], n=1))
    assert _alive(daemons[0])


CTRL_C_PROGRAM = """
import signal, sys
sys.path.insert(0, sys.argv[1])
from daemon_tasks import step
from singleton_proc import run_in_pool
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
run_in_pool(step, [("daemon", sys.argv[2], sys.argv[3])], n=1)
"""


@pytest.mark.parametrize("kind", KINDS)
def test_ctrl_c_takes_the_tasks_daemons_along(
    kind: str, tmp_path: Path, daemons: list[int]
) -> None:
    """Ctrl-C in the pool's parent stops the workers' trees, daemons included."""
    bystander = _bystander(kind, daemons)
    report = str(tmp_path / "daemon")
    program = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_PROGRAM, str(TESTS), kind, report],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        daemons.append(int(wait_for_file(report)))
        program.send_signal(signal.SIGINT)  # by pid, to the pool's parent only
        _, err = program.communicate(timeout=DEADLINE)
        assert "KeyboardInterrupt" in err
    finally:
        reap(program)
    assert _gone_within(daemons[1]), f"{kind} daemon {daemons[1]} escaped Ctrl-C"
    assert _alive(bystander)


@reads_proc
def test_a_process_newer_than_the_kept_reading_of_proc_is_known() -> None:
    """A stop that took a reading a moment before a worker started still finds
    what the worker forked (under load, a daemon escaped ``terminate_tree``:
    the worker was missing from the reading kept from the previous stop)."""
    lineage.marked("no-tree", fresh=True)  # a reading, kept for a while
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the copy waits for the pipe's end of file, and goes
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(0)
    try:
        assert lineage.kin_of(child) is not None
        assert lineage.kin_of(child) == lineage.kin_of(os.getpid())  # forked: kin
    finally:
        os.close(write_end)
        os.close(read_end)
        os.waitpid(child, 0)


@pytest.mark.parametrize("path", ["run_process", "run_in_pool"])
def test_a_tasks_own_subprocess_keeps_its_exit_status(path: str) -> None:
    """Nothing of ours reaps a task's children behind its back."""
    if path == "run_process":
        assert run_process(exit_status_of_a_subprocess, 7) == 7
    else:
        assert run_in_pool(exit_status_of_a_subprocess, [7, 9], n=2) == [7, 9]
