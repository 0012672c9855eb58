"""The same value gets the same answer at every entry point that takes its meaning.

One table: for each meaning (a task's time limit, a wait, a grace period, a
worker count, a chunk size), what ``None``, 0, a negative number, NaN,
infinity, ``True`` and a string get, at every public entry point that takes
it. "ok" means the call is accepted and does its job.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import TYPE_CHECKING, Any

import pytest

from singleton_proc import (
    SingleInstance,
    iter_in_pool,
    process_pool,
    run_in_pool,
    run_process,
    start_process,
    terminate,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

VALUES: list[Any] = [None, 0, -1, math.nan, math.inf, True, "5"]
IDS = ["None", "0", "negative", "nan", "inf", "True", "str"]
OK, V, T = "ok", ValueError, TypeError

#: Per meaning, the outcome of each of VALUES.
EXPECTED: dict[str, list[Any]] = {
    "task timeout": [OK, V, V, V, V, T, T],
    "wait timeout": [OK, OK, V, V, OK, T, T],
    "grace": [T, OK, V, V, V, T, T],
    "worker count": [OK, V, V, T, T, T, T],
    "chunk size": [OK, V, V, T, T, T, T],
    "tasks per child": [OK, V, V, T, T, T, T],
}

#: The message that names what was wrong, per meaning.
NAMED = {
    "task timeout": "timeout must be",
    "wait timeout": "timeout must be",
    "grace": "grace must be",
    "worker count": "n must be",
    "chunk size": "chunksize must be",
    "tasks per child": "max_tasks_per_child must be",
}


def _run(**options: Any) -> None:
    assert run_in_pool(abs, [-1], **options) == [1]


def _iter(**options: Any) -> None:
    assert list(iter_in_pool(abs, [-1], **options)) == [1]


def _map(**options: Any) -> None:
    with process_pool(1) as pool:
        results = pool.map(abs, [-1], **options)
        with contextlib.suppress(FuturesTimeout):  # a wait of 0 may end first
            assert list(results) == [1]


def _finished_handle() -> Any:
    handle = start_process(abs, -1)
    handle.join()
    return handle


def _result(timeout: Any) -> None:
    assert _finished_handle().result(timeout=timeout) == 1


#: Per meaning, each entry point that takes it: ``call(value, lock_dir)``.
ENTRY_POINTS: dict[str, dict[str, Callable[[Any, Path], object]]] = {
    "task timeout": {
        "run_process": lambda v, _: run_process(abs, -1, timeout=v),
        "run_in_pool": lambda v, _: _run(n=1, timeout=v),
        "iter_in_pool": lambda v, _: _iter(n=1, timeout=v),
        "process_pool": lambda v, _: process_pool(1, timeout=v).shutdown(),
    },
    "wait timeout": {
        "SingleInstance": lambda v, d: SingleInstance(
            "x", on_conflict="wait", timeout=v, directory=d
        ),
        "ProcessHandle.result": lambda v, _: _result(v),
        "ProcessHandle.join": lambda v, _: _finished_handle().join(v),
        "PoolExecutor.map": lambda v, _: _map(timeout=v),
    },
    "grace": {
        "SingleInstance": lambda v, d: SingleInstance("x", grace=v, directory=d),
        "terminate": lambda v, d: terminate("x", grace=v, directory=d),
        "ProcessHandle.terminate_tree": lambda v, _: _finished_handle().terminate_tree(
            grace=v
        ),
    },
    "worker count": {
        "run_in_pool": lambda v, _: _run(n=v),
        "iter_in_pool": lambda v, _: _iter(n=v),
        "process_pool": lambda v, _: process_pool(v).shutdown(),
    },
    "chunk size": {
        "run_in_pool": lambda v, _: _run(n=1, chunksize=v),
        "iter_in_pool": lambda v, _: _iter(n=1, chunksize=v),
        "PoolExecutor.map": lambda v, _: _map(chunksize=v),
    },
    "tasks per child": {
        "run_in_pool": lambda v, _: _run(n=1, max_tasks_per_child=v),
        "iter_in_pool": lambda v, _: _iter(n=1, max_tasks_per_child=v),
        "process_pool": lambda v, _: process_pool(1, max_tasks_per_child=v).shutdown(),
    },
}

CASES = [
    pytest.param(meaning, entry, value, outcome, id=f"{meaning}-{entry}-{label}")
    for meaning, entries in ENTRY_POINTS.items()
    for entry in entries
    for value, label, outcome in zip(VALUES, IDS, EXPECTED[meaning], strict=True)
]


@pytest.mark.parametrize(("meaning", "entry", "value", "outcome"), CASES)
def test_each_value_gets_the_same_answer_at_every_entry_point(
    lock_dir: Path, meaning: str, entry: str, value: Any, outcome: Any
) -> None:
    call = ENTRY_POINTS[meaning][entry]
    if outcome == OK:
        call(value, lock_dir)
        return
    with pytest.raises(outcome, match=NAMED[meaning]):
        call(value, lock_dir)
