"""A parent program running a pool, for the tests that interrupt or kill it.

Usage: ``child_pool.py MODE START_METHOD DIRECTORY``, MODE one of:

* ``run``: ``run_in_pool(block, range(2), n=2)``; each worker writes its pid
  to ``DIRECTORY/<item>`` and blocks (the tests send SIGINT or SIGKILL);
* ``iter``: the same through ``iter_in_pool``;
* ``warm``: the same on a warm ``process_pool(3)`` (``executor=``), whose
  third worker runs a submitted task (ready in ``DIRECTORY/other/9``, it
  waits for ``DIRECTORY/other/go``); Ctrl-C is caught, and the program
  prints "interrupted", then that task's result and a last call's;
* ``memory``: ``iter_in_pool`` over a generator of 2,000,000 items; prints
  the growth of the peak resident memory, in bytes, and the most items
  pulled ahead of the consumer.
"""

from __future__ import annotations

import functools
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING

from executor_tasks import started_then_gated
from pool_tasks import block, square

from singleton_proc import iter_in_pool, process_pool, run_in_pool

if TYPE_CHECKING:
    from collections.abc import Iterator

_ITEMS = 2_000_000


def _peak_rss() -> int:
    """This process's peak resident memory, in bytes (Linux counts KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory(method: str) -> None:
    """Stream 2,000,000 items; print peak memory growth and the lead."""
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(_ITEMS):
            pulled += 1
            yield i

    before = _peak_rss()
    lead = 0
    for done, _ in enumerate(
        iter_in_pool(square, items(), n=2, start_method=method), 1
    ):
        lead = max(lead, pulled - done)
    print(_peak_rss() - before, lead, pulled)


def warm(method: str, directory: str) -> None:
    """Block in ``run_in_pool`` on a warm pool until Ctrl-C; show the pool goes on."""
    other = os.path.join(directory, "other")
    os.mkdir(other)
    with process_pool(3, start_method=method) as pool:
        busy = pool.submit(started_then_gated, other, 9)
        try:
            run_in_pool(functools.partial(block, directory), range(2), executor=pool)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        print(busy.result(), run_in_pool(square, range(3), executor=pool), flush=True)


def main() -> None:
    """Run the pool as MODE says."""
    # Started from a background job (CI), we would inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, method, directory = sys.argv[1:4]
    task = functools.partial(block, directory)
    if mode == "run":
        run_in_pool(task, range(2), n=2, start_method=method)
    elif mode == "iter":
        for _ in iter_in_pool(task, range(2), n=2, start_method=method):
            pass
    elif mode == "warm":
        warm(method, directory)
    else:
        memory(method)


if __name__ == "__main__":
    main()
