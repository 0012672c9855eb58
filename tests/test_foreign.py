"""executor= (a real loky and a real dask.distributed executor) and progress=True."""

from __future__ import annotations

import functools
import logging
import multiprocessing.resource_tracker
import os
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import loky
import loky.backend.resource_tracker
import pool_tasks
import psutil
import pytest

from singleton_proc import iter_in_pool, run_in_pool

from helpers import DEADLINE, TESTS, posix_only

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import Executor
    from pathlib import Path

#: Seconds the third-party executors get to start and stop (safety nets).
START_BOUND = 120
#: Each test stops loky's resource tracker (conftest: it would be a
#: leftover child); the next loky executor relaunches it, and warns.
pytestmark = pytest.mark.filterwarnings("ignore:resource_tracker.*:UserWarning")


def _stop_leftovers(before: set[int]) -> None:
    """Reap what a third-party executor started and left, killing stragglers by pid.

    Their hygiene is not under test here (ours is, everywhere else): loky
    may return from shutdown() before its killed workers are reaped. Its
    resource tracker, a long-lived helper like multiprocessing's, is stopped
    with those after the test (conftest).
    """
    helpers = {
        multiprocessing.resource_tracker._resource_tracker._pid,  # type: ignore[attr-defined]  # noqa: SLF001
        loky.backend.resource_tracker._resource_tracker._pid,  # noqa: SLF001
    }
    left = [p for p in psutil.Process().children() if p.pid not in before | helpers]
    _, alive = psutil.wait_procs(left, timeout=5)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=START_BOUND)


@pytest.fixture
def loky_executor() -> Iterator[Executor]:
    """A loky process pool of 2 workers, shut down (and its helpers) afterwards."""
    before = {proc.pid for proc in psutil.Process().children()}
    executor = loky.ProcessPoolExecutor(max_workers=2)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, kill_workers=True)
        _stop_leftovers(before)


@pytest.fixture
def dask_executor() -> Iterator[Executor]:
    """A dask.distributed LocalCluster of 2 worker processes, and its executor."""
    distributed = pytest.importorskip("distributed")
    before = {proc.pid for proc in psutil.Process().children()}
    # Its HTTP server on a free loopback port: by default it tries 8787, and
    # warns when another cluster (a test run beside this one) holds it.
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True,
        dashboard_address="127.0.0.1:0")  # fmt: skip
    client = distributed.Client(cluster, timeout=START_BOUND)
    try:
        yield client.get_executor()
    finally:
        client.close()
        cluster.close()
        _stop_leftovers(before)


def test_loky_gives_results_in_order(loky_executor: Executor) -> None:
    items = range(500)
    assert run_in_pool(pool_tasks.square, items, executor=loky_executor) == [
        x * x for x in items
    ]
    streamed = iter_in_pool(pool_tasks.square, iter(items), executor=loky_executor)
    assert list(streamed) == [x * x for x in items]
    unordered = iter_in_pool(
        pool_tasks.square, items, executor=loky_executor, ordered=False
    )
    assert sorted(unordered) == [x * x for x in items]


def test_loky_failures_raise_at_once_or_take_their_place(
    loky_executor: Executor,
) -> None:
    task = functools.partial(pool_tasks.fail_on, 3)
    with pytest.raises(ValueError, match="bad item 3"):
        run_in_pool(task, range(50), executor=loky_executor)
    results = run_in_pool(
        task, range(50), executor=loky_executor, return_exceptions=True
    )
    assert isinstance(results[3], ValueError)
    assert results[:3] + results[4:] == [x for x in range(50) if x != 3]


@posix_only("SIGKILL")
def test_a_dead_loky_worker_is_its_broken_pool_error(loky_executor: Executor) -> None:
    task = functools.partial(pool_tasks.die_on, 2, "SIGKILL")
    with pytest.raises(BrokenProcessPool):
        run_in_pool(task, range(6), chunksize=1, executor=loky_executor)


def test_dask_distributed_runs_the_chunks(dask_executor: Executor) -> None:
    items = range(300)
    assert run_in_pool(pool_tasks.square, items, executor=dask_executor) == [
        x * x for x in items
    ]
    task = functools.partial(pool_tasks.fail_on, 7)
    with pytest.raises(ValueError, match="bad item 7"):
        list(iter_in_pool(task, range(20), executor=dask_executor))
    results = run_in_pool(
        task, range(20), executor=dask_executor, return_exceptions=True
    )
    assert isinstance(results[7], ValueError)
    assert sum(isinstance(r, ValueError) for r in results) == 1


def test_dask_runs_fn_n_times_though_it_merges_identical_calls(
    dask_executor: Executor, tmp_path: Path
) -> None:
    """items=None means n calls, on an executor with pure=True (dask's default)."""
    task = functools.partial(pool_tasks.note_call, str(tmp_path))
    assert len(set(run_in_pool(task, n=7, executor=dask_executor))) == 7
    assert len(list(tmp_path.iterdir())) == 7
    # n: by default, the threads of the cluster (2 workers of 1 thread)
    assert len(run_in_pool(task, executor=dask_executor)) == 2


