"""process_pool keeps the concurrent.futures contract that ported code relies on.

Code written for ``ProcessPoolExecutor`` must keep working when
``process_pool`` is swapped in: one task's failure in the parent stays that
task's, nothing of ours keeps a task's objects alive, ``initargs`` takes
what ``ProcessPoolExecutor`` takes, ``max_tasks_per_child`` and
``max_workers`` are there, and interpreter exit finishes the work.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import psutil
import pytest
from executor_tasks import (
    ExitWhenPickled,
    Tracked,
    exit_when_unpickled,
    fill_shared,
    keep_shared,
    leave_a_thread,
    make_blob,
    pid_once,
    tracked_call,
    tracked_item,
    use_shared,
)

from singleton_proc import UnpicklableError, iter_in_pool, process_pool, run_in_pool

from helpers import (
    DEADLINE,
    METHODS,
    assert_one_keyboard_interrupt,
    forking_with_threads,
    pids_in,
    posix_only,
    read_line,
    reap,
    wait_for_file,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = posix_only("workers under the fork and forkserver methods")


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """Fail a test that leaves a thread of ours behind."""
    before = threading.enumerate()
    yield
    left = [t for t in threading.enumerate() if t not in before]
    for thread in left:
        thread.join(DEADLINE)
    assert not [t for t in left if t.is_alive()], f"test left threads: {left}"


def _exit(_: Future[Any]) -> None:
    """A done-callback that exits."""
    sys.exit(5)


def _interrupt(_: Future[Any]) -> None:
    """A done-callback that raises what Ctrl-C raises."""
    raise KeyboardInterrupt


# -- one failure stays one failure ---------------------------------------------


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_a_system_exit_while_handling_one_task_fails_that_task_alone(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Pickling its argument, unpickling its result, a done-callback: each exits."""
    caplog.set_level(logging.ERROR, logger="singleton_proc")
    with process_pool(2, start_method=method) as pool:
        before = pool.submit(pow, 2, 3)
        pickling: Future[Any] = pool.submit(abs, ExitWhenPickled())  # type: ignore[arg-type]
        unpickling = pool.submit(exit_when_unpickled)
        called_back = pool.submit(pow, 2, 4)
        called_back.add_done_callback(_exit)
        after = pool.submit(pow, 2, 5)
        with pytest.raises(UnpicklableError, match="argument 1") as raised:
            pickling.result(DEADLINE)
        assert isinstance(raised.value.__cause__, SystemExit)
        with pytest.raises(UnpicklableError, match="could not be unpickled") as raised:
            unpickling.result(DEADLINE)
        assert isinstance(raised.value.__cause__, SystemExit)
        results = [f.result(DEADLINE) for f in (before, called_back, after)]
        assert results == [8, 16, 32]
        assert pool.submit(pow, 3, 2).result(DEADLINE) == 9  # the pool goes on
        called_back.add_done_callback(_exit)  # done: called here, at once
    callbacks = [r for r in caplog.records if "exception calling callback" in r.message]
    assert len(callbacks) == 2
    assert all(r.exc_info and r.exc_info[0] is SystemExit for r in callbacks)


def test_a_ctrl_c_in_a_done_callback_stays_a_ctrl_c() -> None:
    with process_pool(1) as pool:
        future = pool.submit(pow, 2, 3)
        assert future.result(DEADLINE) == 8
        with pytest.raises(KeyboardInterrupt):
            future.add_done_callback(_interrupt)


def test_run_in_pool_names_an_argument_whose_pickling_exits() -> None:
    with pytest.raises(UnpicklableError, match="item 1") as raised:
        run_in_pool(abs, [-1, ExitWhenPickled()], n=1)
    assert isinstance(raised.value.__cause__, SystemExit)
    outcomes = run_in_pool(abs, [-1, ExitWhenPickled()], n=1, return_exceptions=True)
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], UnpicklableError)


# -- max_workers ---------------------------------------------------------------


def test_max_workers_is_n_as_the_stdlib_spells_it() -> None:
    with process_pool(max_workers=2) as pool:
        assert pool.n == 2
        assert list(pool.map(pow, [2, 3], [2, 2])) == [4, 9]
    with pytest.raises(TypeError, match="n or max_workers"):
        process_pool(2, max_workers=2)
    with pytest.raises(ValueError, match="max_workers must be at least 1"):
        process_pool(max_workers=0)
    with pytest.raises(TypeError, match="max_workers must be an int"):
        process_pool(max_workers="2")  # type: ignore[arg-type]


