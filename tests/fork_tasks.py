"""Calls that the fork tests run in forked children and in workers (importable by all).

:func:`every_api` uses each worker API once, nested inside wherever it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singleton_proc import (
    iter_in_pool,
    process_pool,
    run_in_pool,
    run_process,
    start_process,
)

if TYPE_CHECKING:
    from collections.abc import Callable

#: Safety net for each nested call.
BOUND = 30.0


def square(x: int) -> int:
    """``x * x``."""
    return x * x


def _started(method: str) -> Any:
    """``start_process``'s result, the child reaped by the handle's block."""
    with start_process(square, 3, start_method=method) as handle:
        return handle.result(BOUND)


def _pooled(method: str) -> list[int]:
    """A submitted call and a ``map`` of ``process_pool``."""
    with process_pool(1, start_method=method, timeout=BOUND) as pool:
        future = pool.submit(square, 3)
        return [future.result(BOUND), *pool.map(square, [1, 2])]


def every_api(method: str) -> dict[str, Any]:
    """Each worker API once under ``method``: its value, or the error it raised."""
    calls: dict[str, Callable[[], Any]] = {
        "run_process": lambda: run_process(
            square, 3, start_method=method, timeout=BOUND
        ),
        "start_process": lambda: _started(method),
        "run_in_pool": lambda: run_in_pool(
            square, [1, 2], n=1, start_method=method, timeout=BOUND
        ),
        "iter_in_pool": lambda: list(
            iter_in_pool(square, [1, 2], n=1, start_method=method, timeout=BOUND)
        ),
        "process_pool": lambda: _pooled(method),
    }
    outcomes: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            outcomes[name] = call()
        except Exception as exc:  # noqa: BLE001  (reported, named)
            outcomes[name] = f"{type(exc).__name__}: {exc}"
    return outcomes


#: What :func:`every_api` returns when every API works.
EXPECTED = {
    "run_process": 9,
    "start_process": 9,
    "run_in_pool": [1, 4],
    "iter_in_pool": [1, 4],
    "process_pool": [9, 1, 4],
}
