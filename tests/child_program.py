"""A program as users write it, for the tests of "Programs as users write them".

Usage: ``child_program.py API START_METHOD [guarded] [threaded]``, or the
same fed through stdin (``python - API ...``: no main file). API is one of
``run_in_pool``, ``iter_in_pool``, ``process_pool``, ``run_process``,
``start_process``. Its top level prints "top" (a worker that re-ran the
script would print it again, or fail to start); then, at the top level or
under ``if __name__ == "__main__":`` (``guarded``), with a thread of its own
running or not (``threaded``), it sends the API a lambda over instances of
a class of this script, a closure, and a function of this script, and
prints what came back as one JSON line.
"""

from __future__ import annotations

import json
import sys
import threading
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

print("top", flush=True)

API, METHOD = sys.argv[1:3]
FLAGS = sys.argv[3:]


class Point:
    """A class of the main module, sent as items and returned as results."""

    def __init__(self, x: int) -> None:
        self.x = x


def square(x: int) -> int:
    """A function of the main module."""
    return x * x


def adder(k: int) -> Callable[[int], int]:
    """A closure: no name to import it by."""
    return lambda x: x + k


def call_each(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``fn`` over ``items`` through API, by METHOD, in order."""
    if API == "run_in_pool":
        return run_in_pool(fn, items, n=2, start_method=METHOD)
    if API == "iter_in_pool":
        return list(iter_in_pool(fn, items, n=2, start_method=METHOD))
    if API == "process_pool":
        with process_pool(2, start_method=METHOD) as pool:
            first = pool.submit(fn, items[0]).result()
            return [first, *pool.map(fn, items[1:])]
    if API == "run_process":
        return [run_process(fn, item, start_method=METHOD) for item in items]
    return [start_process(fn, item, start_method=METHOD).result() for item in items]


def main() -> None:
    """Run the three calls; print their results (JSON)."""
    stop = threading.Event()
    if "threaded" in FLAGS:  # a poller, as a bot has
        threading.Thread(target=stop.wait, daemon=True).start()
    try:
        points = call_each(lambda p: Point(p.x * 10), [Point(1), Point(2)])
        result = {
            "points": [[type(p).__name__, type(p) is Point, p.x] for p in points],
            "closure": call_each(adder(100), [1, 2]),
            "function": call_each(square, [3, 4]),
        }
    finally:
        stop.set()
    print(json.dumps(result), flush=True)


# Unguarded, the work starts at import: as it would under a worker that
# imported this script.
if "guarded" not in FLAGS or __name__ == "__main__":
    main()