# -- interpreter exit ----------------------------------------------------------

RUNNER = Path(__file__).with_name("child_executor.py")
#: What the library logs as interpreter exit begins to wait for the work.
_WAITS = "interpreter exit waits for the work"


def _started_at_exit(
    method: str, directory: Path
) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    """A program whose executor runs gated tasks (two so far), and the processes below.

    Its workers and the helpers of ``multiprocessing`` (a forkserver, a
    resource tracker), which end with it; the test reaps them, adopted.
    """
    parent = subprocess.Popen(
        [sys.executable, str(RUNNER), "exit", method, str(directory)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)  # fmt: skip
    try:
        _read_until(parent, "ready")
        workers = pids_in(directory, ["0", "1"])
        below = psutil.Process(parent.pid).children(recursive=True)
        assert set(workers) <= {proc.pid for proc in below}
    except BaseException:
        reap(parent)
        raise
    return parent, below


def _read_until(parent: subprocess.Popen[str], text: str) -> None:
    """Read ``parent``'s stdout until a line holding ``text`` (its log lines too)."""
    while text not in read_line(parent):
        pass


def _ended(parent: subprocess.Popen[str]) -> str:
    """Wait for ``parent`` (whose stdin is closed) to exit; its stderr.

    Past the deadline, fail with where its threads were: SIGABRT makes it
    print them (faulthandler), then it is gone.
    """
    assert parent.stderr
    try:
        parent.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        os.kill(parent.pid, signal.SIGABRT)
        parent.wait(DEADLINE)
        pytest.fail(f"the program did not exit; its threads:\n{parent.stderr.read()}")
    return parent.stderr.read()


def _all_gone(processes: list[psutil.Process]) -> None:
    """Fail unless every one ends within the deadline (reaping those adopted)."""
    _, alive = psutil.wait_procs(processes, timeout=DEADLINE)
    assert not alive


def _done(directory: Path) -> list[bool]:
    """Which of the four tasks finished."""
    return [(directory / f"done-{item}").exists() for item in range(4)]


@pytest.mark.parametrize("method", METHODS)
def test_interpreter_exit_finishes_the_work_submitted(
    method: str, tmp_path: Path
) -> None:
    """As ProcessPoolExecutor does: the tasks end after the program's last line.

    Two of them on workers started after it (max_tasks_per_child=1), which
    import the script's functions though the interpreter forgot its file.
    """
    parent, below = _started_at_exit(method, tmp_path)
    try:
        assert parent.stdin
        parent.stdin.close()  # the program returns from main
        _read_until(parent, _WAITS)
        assert _done(tmp_path) == [False] * 4
        (tmp_path / "go").touch()
        err = _ended(parent)
    finally:
        reap(parent)
    assert parent.returncode == 0, err
    assert not err
    assert _done(tmp_path) == [True] * 4
    _all_gone(below)


@pytest.mark.parametrize("method", METHODS)
def test_ctrl_c_at_interpreter_exit_stops_the_work(method: str, tmp_path: Path) -> None:
    """Waiting for the work at exit, one Ctrl-C stops the workers at once."""
    parent, below = _started_at_exit(method, tmp_path)
    try:
        assert parent.stdin
        parent.stdin.close()
        _read_until(parent, _WAITS)
        os.kill(parent.pid, signal.SIGINT)
        err = _ended(parent)
    finally:
        reap(parent)
    assert parent.returncode == 0, err  # the program itself had ended well
    assert "Traceback" not in err
    _all_gone(below)
    assert _done(tmp_path) == [False] * 4


@pytest.mark.parametrize("method", METHODS)
def test_a_program_ended_by_ctrl_c_does_not_wait_for_its_work(
    method: str, tmp_path: Path
) -> None:
    """An unhandled KeyboardInterrupt ends the program and stops its executor."""
    parent, below = _started_at_exit(method, tmp_path)
    try:
        os.kill(parent.pid, signal.SIGINT)  # in sys.stdin.read()
        _, err = parent.communicate(timeout=DEADLINE)
    finally:
        reap(parent)
    assert_one_keyboard_interrupt(parent, err)
    _all_gone(below)
    assert _done(tmp_path) == [False] * 4


# -- no references kept ----------------------------------------------------------


def _let_go(ref: weakref.ref[Any]) -> bool:
    """Whether ``ref``'s object is collected within a few seconds (a safety net).

    Polled: the thread that settled its future may still be returning.
    """
    deadline = time.monotonic() + 5
    while ref() is not None:
        if time.monotonic() > deadline:
            return False
        gc.collect()
        time.sleep(0.005)
    return True


def test_nothing_of_ours_keeps_a_result_the_caller_dropped() -> None:
    """What the caller reads is let go as it is read.

    A future's result, each value of map() (in a chunk of at most 64), and
    each value of iter_in_pool().
    """
    with process_pool(1) as pool:
        future = pool.submit(make_blob, 0)
        ref = weakref.ref(future.result(DEADLINE))
        del future
        assert _let_go(ref)
        results = pool.map(make_blob, range(4), chunksize=4)
        for x in range(4):  # one chunk: the rest of it is still to be read
            ref = weakref.ref(next(results))
            assert _let_go(ref), f"value {x} of map() is kept"
        assert next(results, None) is None
    with contextlib.closing(
        iter_in_pool(make_blob, range(4), n=1, chunksize=4)
    ) as values:
        for x in range(4):
            ref = weakref.ref(next(values))
            assert _let_go(ref), f"value {x} of iter_in_pool() is kept"
        assert next(values, None) is None


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_an_idle_worker_keeps_nothing_of_its_last_task(
    method: str, tmp_path: Path
) -> None:
    """The function, arguments and results are let go as the worker answers."""
    directory = str(tmp_path)

    def freed(pid: int, *names: str) -> None:
        for name in names:
            wait_for_file(str(tmp_path / f"freed-{name}-{pid}"), timeout=DEADLINE)
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE  # idle, alive

    with process_pool(1, start_method=method) as pool:
        task = functools.partial(tracked_call, Tracked(directory, "fn"))
        pid, *_ = pool.submit(task, Tracked(directory, "arg")).result(DEADLINE)
        freed(pid, "fn", "arg", "arg-result")
        items = [Tracked(directory, f"item{x}") for x in range(2)]
        pids = {pid for pid, _ in pool.map(tracked_item, items, chunksize=2)}
        freed(pids.pop(), "item0", "item1", "item0-result", "item1-result")


# -- initargs as ProcessPoolExecutor takes them ----------------------------------


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_initargs_take_multiprocessing_queues_locks_events_and_shared_memory(
    method: str,
) -> None:
    """Passed as each worker starts, as ProcessPoolExecutor passes them."""
    context = multiprocessing.get_context(method)
    queue, event = context.Queue(), context.Event()
    value, array = context.Value("i", 0), context.Array("i", 4)
    initargs = (queue, context.Lock(), event, context.Semaphore(1), value, array)
    with process_pool(2, initializer=keep_shared, initargs=initargs,
                      start_method=method) as pool:  # fmt: skip
        assert list(pool.map(use_shared, range(4), chunksize=1)) == [0, 1, 2, 3]
        assert sorted(queue.get(timeout=DEADLINE) for _ in range(4)) == [0, 1, 2, 3]
    assert event.is_set()
    assert (value.value, array[:]) == (6, [0, 10, 20, 30])
    assert run_in_pool(use_shared, [3], n=1, initializer=keep_shared,
                       initargs=initargs, start_method=method) == [3]  # fmt: skip
    assert (queue.get(timeout=DEADLINE), value.value) == (3, 9)
    queue.close()
    queue.join_thread()


def test_a_queue_made_for_another_start_method_is_refused_saying_how() -> None:
    """Its locks would crash a spawned worker (Python 3.10), or be refused late."""
    fork = multiprocessing.get_context("fork")
    queue, value = fork.Queue(), fork.Value("i", 0)
    for method in ("spawn", "forkserver"):
        with pytest.raises(
            RuntimeError, match=rf"argument 1 .*get_context\('{method}'\)"
        ):
            process_pool(1, initializer=keep_shared, initargs=(queue,) * 6,
                         start_method=method)  # fmt: skip
        with pytest.raises(RuntimeError, match=r"argument 2 \(list\)"):
            run_in_pool(abs, [1], initializer=keep_shared, start_method=method,
                        initargs=(1, [value], 3, 4, 5, 6))  # fmt: skip
    queue.close()


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_initargs_take_raw_shared_memory_and_pipe_ends(method: str) -> None:
    """Which multiprocessing's own pickler passes as a worker starts."""
    context = multiprocessing.get_context(method)
    raw, unlocked = context.RawArray("i", 2), context.Array("i", 2, lock=False)
    reader, writer = context.Pipe(duplex=False)
    initargs = (writer, unlocked, None, None, context.RawValue("i", 5), raw)
    with process_pool(1, initializer=keep_shared, initargs=initargs,
                      start_method=method) as pool:  # fmt: skip
        assert pool.submit(fill_shared).result(DEADLINE) == 5
    assert reader.poll(DEADLINE)
    assert (reader.recv(), raw[:], unlocked[:]) == ("filled", [1, 2], [3, 4])
    reader.close()
    writer.close()


# -- max_tasks_per_child -----------------------------------------------------------


def _check_budget(outcomes: list[Any], items: int, budget: int) -> None:
    """Every item once, in order, 7 failed in its place, no worker over ``budget``."""
    assert isinstance(outcomes[7], ValueError)
    assert [x for _, x in outcomes[:7] + outcomes[8:]] == [*range(7), *range(8, items)]
    pids = collections.Counter(pid for pid, _ in outcomes[:7] + outcomes[8:])
    assert max(pids.values()) <= budget
    assert len(pids) >= (items - 1) // budget


def _outcome(future: Future[Any]) -> Any:
    return future.exception(DEADLINE) or future.result()


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_process_pool_replaces_a_worker_after_max_tasks_per_child(
    method: str, tmp_path: Path
) -> None:
    """Nothing lost or run twice, order and errors kept, no worker over budget."""
    task = functools.partial(pid_once, str(tmp_path))
    with process_pool(2, max_tasks_per_child=2, start_method=method) as pool:
        assert pool.max_tasks_per_child == 2
        futures = [pool.submit(task, x) for x in range(12)]
        _check_budget([_outcome(f) for f in futures], 12, 2)
    for path in tmp_path.iterdir():
        path.unlink()
    with process_pool(2, max_tasks_per_child=3, start_method=method) as pool:
        results = pool.map(task, range(20), chunksize=10)  # chunks of 3 at most
        assert [next(results) for _ in range(7)] == [(mock.ANY, x) for x in range(7)]
        with pytest.raises(ValueError, match="seven"):
            next(results)


def test_run_in_pool_and_iter_in_pool_replace_workers_after_max_tasks_per_child(
    tmp_path: Path,
) -> None:
    task = functools.partial(pid_once, str(tmp_path))
    outcomes = run_in_pool(task, range(30), n=2, chunksize=10, max_tasks_per_child=3,
                           return_exceptions=True)  # fmt: skip
    _check_budget(outcomes, 30, 3)
    for path in tmp_path.iterdir():
        path.unlink()
    stream = iter_in_pool(task, iter(range(30)), n=2, max_tasks_per_child=4,
                          return_exceptions=True)  # fmt: skip
    _check_budget(list(stream), 30, 4)


def test_max_tasks_per_child_is_refused_with_another_executor() -> None:
    with (
        ThreadPoolExecutor(1) as threads,
        pytest.raises(ValueError, match="max_tasks_per_child= configures our own"),
    ):
        run_in_pool(abs, [1], executor=threads, max_tasks_per_child=2)
    with pytest.raises(ValueError, match="max_tasks_per_child must be at least 1"):
        process_pool(1, max_tasks_per_child=0)


@pytest.mark.slow  # 5 s: how long a retired worker may take to exit
def test_a_retired_worker_that_will_not_exit_is_stopped_before_its_successor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Never more than n workers: the next task waits, the pool goes on."""
    caplog.set_level(logging.WARNING, logger="singleton_proc")
    with process_pool(1, max_tasks_per_child=1) as pool:
        pid, started = pool.submit(leave_a_thread).result(DEADLINE)
        second = pool.submit(leave_a_thread).result(DEADLINE)
        assert second != (pid, started)
        with contextlib.suppress(psutil.NoSuchProcess):  # stopped and reaped before
            assert psutil.Process(pid).create_time() != started
    assert "max_tasks_per_child" in caplog.text
