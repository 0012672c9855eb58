"""run_in_pool and iter_in_pool on a warm process_pool(): its workers, per call.

A call given ``executor=process_pool()`` starts no worker: its chunks run on
the pool's, beside the pool's other work. It keeps what the call's own pool
would give (``timeout=``, the first failure at once), and leaving it early
(an error, Ctrl-C) stops this call's chunks only: the pool goes on.
"""

from __future__ import annotations

import functools
import itertools
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import executor_tasks
import pool_tasks
import psutil
import pytest

from singleton_proc import (
    TaskTimeoutError,
    UnpicklableError,
    iter_in_pool,
    process_pool,
    run_in_pool,
)

from helpers import (
    DEADLINE,
    TESTS,
    all_gone,
    pids_in,
    posix_only,
    read_line,
    reap,
    wait_for_file,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = posix_only("warm pools under fork and forkserver, Ctrl-C by SIGINT")

RUNNER = TESTS / "child_pool.py"


def _below_us() -> set[int]:
    """The pids of every process below this one."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_a_call_on_a_warm_pool_starts_no_worker_and_uses_the_pools() -> None:
    with process_pool(2) as pool:
        workers = {pool.submit(pool_tasks.worker_pid).result(DEADLINE)}
        before = _below_us()
        assert run_in_pool(pool_tasks.square, range(50), executor=pool) == [
            x * x for x in range(50)
        ]
        assert list(iter_in_pool(pool_tasks.square, iter(range(9)), executor=pool)) == [
            x * x for x in range(9)
        ]
        used = set(run_in_pool(pool_tasks.worker_pid, range(40), executor=pool))
        # items=None: n calls, n the pool's size by default
        assert len(run_in_pool(pool_tasks.worker_pid, executor=pool)) == 2
        assert _below_us() == before
    assert workers <= before
    assert used <= before


def test_an_error_stops_only_this_calls_chunks_and_the_pool_goes_on(
    tmp_path: Path,
) -> None:
    other, call = tmp_path / "other", tmp_path / "call"
    other.mkdir()
    call.mkdir()
    with process_pool(3) as pool:
        busy = pool.submit(executor_tasks.started_then_gated, str(other), 0)
        wait_for_file(str(other / "0"))
        task = functools.partial(pool_tasks.fail_first_block_rest, str(call))
        with pytest.raises(ValueError, match="bad item 0"):
            run_in_pool(task, range(4), n=2, executor=pool)
        all_gone(pids_in(call, ["1"]))  # its blocked item: stopped
        assert not (call / "2").exists()  # never started: n=2 ran 0 and 1
        (other / "go").touch()
        assert busy.result(DEADLINE) == 0  # the pool's other work went on
        assert run_in_pool(pool_tasks.square, range(6), executor=pool) == [
            0, 1, 4, 9, 16, 25
        ]  # fmt: skip


def test_timeout_works_per_call_and_replaces_the_stuck_worker(tmp_path: Path) -> None:
    task = functools.partial(pool_tasks.hang_on, 1, str(tmp_path))
    with process_pool(2) as pool:
        assert list(pool.map(pool_tasks.square, range(10))) == [
            x * x for x in range(10)
        ]
        results = run_in_pool(
            task, range(4), timeout=1.0, return_exceptions=True, executor=pool
        )
        assert results[0] == 0
        assert results[2:] == [2, 3]
        assert isinstance(results[1], TaskTimeoutError)
        assert "hang_on on item 1 " in str(results[1])  # the call's index
        all_gone([int(pid) for pid in wait_for_file(str(tmp_path / "hung")).split()])
        # the pool has no timeout of its own, and goes on with a new worker
        assert list(pool.map(pool_tasks.square, range(4))) == [0, 1, 4, 9]
        with pytest.raises(TaskTimeoutError):
            run_in_pool(
                functools.partial(pool_tasks.take, 60), [0], timeout=0.5, executor=pool
            )
        assert run_in_pool(pool_tasks.square, [3], executor=pool) == [9]


def test_n_is_how_many_of_the_pools_workers_the_call_keeps_busy(
    tmp_path: Path,
) -> None:
    task = functools.partial(executor_tasks.note_span, str(tmp_path))
    with process_pool(3) as pool:
        assert run_in_pool(task, range(6), n=1, chunksize=1, executor=pool) == list(
            range(6)
        )
        assert len(run_in_pool(pool_tasks.worker_pid, n=99, executor=pool)) == 3
    spans = sorted(
        tuple(map(int, (tmp_path / f"span-{x}").read_text().split())) for x in range(6)
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "n=1, yet two items ran at once"


def test_an_item_that_will_not_pickle_fails_its_call_alone() -> None:
    with process_pool(2) as pool:
        lock = threading.Lock()
        with pytest.raises(UnpicklableError, match="item 1") as caught:
            run_in_pool(pool_tasks.identity, [0, lock], chunksize=1, executor=pool)
        assert caught.value.what == "item 1"
        results = run_in_pool(
            pool_tasks.identity, [0, lock, 2], return_exceptions=True, executor=pool
        )
        assert results[0::2] == [0, 2]
        assert isinstance(results[1], UnpicklableError)
        assert pool.submit(pool_tasks.square, 3).result(DEADLINE) == 9


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("initializer", print),
        ("initargs", (1,)),
        ("start_method", "spawn"),
        ("max_tasks_per_child", 1),
    ],
)
def test_the_pools_own_options_are_refused(name: str, value: object) -> None:
    with process_pool(1) as pool:
        with pytest.raises(ValueError, match=f"{name}= is the process_pool's own"):
            run_in_pool(pool_tasks.square, [1], executor=pool, **{name: value})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=f"{name}= is the process_pool's own"):
            iter_in_pool(pool_tasks.square, [1], executor=pool, **{name: value})  # type: ignore[arg-type]


def test_ctrl_c_stops_this_calls_workers_and_the_pool_goes_on(tmp_path: Path) -> None:
    """A real SIGINT to a program whose run_in_pool runs on its warm pool."""
    parent = subprocess.Popen(
        [sys.executable, str(RUNNER), "warm", "forkserver", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        blocked = pids_in(tmp_path, ["0", "1"])
        wait_for_file(str(tmp_path / "other" / "9"))
        parent.send_signal(signal.SIGINT)  # by pid: the program only
        assert read_line(parent) == "interrupted"
        all_gone(blocked)
        helpers = [p.pid for p in psutil.Process(parent.pid).children(recursive=True)]
        (tmp_path / "other" / "go").touch()
        assert read_line(parent) == "9 [0, 1, 4]"
        assert parent.wait(DEADLINE) == 0
        all_gone(helpers)  # the pool's workers, the forkserver: they follow it
    finally:
        reap(parent)
