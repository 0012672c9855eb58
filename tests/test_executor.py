"""process_pool: a concurrent.futures executor whose workers never hang or linger."""

from __future__ import annotations

import concurrent.futures
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
from concurrent.futures import CancelledError, Future
from typing import TYPE_CHECKING, Any

import executor_tasks
import pool_tasks
import psutil
import pytest
from child_tasks import fail, wait_for_go

from singleton_proc import TaskTimeoutError, UnpicklableError, WorkerDiedError
from singleton_proc._workers.engine import WorkerPool
from singleton_proc._workers.executor import process_pool
from singleton_proc._workers.protocol import RemoteTraceback

from helpers import (
    CTRL_C_BOUND,
    DEADLINE,
    FORK_FAST,
    METHODS,
    ORPHAN_BOUND,
    TESTS,
    all_gone,
    assert_one_keyboard_interrupt,
    forking_with_threads,
    pids_in,
    posix_only,
    press_ctrl_c,
    read_line,
    wait_for_file,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from multiprocessing.connection import Connection
    from pathlib import Path

pytestmark = posix_only("workers under fork and forkserver, killed with SIGKILL")

RUNNER = TESTS / "child_executor.py"
#: Leaving the with block by an exception: the workers are stopped at once.
STOP_BOUND = 10.0


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """Fail a test that leaves a thread of ours behind."""
    before = threading.enumerate()
    yield
    left = [t for t in threading.enumerate() if t not in before]
    for thread in left:  # an executor dropped without shutdown ends on its own
        thread.join(DEADLINE)
    assert not [t for t in left if t.is_alive()], f"test left threads: {left}"


def _error(future: Future[Any]) -> BaseException:
    """The exception the future ended with (failing if it has none)."""
    error = future.exception(DEADLINE)
    assert error is not None
    return error


# -- submit --------------------------------------------------------------------


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_submit_gives_the_value_or_the_same_exception_with_its_traceback(
    method: str,
) -> None:
    with process_pool(2, start_method=method) as pool:
        assert isinstance(pool, concurrent.futures.Executor)
        assert pool.start_method == method
        squared = pool.submit(pool_tasks.square, 7)
        greeted = pool.submit(executor_tasks.greet, "you", greeting="hi")
        failed = pool.submit(fail, "no good")
        assert squared.result(DEADLINE) == 49
        assert greeted.result(DEADLINE) == "hi you"
        error = _error(failed)
    assert type(error) is ValueError
    assert str(error) == "no good"
    assert isinstance(error.__cause__, RemoteTraceback)
    assert "_inner_fail" in error.__cause__.text


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_a_dead_worker_fails_its_own_task_and_the_pool_goes_on(method: str) -> None:
    with process_pool(2, start_method=method) as pool:
        futures = [pool.submit(pool_tasks.die_on, 5, "SIGKILL", x) for x in range(10)]
        error = _error(futures[5])
        assert isinstance(error, WorkerDiedError)
        assert error.exitcode == -signal.SIGKILL
        assert error.pid is not None
        assert f"worker {error.pid} running die_on in task" in str(error)
        assert "arguments tuple: (5, 'SIGKILL', 5)" in str(error)
        assert "was killed by SIGKILL" in str(error)
        others = [f.result(DEADLINE) for i, f in enumerate(futures) if i != 5]
        assert others == [x for x in range(10) if x != 5]
        assert pool.submit(pool_tasks.square, 3).result(DEADLINE) == 9
    assert not psutil.pid_exists(error.pid)


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_a_timeout_kills_the_task_tree_and_the_others_finish(
    method: str, tmp_path: Path
) -> None:
    task = functools.partial(pool_tasks.hang_on, 2, str(tmp_path))
    with process_pool(2, start_method=method, timeout=1.0) as pool:
        futures = [pool.submit(task, x) for x in range(6)]
        error = _error(futures[2])
        assert [f.result(DEADLINE) for f in futures if f is not futures[2]] == [
            0,
            1,
            3,
            4,
            5,
        ]
    worker, grandchild = map(int, wait_for_file(str(tmp_path / "hung")).split())
    assert isinstance(error, TaskTimeoutError)
    assert error.timeout == 1.0
    assert f"ran over its timeout of 1.0 s in worker {worker}" in str(error)
    all_gone([worker, grandchild])


def test_a_future_can_be_cancelled_until_a_worker_takes_it(tmp_path: Path) -> None:
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    with process_pool(1) as pool:
        first = pool.submit(wait_for_go, ready, go)
        wait_for_file(ready)
        assert first.running()
        assert not first.cancel()  # in its worker: too late
        second = pool.submit(executor_tasks.gate_then_mark, str(tmp_path), 1)
        third = pool.submit(pool_tasks.square, 3)
        assert second.cancel()
        (tmp_path / "go").touch()
        assert first.result(DEADLINE) == "went"
        assert third.result(DEADLINE) == 9
    assert second.cancelled()
    with pytest.raises(CancelledError):
        second.result()
    assert not (tmp_path / "ran-1").exists()


def test_what_will_not_pickle_is_named_on_the_future() -> None:
    with process_pool(1) as pool:
        lock = threading.Lock()
        argument = _error(pool.submit(pool_tasks.square, lock))  # type: ignore[arg-type]
        keyword = _error(pool.submit(executor_tasks.greet, "x", greeting=lock))  # type: ignore[arg-type]
        function = _error(pool.submit(lambda: lock))  # by value, with its closure
        result = _error(pool.submit(pool_tasks.unpicklable_result))
        assert pool.submit(pool_tasks.square, 4).result(DEADLINE) == 16
    assert isinstance(argument, UnpicklableError)
    assert argument.what == "argument 1"
    assert isinstance(keyword, UnpicklableError)
    assert keyword.what == "keyword argument 'greeting'"
    assert isinstance(function, UnpicklableError)
    assert function.what == "the function"
    assert isinstance(result, UnpicklableError)
    assert result.what == "the result"


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_the_initializer_runs_in_each_worker_first(method: str) -> None:
    with process_pool(
        2,
        initializer=pool_tasks.remember,
        initargs=("config", 7),
        start_method=method,
    ) as pool:
        assert pool.submit(pool_tasks.remembered).result(DEADLINE) == ["config", 7]


def test_an_initializer_that_raises_fails_the_tasks_and_breaks_the_pool() -> None:
    with process_pool(
        2, initializer=pool_tasks.raise_in_initializer, initargs=("no config",)
    ) as pool:
        error = _error(pool.submit(pool_tasks.square, 2))
        assert isinstance(error, KeyError)
        assert isinstance(error.__cause__, RemoteTraceback)
        with pytest.raises(
            concurrent.futures.process.BrokenProcessPool, match="is broken"
        ) as caught:
            pool.submit(pool_tasks.square, 3)
        assert caught.value.__cause__ is error


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"n": 0}, ValueError, "n must be at least 1, not 0"),
        ({"n": 2.0}, TypeError, "n must be an int, not float"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds and finite"),
        ({"initializer": 3}, TypeError, "initializer must be callable or None"),
        ({"start_method": "thread"}, ValueError, "start_method must be one of"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        process_pool(**kwargs)


def test_an_unpicklable_initializer_argument_is_raised_at_the_call() -> None:
    with pytest.raises(UnpicklableError, match="initializer argument 1"):
        process_pool(1, initializer=print, initargs=(threading.Lock(),))


def test_the_default_start_method_never_forks_and_n_defaults_to_the_cpus() -> None:
    with process_pool() as pool:
        assert pool.start_method != "fork"
        assert pool.n >= 1


# -- map -----------------------------------------------------------------------


@pytest.fixture
def chunk_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of items of each chunk put into a pool (by its manager thread)."""
    sizes: list[int] = []
    put = WorkerPool.put

    def spy(pool: WorkerPool, first: int, items: list[Any], *args: Any) -> None:
        sizes.append(len(items))
        put(pool, first, items, *args)

    monkeypatch.setattr(WorkerPool, "put", spy)
    return sizes


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_map_gives_ordered_results_chunking_a_generator_lazily(
    method: str, chunk_sizes: list[int]
) -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(20_000):
            pulled += 1
            yield i

    # Two chunks per worker in flight, and the one being read; the stream's
    # cap on a chunk is 2,000 items.
    window = (2 * 2 + 1) * 2000
    with process_pool(2, start_method=method) as pool:
        for done, value in enumerate(pool.map(pool_tasks.square, items()), 1):
            assert value == (done - 1) ** 2
            assert pulled - done <= window
        assert done == 20_000
    assert sum(chunk_sizes) == 20_000
    assert chunk_sizes[0] == 1  # it starts with one item, then adapts
    assert len(chunk_sizes) < 1000


def test_map_chunksize_fixes_the_chunks(chunk_sizes: list[int]) -> None:
    with process_pool(2) as pool:
        assert list(pool.map(pool_tasks.square, range(50), chunksize=7)) == [
            x * x for x in range(50)
        ]
        with pytest.raises(ValueError, match="chunksize must be at least 1"):
            pool.map(pool_tasks.square, range(5), chunksize=0)
    assert chunk_sizes == [7] * 7 + [1]


def test_a_death_in_a_map_chunk_raises_at_its_item_after_the_ones_before() -> None:
    task = functools.partial(pool_tasks.die_on, 17, "SIGKILL")
    got: list[int] = []
    with process_pool(2) as pool:
        with pytest.raises(WorkerDiedError, match="on item 17") as caught:
            got.extend(pool.map(task, range(40), chunksize=8))
        # The rest of that chunk ran again elsewhere: the pool goes on.
        assert pool.submit(pool_tasks.square, 3).result(DEADLINE) == 9
    assert got == list(range(17))
    assert caught.value.exitcode == -signal.SIGKILL


def test_map_over_several_iterables_stops_at_the_shortest() -> None:
    with process_pool(2) as pool:
        assert list(pool.map(pow, [2, 3, 4], (x for x in [5, 6, 7, 8]))) == [
            32,
            729,
            16384,
        ]
        assert list(pool.map(pow, [2, 3], [1, 2, 3], chunksize=1)) == [2, 9]
        assert list(pool.map(pool_tasks.square, [])) == []


def test_map_raises_the_first_failure_where_it_comes() -> None:
    got: list[int] = []
    with process_pool(2) as pool:
        results = pool.map(functools.partial(pool_tasks.fail_on, 13), range(40))
        with pytest.raises(ValueError, match="bad item 13") as caught:
            got.extend(results)
    assert got == list(range(13))
    assert isinstance(caught.value.__cause__, RemoteTraceback)


def test_map_raises_what_the_input_raised_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise OSError("input broke")

    got: list[int] = []
    with process_pool(2) as pool:
        results = pool.map(pool_tasks.square, items(), chunksize=2)
        with pytest.raises(OSError, match="input broke"):
            got.extend(results)
    assert got == [0, 1, 4, 9, 16]


@pytest.mark.slow  # 3 s of timing, the same on every Python
def test_map_timeout_counts_from_the_call(tmp_path: Path) -> None:
    task = functools.partial(pool_tasks.hang_on, 2, str(tmp_path))
    got: list[int] = []
    started = time.monotonic()
    with (
        pytest.raises(concurrent.futures.TimeoutError) as caught,
        process_pool(2) as pool,
    ):
        got.extend(pool.map(task, range(4), timeout=3.0, chunksize=1))
    assert not isinstance(caught.value, TaskTimeoutError)
    assert got == [0, 1]
    assert 3.0 <= time.monotonic() - started < 3.0 + STOP_BOUND
    # Left by the exception: the hung task's tree was stopped.
    all_gone([int(pid) for pid in wait_for_file(str(tmp_path / "hung")).split()])


def test_leaving_map_early_cancels_the_chunks_not_started(tmp_path: Path) -> None:
    task = functools.partial(executor_tasks.gate_then_mark, str(tmp_path))
    with process_pool(1) as pool:
        results = pool.map(task, range(100), timeout=0.5, chunksize=1)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)
        (tmp_path / "go").touch()
    assert (tmp_path / "ran-0").exists()
    assert not (tmp_path / "ran-1").exists()


def test_map_results_must_be_read_before_shutdown() -> None:
    with process_pool(1) as pool:
        results = pool.map(pool_tasks.square, range(100), chunksize=1)
    with pytest.raises(RuntimeError, match="inside the with block"):
        list(results)


# -- logging -------------------------------------------------------------------


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_worker_records_reach_the_parent_once_each(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="child_tasks")
    with process_pool(2, start_method=method) as pool:
        futures = [pool.submit(pool_tasks.log_item, x) for x in range(10)]
        assert list(pool.map(pool_tasks.log_item, range(10, 20))) == list(range(10, 20))
        assert [f.result(DEADLINE) for f in futures] == list(range(10))
    mine = [r for r in caplog.records if r.name == "child_tasks.pool"]
    assert sorted(int(r.getMessage().split()[1]) for r in mine) == list(range(20))
    assert {r.levelname for r in mine} == {"WARNING"}
    assert os.getpid() not in {r.process for r in mine}


# -- the manager thread --------------------------------------------------------


def test_a_submission_or_a_shutdown_wakes_the_manager_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Unwoken, the manager would wait a minute for its workers.
    monkeypatch.setattr("singleton_proc._workers.engine.WORKER_PROBE", 60.0)
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    with process_pool(2) as pool:
        first = pool.submit(wait_for_go, ready, go)
        wait_for_file(ready)  # the manager has long been waiting by now
        assert pool.submit(pool_tasks.square, 3).result(20.0) == 9
        (tmp_path / "go").touch()
        assert first.result(DEADLINE) == "went"
        left = time.monotonic()
    assert time.monotonic() - left < 20.0


def test_the_wake_up_pipe_gets_a_byte_only_when_the_inbox_turns_non_empty(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent: list[bytes] = []

    def pipe(*, duplex: bool) -> tuple[Connection, Connection]:
        reader, writer = multiprocessing.Pipe(duplex=duplex)
        send = writer.send_bytes

        def spy(data: bytes) -> None:
            sent.append(data)
            send(data)

        writer.send_bytes = spy  # type: ignore[method-assign,assignment]
        return reader, writer

    monkeypatch.setattr("singleton_proc._workers.executor_thread.Pipe", pipe)
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    with process_pool(1) as pool:
        first = pool.submit(wait_for_go, ready, go)
        wait_for_file(ready)
        woken = len(sent)
        queued = [pool.submit(pool_tasks.square, x) for x in range(1000)]
        assert len(sent) <= woken + 1  # the first of them, at most
        (tmp_path / "go").touch()
        assert first.result(DEADLINE) == "went"
        assert [f.result(DEADLINE) for f in queued] == [x * x for x in range(1000)]


# -- shutdown ------------------------------------------------------------------


def test_shutdown_waits_for_the_work_and_then_refuses_new_tasks() -> None:
    threads = threading.enumerate()
    pool = process_pool(2)
    futures = [pool.submit(pool_tasks.take, 0.3, x) for x in range(4)]
    pool.shutdown(wait=True)
    assert threading.enumerate() == threads
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pool_tasks.square, 2)
    pool.shutdown()  # again: nothing to do


def test_shutdown_can_cancel_what_has_not_started(tmp_path: Path) -> None:
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    pool = process_pool(1)
    first = pool.submit(wait_for_go, ready, go)
    queued = [pool.submit(pool_tasks.square, x) for x in range(3)]
    wait_for_file(ready)
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    (tmp_path / "go").touch()
    pool.shutdown(wait=True)
    assert first.result() == "went"


def test_a_done_callback_may_shut_the_pool_down() -> None:
    pool = process_pool(1)
    future = pool.submit(pool_tasks.square, 5)
    future.add_done_callback(lambda _: pool.shutdown(wait=True))
    assert future.result(DEADLINE) == 25
    pool.shutdown(wait=True)


def test_an_executor_dropped_without_shutdown_ends_by_itself() -> None:
    future = process_pool(1).submit(pool_tasks.square, 6)
    gc.collect()
    assert future.result(DEADLINE) == 36
    # no_thread_left and no_child_left check that it ended.


# -- leaving by an exception, Ctrl-C, a killed parent ---------------------------


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
def test_leaving_the_block_by_an_exception_stops_the_workers_at_once(
    method: str, tmp_path: Path
) -> None:
    task = functools.partial(pool_tasks.block, str(tmp_path))
    threads = threading.enumerate()
    futures: list[Future[int]] = []
    with (  # noqa: PT012  (the block is the subject)
        pytest.raises(RuntimeError, match="leaving"),
        process_pool(2, start_method=method) as pool,
    ):
        futures += [pool.submit(task, x) for x in range(4)]
        workers = pids_in(tmp_path, ["0", "1"])
        left = time.monotonic()
        raise RuntimeError("leaving")
    assert time.monotonic() - left < STOP_BOUND
    assert threading.enumerate() == threads
    all_gone(workers)
    for future in futures[:2]:
        error = _error(future)
        assert isinstance(error, WorkerDiedError)
        assert "was stopped before it returned" in str(error)
        assert "left by RuntimeError" in str(error)
    assert all(f.cancelled() for f in futures[2:])


def _start_runner(mode: str, method: str, directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), mode, method, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("method", FORK_FAST)
@pytest.mark.parametrize("mode", ["submit", "map", "shutdown"])
def test_ctrl_c_stops_the_workers_and_raises_one_keyboard_interrupt(
    method: str, mode: str, tmp_path: Path
) -> None:
    parent = _start_runner(mode, method, tmp_path)
    try:
        workers = pids_in(tmp_path, ["0", "1"])
    finally:
        err, elapsed, below = press_ctrl_c(parent)
    assert_one_keyboard_interrupt(parent, err)
    assert elapsed < CTRL_C_BOUND
    all_gone(workers)
    psutil.wait_procs(below, timeout=DEADLINE)  # the forkserver ends with it


@pytest.mark.parametrize("mode", ["process", "map", "shutdown"])
def test_a_ctrl_c_the_kernel_hands_to_another_thread_still_ends_the_wait(
    mode: str, tmp_path: Path
) -> None:
    """The main thread, waiting on a thread of ours, raises it all the same."""
    parent = subprocess.Popen(
        [sys.executable, str(RUNNER), mode, "fork", str(tmp_path), "thread"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        workers = pids_in(tmp_path, ["0"] if mode == "process" else ["0", "1"])
        _, err = parent.communicate(timeout=DEADLINE)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.communicate()
    assert_one_keyboard_interrupt(parent, err)
    all_gone(workers)


def _press_ctrl_c_in_a_burst(
    parent: subprocess.Popen[str], presses: int = 5, within: float = 0.05
) -> str:
    """SIGINT to ``parent`` ``presses`` times within ``within`` s; its stderr.

    The pause between signals is the burst's shape, not a wait for anything.
    """
    try:
        for _ in range(presses):
            with contextlib.suppress(ProcessLookupError):  # ours: not reaped yet
                os.kill(parent.pid, signal.SIGINT)
            time.sleep(within / presses)
        _, err = parent.communicate(timeout=DEADLINE)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.communicate()
    return err


@pytest.mark.parametrize(
    ("mode", "method"),
    [
        *(("stream", method) for method in METHODS),
        ("submit", "fork"),
        ("shutdown", "fork"),
    ],
)
def test_a_burst_of_ctrl_c_gives_one_keyboard_interrupt_and_no_worker_left(
    mode: str, method: str, tmp_path: Path
) -> None:
    parent = _start_runner(mode, method, tmp_path)
    try:
        if mode == "stream":
            assert read_line(parent) == "ready"
        else:
            pids_in(tmp_path, ["0", "1"])
        below = psutil.Process(parent.pid).children(recursive=True)
    finally:
        err = _press_ctrl_c_in_a_burst(parent)
    assert_one_keyboard_interrupt(parent, err)
    assert "Exception ignored" not in err
    _, alive = psutil.wait_procs(below, timeout=DEADLINE)  # forkserver too
    assert not alive


@pytest.mark.parametrize("method", METHODS)
def test_workers_exit_by_themselves_when_the_parent_is_killed(
    method: str, tmp_path: Path
) -> None:
    parent = _start_runner("submit", method, tmp_path)
    try:
        workers = pids_in(tmp_path, ["0", "1"])
        left = psutil.Process(parent.pid).children(recursive=True)
    finally:
        parent.kill()
        parent.communicate()
    # Reparented to us (a subreaper), they must end on their own.
    _, alive = psutil.wait_procs(left, timeout=ORPHAN_BOUND)
    assert not alive
    assert set(workers) <= {proc.pid for proc in left}
