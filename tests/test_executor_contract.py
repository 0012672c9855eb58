"""process_pool keeps the concurrent.futures contract that ported code relies on.

Code written for ``ProcessPoolExecutor`` must keep working when
``process_pool`` is swapped in: one task's failure in the parent stays that
task's, nothing of ours keeps a task's objects alive, ``initargs`` takes
what ``ProcessPoolExecutor`` takes, ``max_tasks_per_child`` and
``max_workers`` are there, and interpreter exit finishes the work.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest
from executor_tasks import ExitWhenPickled, exit_when_unpickled

from singleton_proc import UnpicklableError, process_pool, run_in_pool

from helpers import DEADLINE, METHODS, forking_with_threads

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import Future


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
