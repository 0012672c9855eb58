"""run_in_pool and iter_in_pool: real workers that never hang and never linger."""

from __future__ import annotations

import collections
import functools
import logging
import multiprocessing
import operator
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import pool_tasks
import psutil
import pytest

from singleton_proc import (
    TaskTimeoutError,
    UnpicklableError,
    WorkerDiedError,
    iter_in_pool,
    process_pool,
    run_in_pool,
)
from singleton_proc._workers.chunks import ChunkSizer, Outcome, Packer, Reader, Work
from singleton_proc._workers.cpus import usable_cpus
from singleton_proc._workers.protocol import RemoteTraceback

from helpers import (
    CTRL_C_BOUND,
    DEADLINE,
    DEATH_BOUND,
    METHODS,
    ORPHAN_BOUND,
    TESTS,
    all_gone,
    assert_one_keyboard_interrupt,
    env_without_coverage,
    fork_a_child_that_exits,
    linux_only,
    pids_in,
    posix_only,
    press_ctrl_c,
    wait_for_file,
    wait_until_gone,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

pytestmark = posix_only("workers under fork and forkserver, killed with SIGKILL")

RUNNER = TESTS / "child_pool.py"


# -- results -------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_results_come_back_in_input_order(method: str) -> None:
    items = list(range(1000))
    assert run_in_pool(pool_tasks.square, items, n=2, start_method=method) == [
        x * x for x in items
    ]


def test_any_iterable_works_and_nothing_starts_for_no_items() -> None:
    squares = run_in_pool(pool_tasks.square, (x for x in range(50)), n=2)
    assert squares == [x * x for x in range(50)]
    assert run_in_pool(pool_tasks.square, [], n=2) == []
    assert list(iter_in_pool(pool_tasks.square, [], n=2)) == []


@pytest.mark.parametrize("method", METHODS)
def test_no_items_runs_fn_once_in_each_of_n_distinct_workers(method: str) -> None:
    pids = run_in_pool(pool_tasks.worker_pid, n=7, start_method=method)
    assert len(pids) == 7
    assert len(set(pids)) == 7
    assert os.getpid() not in pids


def test_each_of_n_stays_distinct_when_a_worker_dies_before_its_call(
    tmp_path: Path,
) -> None:
    pids = run_in_pool(
        pool_tasks.worker_pid,
        n=3,
        initializer=pool_tasks.die_once,
        initargs=(str(tmp_path / "died"),),
    )
    assert (tmp_path / "died").exists()
    assert len(set(pids)) == 3


def test_n_defaults_to_the_usable_cpus_and_must_be_positive() -> None:
    pids = run_in_pool(pool_tasks.worker_pid)
    assert len(set(pids)) == usable_cpus()
    with pytest.raises(ValueError, match="n must be at least 1, not 0"):
        run_in_pool(pool_tasks.square, [1], n=0)
    with pytest.raises(TypeError, match="n must be an int, not float"):
        run_in_pool(pool_tasks.square, [1], n=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be at least 1"):
        iter_in_pool(pool_tasks.square, [1], n=-1)


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"chunksize": 0}, ValueError, "chunksize must be at least 1"),
        ({"timeout": 0}, ValueError, "timeout must be > 0 seconds and finite"),
        ({"timeout": float("nan")}, ValueError, "timeout must be > 0"),
        ({"timeout": float("inf")}, ValueError, "and finite"),
        ({"timeout": True}, TypeError, "timeout must be a number of seconds"),
        ({"initializer": 3}, TypeError, "initializer must be callable or None"),
        ({"start_method": "thread"}, ValueError, "start_method must be one of"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, object], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        run_in_pool(pool_tasks.square, [1, 2], n=1, **kwargs)  # type: ignore[arg-type]