def test_our_pool_options_are_refused_with_an_executor() -> None:
    with ThreadPoolExecutor(1) as executor:
        with pytest.raises(ValueError, match="timeout= needs our own workers"):
            run_in_pool(pool_tasks.square, [1], executor=executor, timeout=1)
        with pytest.raises(ValueError, match="initializer= configures our own pool"):
            run_in_pool(pool_tasks.square, [1], executor=executor, initializer=print)
        with pytest.raises(ValueError, match="start_method= configures our own pool"):
            iter_in_pool(pool_tasks.square, [1], executor=executor, start_method="fork")
        assert run_in_pool(pool_tasks.square, [2, 3], executor=executor) == [4, 9]
    with pytest.raises(
        TypeError, match=r"executor must be a concurrent\.futures\.Executor"
    ):
        run_in_pool(pool_tasks.square, [1], executor=object())  # type: ignore[arg-type]


def test_loky_gives_the_exception_with_its_remote_traceback(
    loky_executor: Executor,
) -> None:
    task = functools.partial(pool_tasks.fail_on, 0)
    with pytest.raises(ValueError, match="bad item 0") as caught:
        run_in_pool(task, [0, 1], executor=loky_executor)
    cause = caught.value.__cause__
    assert cause is not None
    assert "_raise_bad" in str(cause)  # the worker's frames, as loky attaches them


# -- progress=True -------------------------------------------------------------


def test_progress_counts_finished_items_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    threads = threading.enumerate()
    assert run_in_pool(pool_tasks.square, range(100), n=2, progress=True)[-1] == 99**2
    assert threading.enumerate() == threads  # no tqdm monitor: workers still fork
    err = capsys.readouterr().err
    assert "100/100" in err
    assert "square" in err
    total = sum(iter_in_pool(pool_tasks.square, iter(range(40)), n=2, progress=True))
    assert total == sum(x * x for x in range(40))
    assert "40item" in capsys.readouterr().err.replace(" ", "")


@posix_only("a pseudo-terminal (pty)")
def test_log_lines_print_above_the_bar_never_on_it(tmp_path: Path) -> None:
    """In a terminal: each record the workers log gets a line of its own."""
    import fcntl  # noqa: PLC0415  (POSIX: the module is collected on Windows too)
    import pty  # noqa: PLC0415
    import termios  # noqa: PLC0415

    leader, follower = pty.openpty()
    # 24 rows of 100 columns (a new pty has none: tqdm would draw nothing).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        program = subprocess.Popen(
            [sys.executable, str(TESTS / "child_progress.py")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower,
            cwd=tmp_path)  # fmt: skip
        os.close(follower)
        follower = -1
        screen = _read_all(leader)
        assert program.wait(DEADLINE) == 0, screen
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    lines = screen.replace("\r\n", "\n").split("\n")
    logged = [line for line in lines if "LOG " in line]
    assert len(logged) == 9, screen  # eight items, and the line after the bar
    # What a terminal shows of a line is what follows its last carriage return.
    assert all(line.split("\r")[-1].startswith("LOG ") for line in logged), screen
    assert "8/8" in screen
    assert logged[-1].endswith("LOG the bar is done")  # the handler is back as it was


class _FixedStream(logging.StreamHandler):  # type: ignore[type-arg]
    """As coloredlogs' handler: its stream is always stderr, never set."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's: it sets the stream

    @property
    def stream(self) -> Any:
        return sys.stderr


class _AsksIsatty(logging.StreamHandler):  # type: ignore[type-arg]
    """Colours only a terminal: asks its stream (ours while the bar shows)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.seen: list[bool] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(self.stream.isatty())
        super().emit(record)


def test_the_bar_leaves_handlers_it_cannot_reroute_alone_and_puts_back_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logger = logging.getLogger("child_tasks.pool")  # pool_tasks.log_item's
    fixed, asks = _FixedStream(), _AsksIsatty()
    logger.addHandler(fixed)
    logger.addHandler(asks)
    try:
        assert run_in_pool(pool_tasks.log_item, range(4), n=2, progress=True) == [
            0, 1, 2, 3]  # fmt: skip
        assert asks.seen == [False] * 4  # captured: not a terminal, and no error
        assert asks.stream is sys.stderr  # put back
    finally:
        logger.removeHandler(fixed)
        logger.removeHandler(asks)
    err = capsys.readouterr().err
    assert "--- Logging error ---" not in err
    assert err.count("item 2 in") == 2  # printed by both handlers


def _read_all(leader: int) -> str:
    """Everything a program writes to a terminal, until it closes it."""
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the program closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_progress_without_tqdm_names_the_extra_before_any_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    children = psutil.Process().children()
    with pytest.raises(ImportError, match=r'pip install "singleton_proc\[progress\]"'):
        iter_in_pool(pool_tasks.square, range(10), progress=True)
    assert psutil.Process().children() == children
