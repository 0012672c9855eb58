"""run_process and start_process: real workers that never lie about how they ended."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

import child_tasks
import psutil
import pytest

from singleton_proc import (
    SingleInstance,
    SingletonProcError,
    TaskTimeoutError,
    UnpicklableError,
    WorkerDiedError,
    run_process,
    start_process,
)
from singleton_proc._workers.launch import choose_start_method
from singleton_proc._workers.process import ProcessHandle
from singleton_proc._workers.protocol import RemoteTraceback

from helpers import (
    CTRL_C_BOUND,
    DEADLINE,
    DEATH_BOUND,
    FORK_FAST,
    METHODS,
    ORPHAN_BOUND,
    TESTS,
    assert_one_keyboard_interrupt,
    fork_a_child_that_exits,
    forking_with_threads,
    posix_only,
    press_ctrl_c,
    reads_proc,
    wait_for_file,
    wait_until_gone,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = posix_only("workers under fork and forkserver, killed with SIGKILL")

RUNNER = TESTS / "child_runner.py"
#: What no pickler can send.
_A_LOCK = threading.Lock()


@pytest.fixture
def ready(tmp_path: Path) -> str:
    """Where a worker says it runs (its pid)."""
    return str(tmp_path / "ready")


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie has)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- the call returns or raises ------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_returns_the_value_with_args_and_kwargs(method: str) -> None:
    assert run_process(child_tasks.add, 2, y=5, start_method=method) == 7


@pytest.mark.parametrize("method", METHODS)
def test_an_exception_comes_back_with_its_type_and_the_remote_traceback(
    method: str,
) -> None:
    with pytest.raises(ValueError, match=r"^no good$") as caught:
        run_process(child_tasks.fail, "no good", start_method=method)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "_inner_fail" in cause.text
    assert "ValueError: no good" in cause.text


def test_the_handle_returns_the_value_and_reports_the_pid() -> None:
    with start_process(child_tasks.add, 1, 2) as handle:
        assert isinstance(handle, ProcessHandle)
        assert handle.result(timeout=DEADLINE) == 3
        assert handle.exitcode == 0
        assert not handle.is_alive()
    assert _gone(handle.pid)


# -- the interface of multiprocessing.Process ---------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_sentinels_say_which_children_ended(method: str, ready: str) -> None:
    quick = start_process(child_tasks.add, 1, 2, start_method=method)
    slow = start_process(child_tasks.block, ready, start_method=method)
    try:
        wait_for_file(ready)
        assert wait([quick.sentinel, slow.sentinel], DEADLINE) == [quick.sentinel]
        assert (quick.exitcode, quick.is_alive(), quick.done()) == (0, False, True)
        assert quick.result() == 3
        assert (slow.exitcode, slow.is_alive(), slow.done()) == (None, True, False)
        slow.kill()
        assert wait([slow.sentinel], DEADLINE) == [slow.sentinel]
        assert slow.exitcode == -signal.SIGKILL
        with pytest.raises(WorkerDiedError, match="SIGKILL"):
            slow.result()
    finally:
        for handle in (quick, slow):
            handle.terminate_tree(grace=1.0)


def test_terminate_signals_the_child_alone_and_close_releases_it(ready: str) -> None:
    handle = start_process(child_tasks.block_with_grandchild, ready)
    grandchild = 0
    try:
        worker, grandchild = map(int, wait_for_file(ready).split())
        assert handle.name == "singleton_proc: block_with_grandchild"
        with pytest.raises(ValueError, match="still running"):
            handle.close()
        handle.terminate()
        handle.join(DEADLINE)
        assert handle.exitcode == -signal.SIGTERM
        assert _gone(worker)
        assert not _gone(grandchild)  # Process.terminate's meaning: the tree is not
        handle.terminate()  # once it has ended: nothing is sent, no error
        handle.kill()
        handle.close()
        handle.close()  # idempotent, as Process.close
        with pytest.raises(ValueError, match="was closed"):
            _ = handle.sentinel
        assert handle.exitcode == -signal.SIGTERM
    finally:
        handle.terminate_tree(grace=1.0)
        if grandchild:  # an orphan now, reparented to us: stopped by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
            wait_until_gone(grandchild, timeout=DEADLINE)


# -- the child dies ------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("SIGKILL", "was killed by SIGKILL (often the OOM killer"),
        ("SIGSEGV", "was killed by SIGSEGV (a crash in native code"),
        ("os._exit", "exited with code 3"),
        ("sys.exit", "exited with code 3"),
    ],
)
def test_a_death_is_a_worker_died_error_naming_pid_and_cause(
    method: str, how: str, says: str
) -> None:
    exitcode = -getattr(signal, how) if how.startswith("SIG") else 3
    handle = start_process(child_tasks.die, how, start_method=method)
    with pytest.raises(WorkerDiedError) as caught:
        handle.result(timeout=DEADLINE)
    error = caught.value
    assert isinstance(error, BrokenProcessPool)
    assert isinstance(error, SingletonProcError)
    assert error.pid == handle.pid
    assert error.exitcode == exitcode
    assert f"worker {handle.pid} running die {says}" in str(error)
    assert pickle.loads(pickle.dumps(error)).exitcode == exitcode  # noqa: S301


@pytest.mark.parametrize("method", METHODS)
def test_a_killed_worker_is_noticed_at_once(method: str, ready: str) -> None:
    handle = start_process(child_tasks.block, ready, start_method=method)
    pid = int(wait_for_file(ready))
    assert pid == handle.pid
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerDiedError, match="SIGKILL"):
        handle.result(timeout=DEADLINE)
    assert time.monotonic() - killed < DEATH_BOUND


# -- timeouts and stopping -----------------------------------------------------


@pytest.mark.parametrize("method", FORK_FAST)
def test_a_timeout_kills_the_whole_tree(method: str, ready: str) -> None:
    with pytest.raises(TaskTimeoutError) as caught:
        run_process(
            child_tasks.block_with_grandchild, ready, timeout=3.0, start_method=method
        )
    assert caught.value.timeout == 3.0
    assert isinstance(caught.value, TimeoutError)
    text = wait_for_file(ready, timeout=0)  # it was running
    worker, grandchild = map(int, text.split())
    assert f"worker {worker}" in str(caught.value)
    assert _gone(worker)
    wait_until_gone(grandchild, timeout=DEADLINE)  # an orphan: reparented to us


@pytest.mark.parametrize("method", METHODS)
def test_a_timeout_stops_a_child_that_exec_ed_another_program(method: str) -> None:
    """Its pipe ends at the exec, long before it does: the stop must not wait."""
    program = [sys.executable, "-c", "import time; time.sleep(60)"]
    began = time.monotonic()
    with pytest.raises(TaskTimeoutError):
        run_process(os.execv, sys.executable, program, timeout=1, start_method=method)
    assert time.monotonic() - began < DEADLINE  # not the program's 60 s


def test_result_timeout_leaves_the_child_running(ready: str) -> None:
    handle = start_process(child_tasks.block, ready)
    try:
        wait_for_file(ready)
        with pytest.raises(TimeoutError) as caught:
            handle.result(timeout=0.05)
        assert not isinstance(caught.value, TaskTimeoutError)
        assert handle.is_alive()
        assert not _gone(handle.pid)
    finally:
        handle.terminate_tree(grace=1.0)
    assert _gone(handle.pid)
    with pytest.raises(WorkerDiedError, match="stopped by terminate_tree"):
        handle.result()


def test_leaving_the_with_block_stops_the_tree(ready: str) -> None:
    with start_process(child_tasks.block_with_grandchild, ready) as handle:
        worker, grandchild = map(int, wait_for_file(ready).split())
        assert worker == handle.pid
    assert _gone(worker)
    wait_until_gone(grandchild, timeout=DEADLINE)
    handle.join()  # a no-op once ended
    with pytest.raises(WorkerDiedError, match="stopped on leaving its with block"):
        handle.result()


# -- Ctrl-C --------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_the_worker_ignores_sigint(method: str, tmp_path: Path, ready: str) -> None:
    go = str(tmp_path / "go")
    with start_process(child_tasks.wait_for_go, ready, go, start_method=method) as h:
        wait_for_file(ready)
        os.kill(h.pid, signal.SIGINT)
        child_tasks.say_ready(go)
        assert h.result(timeout=DEADLINE) == "went"


@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_stops_the_worker_and_raises_one_keyboard_interrupt(
    method: str, ready: str
) -> None:
    parent = subprocess.Popen(
        [sys.executable, str(RUNNER), "run", method, ready],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        worker = int(wait_for_file(ready))
    finally:
        err, elapsed, below = press_ctrl_c(parent)
    assert_one_keyboard_interrupt(parent, err)
    assert elapsed < CTRL_C_BOUND
    assert worker in {proc.pid for proc in below}
    # The worker, and the forkserver and resource tracker that served the
    # parent, were reparented to us (a subreaper) if they outlived it.
    _, alive = psutil.wait_procs(below, timeout=DEADLINE)
    assert not alive


# -- the parent is SIGKILLed ---------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["start", "thread-start"])
def test_workers_exit_by_themselves_when_the_parent_is_killed(
    method: str, mode: str, ready: str
) -> None:
    parent = subprocess.Popen([sys.executable, str(RUNNER), mode, method, ready])
    try:
        worker = int(wait_for_file(ready))
        left = psutil.Process(parent.pid).children(recursive=True)
        assert worker in {proc.pid for proc in left}
    finally:
        parent.kill()
        parent.wait()
    killed = time.monotonic()
    # The worker, and the forkserver and resource tracker that served the
    # parent, are reparented to us (a subreaper) and must end on their own.
    gone, alive = psutil.wait_procs(left, timeout=ORPHAN_BOUND)
    assert not alive, f"still alive {time.monotonic() - killed:.1f} s later: {alive}"
    assert worker in {proc.pid for proc in gone}


@pytest.mark.parametrize("method", METHODS)
@forking_with_threads
def test_a_worker_started_from_a_short_lived_thread_outlives_it(
    method: str, tmp_path: Path, ready: str
) -> None:
    go = str(tmp_path / "go")
    handles: list[ProcessHandle] = []
    starter = threading.Thread(
        target=lambda: handles.append(
            start_process(child_tasks.wait_for_go, ready, go, start_method=method)
        )
    )
    starter.start()
    starter.join()
    (handle,) = handles
    with handle:
        wait_for_file(ready)
        assert not starter.is_alive()
        child_tasks.say_ready(go)  # after the starting thread has exited
        assert handle.result(timeout=DEADLINE) == "went"


# -- logging -------------------------------------------------------------------


@pytest.fixture
def worker_log(tmp_path: Path) -> Iterator[Path]:
    """The parent logs ``child_tasks.*`` at INFO to a file, through the root too."""
    path = tmp_path / "parent.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("child_tasks")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        handler.close()


@pytest.mark.parametrize("method", METHODS)
def test_worker_records_reach_the_parent_handlers_once_at_its_levels(
    method: str, worker_log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pid = run_process(child_tasks.log_records, start_method=method)
    lines = worker_log.read_text().splitlines()
    assert lines[:3] == [
        "INFO child_tasks.demo info from the worker 1",
        "WARNING child_tasks.demo warning from the worker",
        "ERROR child_tasks.demo error with a traceback",
    ], lines
    assert "ValueError: boom" in "\n".join(lines[3:])
    assert sum("from the worker" in line for line in lines) == 2
    mine = [r for r in caplog.records if r.name == "child_tasks.demo"]
    assert [r.levelname for r in mine] == ["INFO", "WARNING", "ERROR"]
    assert {r.process for r in mine} == {pid}


# -- what cannot be pickled ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "what"),
    [
        ((lambda: _A_LOCK,), {}, "the function"),  # by value, and its closure
        ((child_tasks.add, threading.Lock()), {}, "argument 1"),
        ((child_tasks.add, 1), {"y": threading.Lock()}, "keyword argument 'y'"),
    ],
)
def test_an_unpicklable_call_is_named_before_any_process_starts(
    args: tuple[object, ...], kwargs: dict[str, Any], what: str
) -> None:
    with pytest.raises(UnpicklableError) as caught:
        run_process(*args, start_method="fork", **kwargs)
    assert caught.value.what == what
    assert f"cannot send {what} (" in str(caught.value)
    assert isinstance(caught.value, (SingletonProcError, pickle.PicklingError))
    assert not psutil.Process().children()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("task", "what", "says"),
    [
        (child_tasks.return_lock, "the result", "the result of the call (lock"),
        (child_tasks.raise_unpicklable, "the exception", "raised NeedsTwoArgsError"),
    ],
)
def test_an_unpicklable_result_or_exception_is_named_never_a_hang(
    method: str, task: object, what: str, says: str
) -> None:
    with pytest.raises(UnpicklableError) as caught:
        run_process(task, start_method=method)
    assert caught.value.what == what
    assert says in str(caught.value)
    assert isinstance(caught.value.__cause__, RemoteTraceback)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_call_the_worker_cannot_unpickle_is_named(method: str) -> None:
    def only_here() -> None: ...

    only_here.__module__ = "child_tasks"
    only_here.__qualname__ = only_here.__name__ = "only_here"
    child_tasks.only_here = only_here  # type: ignore[attr-defined]
    try:
        with pytest.raises(UnpicklableError, match="could not unpickle the call"):
            run_process(only_here, start_method=method)
    finally:
        del child_tasks.only_here  # type: ignore[attr-defined]


# -- start methods and the instance lock ---------------------------------------


def test_the_default_start_method_never_forks_a_threaded_parent() -> None:
    assert choose_start_method(None) == "fork"
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert choose_start_method(None) == "forkserver"
    finally:
        release.set()
        other.join()
    assert choose_start_method("spawn") == "spawn"
    with pytest.raises(ValueError, match="start_method must be one of 'fork'"):
        choose_start_method("thread")


@reads_proc  # the worker lists its descriptors in /proc/self/fd
def test_workers_never_inherit_the_instance_lock(lock_dir: Path) -> None:
    """Only ``fork`` copies descriptors; spawn and forkserver exec a fresh interpreter.

    Those inherit nothing but what multiprocessing passes, so only ``fork``
    can leak the lock to a worker (which would then hold the name after the
    holder exits): the lock file's own fork hook closes it in the child.
    """
    with SingleInstance("bot", directory=lock_dir):
        fds = run_process(child_tasks.lock_fds, str(lock_dir), start_method="fork")
    assert fds == []


def test_concurrent_calls_from_many_threads_never_hang() -> None:
    """multiprocessing reaps its listed children from any thread: not ours."""
    results: list[int] = []
    errors: list[BaseException] = []

    def calls(base: int) -> None:
        try:
            results.extend(
                run_process(child_tasks.add, base, i, start_method="fork")
                for i in range(8)
            )
        except BaseException as exc:  # noqa: BLE001  (reported to the test)
            errors.append(exc)

    threads = [threading.Thread(target=calls, args=(100 * n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a call hung"
    assert errors == []
    assert sorted(results) == sorted(100 * n + i for n in range(6) for i in range(8))


def test_a_forked_child_leaves_the_parent_workers_alone(ready: str) -> None:
    with start_process(child_tasks.wait_for_go, ready, ready + ".go") as handle:
        wait_for_file(ready)
        fork_a_child_that_exits()
        assert handle.is_alive()
        child_tasks.say_ready(ready + ".go")
        assert handle.result(timeout=DEADLINE) == "went"