def test_bad_fn_and_items_fail_at_the_call_not_later() -> None:
    with pytest.raises(TypeError, match="fn must be callable, not int"):
        iter_in_pool(3, [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not iterable"):
        iter_in_pool(pool_tasks.square, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", METHODS)
def test_the_initializer_runs_in_each_worker_first(method: str) -> None:
    kept = run_in_pool(
        pool_tasks.remembered,
        n=2,
        initializer=pool_tasks.remember,
        initargs=("config", 7),
        start_method=method,
    )
    assert kept == [["config", 7], ["config", 7]]


def test_an_initializer_that_raises_is_raised_here() -> None:
    with pytest.raises(KeyError, match="no config") as caught:
        run_in_pool(
            pool_tasks.square,
            range(10),
            n=2,
            initializer=pool_tasks.raise_in_initializer,
            initargs=("no config",),
        )
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "raise_in_initializer" in caught.value.__cause__.text


def test_workers_that_die_in_the_initializer_are_an_error_not_a_loop() -> None:
    with pytest.raises(WorkerDiedError, match="died before they were ready"):
        run_in_pool(
            pool_tasks.square,
            range(10),
            n=2,
            initializer=pool_tasks.exit_in_initializer,
            return_exceptions=True,
        )


# -- a task raises -------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_raise_comes_at_once_with_its_type_and_stops_the_other_workers(
    method: str, tmp_path: Path
) -> None:
    task = functools.partial(pool_tasks.fail_first_block_rest, str(tmp_path))
    with pytest.raises(ValueError, match="bad item 0") as caught:
        run_in_pool(task, range(2), n=2, start_method=method)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "_raise_bad" in cause.text
    # The worker blocked on item 1 did not finish: it was stopped.
    all_gone(pids_in(tmp_path, ["1"]))


def test_return_exceptions_puts_each_failure_in_its_place() -> None:
    task = functools.partial(pool_tasks.fail_on, 3)
    results = run_in_pool(task, range(6), n=2, return_exceptions=True)
    assert results[:3] == [0, 1, 2]
    assert results[4:] == [4, 5]
    assert isinstance(results[3], ValueError)
    assert str(results[3]) == "bad item 3"
    assert isinstance(results[3].__cause__, RemoteTraceback)
    listed = list(iter_in_pool(task, range(6), n=2, return_exceptions=True))
    assert [type(r) for r in listed] == [int, int, int, ValueError, int, int]


# -- a worker dies -------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("how", "says"),
    [("SIGKILL", "was killed by SIGKILL"), ("os._exit", "exited with code 3")],
)
def test_a_death_names_the_item_pid_and_cause(method: str, how: str, says: str) -> None:
    exitcode = -getattr(signal, how) if how.startswith("SIG") else 3
    task = functools.partial(pool_tasks.die_on, 5, how)
    with pytest.raises(WorkerDiedError, match=says) as caught:
        run_in_pool(task, range(10), n=2, start_method=method)
    error = caught.value
    assert isinstance(error, BrokenProcessPool)
    assert "on item 5 (int: 5)" in str(error)
    assert f"worker {error.pid} " in str(error)
    assert error.exitcode == exitcode
    assert error.pid is not None
    assert not psutil.pid_exists(error.pid)


@pytest.mark.parametrize("method", METHODS)
def test_a_death_is_noticed_quickly(method: str, tmp_path: Path) -> None:
    stamp = str(tmp_path / "killed-at")
    task = functools.partial(pool_tasks.die_on_with_time, 1, stamp)
    with pytest.raises(WorkerDiedError):
        run_in_pool(task, range(4), n=2, chunksize=1, start_method=method)
    raised = time.time()
    assert raised - float(wait_for_file(stamp)) < DEATH_BOUND


@pytest.mark.parametrize("method", METHODS)
def test_with_return_exceptions_the_dead_item_fails_and_the_rest_go_on(
    method: str,
) -> None:
    task = functools.partial(pool_tasks.die_on, 17, "SIGKILL")
    results = run_in_pool(
        task, range(40), n=2, chunksize=8, return_exceptions=True, start_method=method
    )
    assert isinstance(results[17], WorkerDiedError)
    assert "on item 17" in str(results[17])
    assert results[:17] + results[18:] == [x for x in range(40) if x != 17]


# -- a task hangs --------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_timeout_kills_the_worker_tree_and_the_others_finish(
    method: str, tmp_path: Path
) -> None:
    task = functools.partial(pool_tasks.hang_on, 2, str(tmp_path))
    results = run_in_pool(
        task,
        range(8),
        n=2,
        chunksize=1,
        timeout=1.0,
        return_exceptions=True,
        start_method=method,
    )
    worker, grandchild = map(int, wait_for_file(str(tmp_path / "hung")).split())
    assert isinstance(results[2], TaskTimeoutError)
    assert results[2].timeout == 1.0
    assert f"item 2 (int: 2) ran over its timeout of 1.0 s in worker {worker}" in str(
        results[2]
    )
    assert results[:2] + results[3:] == [0, 1, 3, 4, 5, 6, 7]
    all_gone([worker, grandchild])


