"""A pool parent that will die while its worker is still in its initializer.

Usage: ``child_pool_orphan.py START_METHOD DIRECTORY``. It runs a first
pool (its parent-alive pipe and forkserver now exist), then forks a holder
by C ``fork()`` (no at-fork hooks: it keeps every descriptor, the write end
of that pipe too, so the worker's watcher does not end it when we die and
the worker meets the dead parent itself), prints the holder's pid, and runs
a pool from a thread (no parent-death signal) whose initializer writes its
pid to ``DIRECTORY/ready`` and waits for ``DIRECTORY/go``. The test kills
this process, then creates ``go``: the worker tries to say "ready" to a
parent that is gone (under spawn and forkserver: a worker started by fork
has a copy of the parent's end of its pipe, and blocks until the holder
goes).
"""

from __future__ import annotations

import ctypes
import functools
import signal
import sys
import threading
import warnings

from pool_tasks import square, wait_for_go_in_initializer

from singleton_proc import run_in_pool


def main() -> None:
    """Warm up, fork the holder, run the pool from a thread."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # fork, threads
    method, directory = sys.argv[1:3]
    run_in_pool(square, [1], n=1, start_method=method)
    holder = ctypes.CDLL(None, use_errno=True).fork()
    if holder == 0:
        while True:  # until the test kills it
            signal.pause()
    print(holder, flush=True)
    initializer = functools.partial(wait_for_go_in_initializer, directory)
    thread = threading.Thread(
        target=run_in_pool,
        args=(square, [2]),
        kwargs={"n": 1, "start_method": method, "initializer": initializer},
    )
    thread.start()
    thread.join()


if __name__ == "__main__":
    main()
