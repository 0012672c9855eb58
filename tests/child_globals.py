"""A script whose workers use its globals, for the tests of what goes by value.

Usage: ``child_globals.py START_METHOD``. Prints one JSON line: what an
initializer's global looks like to the tasks, whether the script's class
and exception come back as themselves and are left untouched here, and
(under fork) whether a function whose global cannot be pickled still runs.
"""

from __future__ import annotations

import json
import sys
import threading

from singleton_proc import process_pool, run_in_pool, run_process

METHOD = sys.argv[1]
model = None
FACTOR = 1
LOCK = threading.Lock()


def init(value: str) -> None:
    """An initializer that sets a global for the tasks."""
    global model  # noqa: PLW0603  (what initializers do)
    model = value


def task(x: int) -> tuple[str | None, int]:
    """Read the global the initializer set."""
    return model, x


class Scaled:
    """A class of the script; its method reads a global of the script."""

    def get(self) -> int:
        return FACTOR


class BoomError(Exception):
    """An exception class of the script."""


def make() -> Scaled:
    return Scaled()


def boom() -> None:
    raise BoomError("boom")


def locked() -> bool:
    """Uses a global that no pickler can send."""
    with LOCK:
        return True


def main() -> None:
    global FACTOR  # noqa: PLW0603
    result: dict[str, object] = {}
    with process_pool(
        1, initializer=init, initargs=("loaded",), start_method=METHOD
    ) as pool:
        result["submit"] = pool.submit(task, 1).result()
        result["map"] = list(pool.map(task, [2, 3]))
    result["run_in_pool"] = run_in_pool(
        task, [4], n=1, initializer=init, initargs=("loaded",), start_method=METHOD
    )
    original = Scaled.get
    back = run_process(make, start_method=METHOD)
    FACTOR = 10
    result["class"] = [type(back) is Scaled, Scaled.get is original, back.get()]
    try:
        run_process(boom, start_method=METHOD)
    except BoomError:
        result["exception"] = "caught"
    if METHOD == "fork":
        result["locked"] = run_process(locked, start_method=METHOD)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