def test_without_return_exceptions_a_timeout_is_raised(tmp_path: Path) -> None:
    task = functools.partial(pool_tasks.hang_on, 0, str(tmp_path))
    with pytest.raises(TaskTimeoutError, match="item 0"):
        run_in_pool(task, range(3), n=2, timeout=0.5)
    all_gone([int(pid) for pid in wait_for_file(str(tmp_path / "hung")).split()])


@pytest.mark.slow  # 3.6 s of timing, the same on every Python
def test_the_timeout_clock_starts_when_the_task_starts() -> None:
    # One worker, three tasks of 0.6 s each: the last starts 1.2 s after the
    # call (and its chunk 1.2 s after it started), past the timeout, but each
    # task runs for less than it.
    task = functools.partial(pool_tasks.take, 0.6)
    assert run_in_pool(task, range(3), n=1, chunksize=1, timeout=1.0) == [0, 1, 2]
    assert run_in_pool(task, range(3), n=1, chunksize=3, timeout=1.0) == [0, 1, 2]


def test_a_worker_flooding_its_pipe_cannot_hold_off_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(TaskTimeoutError):
        run_in_pool(pool_tasks.flood_logs, [0], n=1, timeout=1.0)
    assert time.monotonic() - started < DEATH_BOUND


def test_a_death_is_noticed_while_a_grandchild_holds_the_pipes(tmp_path: Path) -> None:
    task = functools.partial(pool_tasks.fork_holder_then_die, str(tmp_path))
    try:
        with pytest.raises(WorkerDiedError, match="exited with code 3"):
            run_in_pool(task, range(3), n=1, chunksize=1)
    finally:
        grandchild = int(wait_for_file(str(tmp_path / "grandchild")))
        psutil.Process(grandchild).kill()
        wait_until_gone(grandchild)


# -- Ctrl-C and a killed parent ------------------------------------------------


def _start_runner(mode: str, method: str, directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), mode, method, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["run", "iter"])
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


@pytest.mark.parametrize("method", METHODS)
def test_workers_exit_by_themselves_when_the_parent_is_killed(
    method: str, tmp_path: Path
) -> None:
    parent = _start_runner("run", method, tmp_path)
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


# -- streaming -----------------------------------------------------------------


def test_iter_in_pool_pulls_items_within_a_bounded_window() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield i

    window = 4 * 2 * 2000  # chunks per worker x workers x the stream's cap
    threads = threading.enumerate()
    results = iter_in_pool(pool_tasks.square, items(), n=2)
    for done, value in enumerate(results, 1):
        assert value == (done - 1) ** 2
        assert pulled - done <= window
        if done == 50_000:
            break
    # Items are pulled only inside next(), in this thread: no thread of
    # ours runs meanwhile, so a stalled consumer stalls the producer.
    assert threading.enumerate() == threads
    results.close()
    assert pulled < 50_000 + window


def test_closing_the_iterator_early_stops_the_workers(tmp_path: Path) -> None:
    results = iter_in_pool(pool_tasks.worker_pid, range(100_000), n=2, chunksize=10)
    seen = {next(results) for _ in range(100)}
    task = functools.partial(pool_tasks.write_pid, str(tmp_path))
    other = iter_in_pool(task, range(100_000), n=2)
    next(other)
    results.close()
    del other  # dropped without close(): its finalizer closes it
    pids = seen | {int(path.read_text()) for path in tmp_path.iterdir()}
    all_gone(sorted(pids))


@pytest.mark.parametrize("method", METHODS)
def test_unordered_results_come_as_they_are_ready(method: str, tmp_path: Path) -> None:
    task = functools.partial(pool_tasks.last_waits_for_go, str(tmp_path))
    results = iter_in_pool(
        task, range(6), n=2, ordered=False, chunksize=1, start_method=method
    )
    first = [next(results) for _ in range(5)]
    assert sorted(first) == [1, 2, 3, 4, 5]  # item 0 is still waiting
    (tmp_path / "go").touch()
    assert list(results) == [0]


