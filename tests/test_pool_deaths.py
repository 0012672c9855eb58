"""A pool worker lost after its task returned: the item fails once, nothing loops.

A result whose pickling kills the worker (the OOM killer, while a large
result is pickled), or a task that closes every descriptor of its worker
(its pipe included), used to make the pool run the item again and again.
Each test counts the runs of every item in files the task appends to.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pool_tasks
import pytest

from singleton_proc import WorkerDiedError, iter_in_pool, process_pool, run_in_pool

from helpers import DEADLINE, METHODS, posix_only

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = posix_only("workers under fork and forkserver, killed with SIGKILL")

#: How the result is lost, the stage the error names, and what it says.
LOSSES = [
    ("pickling", "sending the result of", "killed by SIGKILL"),
    ("closerange", "sending the result of", "lost its pipe to the parent"),
    ("closerange-log", "running", "lost its pipe to the parent"),
    ("SIGKILL", "running", "killed by SIGKILL"),
]


def _runs(directory: Path) -> dict[int, int]:
    """How many times each item ran (the size of its file)."""
    return {int(path.name): path.stat().st_size for path in directory.iterdir()}


def _quiet(err: str) -> None:
    """At most a few lines on stderr, and no traceback."""
    assert "Traceback" not in err, err
    assert "Bad file descriptor" not in err, err
    assert len(err.splitlines()) <= 3, err


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("loss", LOSSES, ids=[loss[0] for loss in LOSSES])
def test_the_lost_item_fails_at_once_naming_the_stage(
    method: str,
    loss: tuple[str, str, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    how, stage, says = loss
    task = functools.partial(pool_tasks.lose_result_on, 0, how, str(tmp_path))
    with pytest.raises(WorkerDiedError) as caught:
        run_in_pool(task, [0], n=1, start_method=method)
    message = str(caught.value)
    assert f"{stage} lose_result_on on item 0 (int: 0)" in message
    assert says in message
    assert caught.value.pid is not None
    assert _runs(tmp_path) == {0: 1}
    _quiet(capfd.readouterr().err)


@pytest.mark.parametrize("api", ["run_in_pool", "iter_in_pool"])
@pytest.mark.parametrize("loss", LOSSES, ids=[loss[0] for loss in LOSSES])
def test_finished_items_of_the_chunk_run_once_more_and_none_more_than_twice(
    api: str,
    loss: tuple[str, str, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    how, stage, says = loss
    task = functools.partial(pool_tasks.lose_result_on, 13, how, str(tmp_path))
    items = range(40)
    if api == "run_in_pool":
        results = run_in_pool(task, items, n=2, chunksize=8, return_exceptions=True)
    else:
        results = list(
            iter_in_pool(task, items, n=2, chunksize=8, return_exceptions=True)
        )
    error = results[13]
    assert isinstance(error, WorkerDiedError)
    assert f"{stage} lose_result_on on item 13 (int: 13)" in str(error)
    assert says in str(error)
    assert results[:13] + results[14:] == [x for x in items if x != 13]
    # Item 13 is in the chunk of items 8-15. Lost while running it: the
    # items before it ran again, alone. Lost while sending the chunk's
    # results: every item of the chunk ran again alone, and 13 failed.
    again = range(8, 13) if stage == "running" else range(8, 16)
    assert _runs(tmp_path) == {x: 2 if x in again else 1 for x in items}
    _quiet(capfd.readouterr().err)


@pytest.mark.parametrize("how", ["pickling", "closerange"])
def test_without_return_exceptions_the_first_loss_is_raised(
    how: str, tmp_path: Path
) -> None:
    task = functools.partial(pool_tasks.lose_result_on, 5, how, str(tmp_path))
    with pytest.raises(WorkerDiedError, match=r"sending the result of .* item 5"):
        run_in_pool(task, range(12), n=2, chunksize=4)
    assert max(_runs(tmp_path).values()) <= 2


@pytest.mark.parametrize("how", ["pickling", "closerange"])
def test_process_pool_fails_only_the_task_whose_result_was_lost(
    how: str, tmp_path: Path
) -> None:
    submitted, mapped = tmp_path / "submit", tmp_path / "map"
    submitted.mkdir()
    mapped.mkdir()
    task = functools.partial(pool_tasks.lose_result_on, 1, how)
    with process_pool(2) as pool:
        futures = [pool.submit(task, str(submitted), x) for x in range(3)]
        error = futures[1].exception(timeout=DEADLINE)
        assert [futures[0].result(), futures[2].result()] == [0, 2]
        results = pool.map(functools.partial(task, str(mapped)), range(8), chunksize=4)
        assert next(results) == 0
        with pytest.raises(WorkerDiedError) as caught:
            list(results)
    assert isinstance(error, WorkerDiedError)
    assert "sending the result of lose_result_on in task 1" in str(error)
    assert "sending the result of lose_result_on on item" in str(caught.value)
    assert "(int: 1)" in str(caught.value)
    assert _runs(submitted) == {0: 1, 1: 1, 2: 1}
    assert max(_runs(mapped).values()) <= 2


def test_a_death_among_tiny_items_is_blamed_on_its_item(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tiny items run untracked, in C; a death among them still finds its item.

    The chunk's items run again alone, and the item that kills its worker is
    blamed at its second run (each item runs at most twice).
    """
    task = functools.partial(pool_tasks.die_on, 1500, "SIGKILL")
    results = run_in_pool(
        task, range(2000), n=2, chunksize=1000, return_exceptions=True
    )
    error = results[1500]
    assert isinstance(error, WorkerDiedError)
    assert "die_on on item 1500 (int: 1500)" in str(error)
    assert "second run" in str(error)
    assert results[:1500] + results[1501:] == [x for x in range(2000) if x != 1500]
    assert "(tiny items, not tracked one by one)" in caplog.text