@pytest.mark.slow
def test_two_million_items_stream_in_flat_memory() -> None:
    out = subprocess.run(
        [sys.executable, str(RUNNER), "memory", "fork", "-"],
        capture_output=True,
        text=True,
        check=True,
        env=env_without_coverage(),
        timeout=300,
    ).stdout
    growth, lead, pulled = map(int, out.split())
    assert pulled == 2_000_000
    assert lead <= 4 * 2 * 2000
    assert growth < 50 * 1024 * 1024


# -- tiny tasks ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_tiny_tasks_are_chunked_as_fast_as_pool_map(method: str) -> None:
    items = range(200_000)
    started = time.perf_counter()
    with multiprocessing.get_context(method).Pool(2) as pool:
        expected = pool.map(pool_tasks.square, items)
    theirs = time.perf_counter() - started
    started = time.perf_counter()
    assert run_in_pool(pool_tasks.square, items, n=2, start_method=method) == expected
    ours = time.perf_counter() - started
    # Unchunked, this would take about 100 times longer; bench/pool.py
    # measures the ratio itself (target: at least 0.8 x Pool.map).
    assert ours < 5 * theirs + 1.0


def test_a_slow_producer_is_not_held_back_for_a_whole_chunk() -> None:
    produced = 0

    def trickle() -> Iterator[int]:
        nonlocal produced
        for i in range(400):
            time.sleep(0.002)  # the load: an item every 2 ms, as from a socket
            produced += 1
            yield i

    lag = max(
        produced - done
        for done, _ in enumerate(iter_in_pool(pool_tasks.square, trickle(), n=2), 1)
    )
    assert lag < 200  # chunks of a stream wait 20 ms for items, not 2,000 items


def test_a_logging_initializer_and_large_items_do_not_deadlock() -> None:
    items = [bytes(300_000)] * 4  # each larger than a pipe's buffer
    results = run_in_pool(
        pool_tasks.length,
        items,
        n=2,
        chunksize=4,
        initializer=pool_tasks.log_a_lot,
        initargs=(5000,),
    )
    assert results == [300_000] * 4


def test_chunks_stay_small_after_a_death_of_slow_items() -> None:
    sizer = ChunkSizer(None, workers=2, length=400, limit=None)
    assert sizer.size() == 1
    sizer.observe(Outcome(0, [1], seconds=1e-6))  # fast: chunks grow to the cap
    assert sizer.size() == 50  # 400 items / (2 workers x 4 chunks each)
    sizer.observe(Outcome(1, [1, 2], seconds=0.1))  # 50 ms an item: one a chunk
    assert sizer.size() == 1
    sizer.observe(Outcome(3, [None], {0: WorkerDiedError("died")}))  # no timing
    assert sizer.size() == 1


def test_chunks_grow_by_the_items_bytes_whatever_the_function_weighs() -> None:
    # One tiny item sent with a function of 5 KB (pickled once per call,
    # but inside every chunk's message) must not look like 5 KB an item:
    # the next chunks would hold a dozen items, and a map of tiny tasks
    # would crawl until its sizes recovered.
    heavy = Work(functools.partial(operator.add, bytes(5000))).pickled()
    chunk = Packer(timed=False).chunk(0, [7], heavy)
    assert len(chunk.payload) > 5000
    sizer = ChunkSizer(None, workers=2, length=200_000, limit=None)
    sizer.observe_payload(chunk.items_bytes, 1)
    sizer.observe(Outcome(0, [49], seconds=1e-7))  # tiny: as large as bytes allow
    assert sizer.size() > 10_000  # 64 KB of small ints; 12 if the function counted


def test_a_range_travels_in_slices_of_a_few_bytes_whatever_its_length() -> None:
    # The parent of a map of tiny tasks is its bottleneck: over a range it
    # must neither build the ints nor pickle them (bench/pool.py: 1.3x).
    reader = Reader(range(10**15, 10**15 + 10**6))
    first = reader.take(25_000)
    assert first == range(10**15, 10**15 + 25_000)
    chunk = Packer(timed=False).chunk(0, first, Work(pool_tasks.square).pickled())
    assert chunk.items_bytes < 100  # a list of them: 225,000 bytes
    listed = Reader(list(range(100)))  # a list or tuple is sliced too
    assert listed.take(30) == list(range(30))
    assert Reader(tuple(range(100))).take(30) == tuple(range(30))


def _each_api(
    fn: Callable[[int], object],
    items: Sequence[int],
    api: str,
    *,
    n: int,
    chunksize: int | None = None,
) -> list[Any]:
    """``fn`` over ``items`` through ``api``, on ``n`` workers."""
    if api == "run_in_pool":
        return run_in_pool(fn, items, n=n, chunksize=chunksize)
    if api == "iter_in_pool":
        return list(iter_in_pool(fn, items, n=n, chunksize=chunksize))
    with process_pool(n) as pool:
        if api == "map":
            return list(pool.map(fn, items, chunksize=chunksize))
        return run_in_pool(fn, items, chunksize=chunksize, executor=pool)


APIS = ["run_in_pool", "iter_in_pool", "map", "warm run_in_pool"]


@linux_only("reads /proc/<pid>/io")
@pytest.mark.parametrize("api", APIS)
def test_a_range_reaches_the_workers_as_slices_not_as_its_items(api: str) -> None:
    # What the one worker read from its first item to its last: the three
    # chunks after the first, 5,000 ints of 15 bytes each pickled, at least
    # 225,000 bytes; as slices of a range, a few dozen each.
    ints = range(10**30, 10**30 + 20_000)
    probe = functools.partial(pool_tasks.bytes_read_at, (ints[0], ints[-1]))
    read = {}
    for kind, items in (("range", ints), ("list", list(ints))):
        results = _each_api(probe, items, api, n=1, chunksize=5000)
        read[kind] = results[-1] - results[0]
    assert read["list"] > 225_000  # the probe sees what a worker reads
    assert read["range"] < 5_000


@linux_only("reads /proc/<pid>/io")
@pytest.mark.parametrize("api", ["run_in_pool", "map", "warm run_in_pool"])
def test_chunks_of_large_results_stay_near_a_megabyte(api: str) -> None:
    # 100 KB results from fast items: timing alone would make chunks of
    # Pool.map's size (200 / 8 = 25 items, 2.5 MB); a chunk's results
    # stay about 1 MB, 10 items. The items of a chunk see the same count
    # of bytes their worker wrote, so the largest group is the largest chunk.
    probe = functools.partial(pool_tasks.heavy_result, 100_000)
    results = _each_api(probe, range(200), api, n=2)
    chunks = collections.Counter((pid, written) for pid, written, _ in results)
    assert sum(chunks.values()) == 200
    assert max(chunks.values()) <= 11


def test_a_list_read_to_its_end_is_read_no_further() -> None:
    # As an iterator would: items appended once map() has read the end of
    # the list are not the map's.
    with process_pool(1) as pool:
        items = [0, 1, 2]
        results = pool.map(pool_tasks.square, items, chunksize=2)  # [0, 1], [2]
        items.extend([3, 4])
        assert list(results) == [0, 1, 4]


def test_a_list_subclass_is_read_as_it_iterates() -> None:
    class Shown(list[int]):
        def __iter__(self) -> Iterator[int]:
            return (x + 1000 for x in super().__iter__())

    assert run_in_pool(pool_tasks.square, Shown([1, 2]), n=2) == [1001**2, 1002**2]


@pytest.mark.parametrize("chunksize", [1, 3, 50, None])
def test_ranges_of_any_step_give_every_item_at_every_chunk_size(
    chunksize: int | None,
) -> None:
    items = range(1000, -1000, -7)
    expected = [x * x for x in items]
    assert run_in_pool(pool_tasks.square, items, n=2, chunksize=chunksize) == expected
    assert list(iter_in_pool(pool_tasks.square, items, n=2, chunksize=chunksize)) == (
        expected
    )
    with process_pool(2) as pool:
        assert list(pool.map(pool_tasks.square, items, chunksize=chunksize)) == expected
        on_warm = run_in_pool(
            pool_tasks.square, items, chunksize=chunksize, executor=pool
        )
        assert on_warm == expected


def test_an_input_that_raises_fails_the_call_with_its_error() -> None:
    def broken() -> Iterator[int]:
        yield from range(5)
        raise OSError("input broke")

    with pytest.raises(OSError, match="input broke"):
        run_in_pool(pool_tasks.square, broken(), n=2)
    with pytest.raises(OSError, match="input broke"):
        list(iter_in_pool(pool_tasks.square, broken(), n=2))


def _in_a_forked_child(work: Callable[[], bool]) -> bool:
    """Whether ``work()`` returned ``True`` in a forked child (which never returns)."""
    child = os.fork()
    if child == 0:
        ok = False
        try:
            ok = work()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("method", METHODS)
def test_a_forked_child_never_stops_the_parent_workers_and_cannot_use_them(
    method: str,
) -> None:
    results = iter_in_pool(
        pool_tasks.worker_pid, range(20), n=2, chunksize=1, start_method=method
    )
    first = next(results)

    def close_the_copy() -> bool:  # what the child's exit does to its copy
        results.close()
        return True

    def use_the_copy() -> bool:
        try:
            list(results)
        except RuntimeError as exc:
            return "forked child cannot use its copy" in str(exc)
        return False

    assert _in_a_forked_child(close_the_copy)
    assert _in_a_forked_child(use_the_copy)
    assert len([first, *results]) == 20  # no WorkerDiedError: the workers live


def test_a_forked_child_leaves_the_parent_pool_alone() -> None:
    results = iter_in_pool(pool_tasks.worker_pid, range(20), n=2, chunksize=1)
    first = next(results)
    fork_a_child_that_exits()
    assert len([first, *results]) == 20


# -- logging and pickling ------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_worker_records_reach_the_parent_once_each(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="child_tasks")
    run_in_pool(pool_tasks.log_item, range(20), n=2, start_method=method)
    mine = [r for r in caplog.records if r.name == "child_tasks.pool"]
    assert sorted(r.getMessage().split()[1] for r in mine) == sorted(
        str(x) for x in range(20)
    )
    assert {r.levelname for r in mine} == {"WARNING"}
    assert os.getpid() not in {r.process for r in mine}


def test_what_will_not_pickle_is_named() -> None:
    lock = threading.Lock()
    with pytest.raises(UnpicklableError, match="the function") as caught:
        run_in_pool(lambda x: (x, lock), [1], n=1)  # by value, with its closure
    assert caught.value.what == "the function"
    assert "its closure" in str(caught.value)
    with pytest.raises(UnpicklableError, match="item 2") as caught:
        run_in_pool(pool_tasks.square, [1, 2, threading.Lock(), 4], n=1)
    assert caught.value.what == "item 2"
    with pytest.raises(UnpicklableError, match="the result") as caught:
        run_in_pool(pool_tasks.unpicklable_result, [1], n=1)
    with pytest.raises(UnpicklableError, match="the exception"):
        run_in_pool(pool_tasks.raise_unloadable, [1], n=1)
    with pytest.raises(UnpicklableError, match="initializer argument 1"):
        run_in_pool(
            pool_tasks.square, [1], initializer=print, initargs=(threading.Lock(),)
        )
    results = run_in_pool(
        pool_tasks.square, [1, threading.Lock(), 3], n=1, return_exceptions=True
    )
    assert results[0] == 1
    assert results[2] == 9
    assert isinstance(results[1], UnpicklableError)


def test_results_that_cannot_be_unpickled_here_are_named() -> None:
    with pytest.raises(UnpicklableError, match="could not be unpickled here"):
        run_in_pool(pool_tasks.unloadable_result, [1, 2], n=1)
    results = run_in_pool(
        pool_tasks.unloadable_result, [1], n=1, return_exceptions=True
    )
    assert isinstance(results[0], UnpicklableError)


def test_an_item_that_kills_or_fails_its_worker_in_unpickling_is_found() -> None:
    items = [
        1,
        2,
        pool_tasks.KillsWhenUnpickled(),
        4,
        pool_tasks.FailsWhenUnpickled(),
        6,
    ]
    results = run_in_pool(
        pool_tasks.identity, items, n=1, chunksize=6, return_exceptions=True
    )
    assert [results[i] for i in (0, 1, 3, 5)] == [1, 2, 4, 6]
    assert isinstance(results[2], WorkerDiedError)
    assert "item 2" in str(results[2])
    assert "while unpickling it" in str(results[2])
    assert isinstance(results[4], UnpicklableError)
    assert "cannot be unpickled" in str(results[4].__cause__)


@pytest.mark.slow
def test_a_worker_that_will_not_exit_is_stopped_at_the_end() -> None:
    started = time.monotonic()
    pids = run_in_pool(pool_tasks.leave_a_thread, n=2)
    assert time.monotonic() - started < DEADLINE
    all_gone(pids)
