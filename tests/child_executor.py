"""A parent program running ``process_pool``, for the tests that interrupt or kill it.

Usage: ``child_executor.py MODE START_METHOD DIRECTORY [thread]``. Two
workers each run ``pool_tasks.block``, which writes the worker's pid to
``DIRECTORY/<item>`` and blocks for ever. With ``thread``, the program
presses Ctrl-C itself, once the work runs and its main thread waits, as a
kernel may deliver it: to another thread (see :func:`ctrl_c_to_another_thread`).
MODE says how:

* ``submit``: two submitted tasks, waited for in a ``with`` block (the tests
  send SIGINT or SIGKILL);
* ``map``: ``map`` over two items in a ``with`` block (the tests send SIGINT);
* ``shutdown``: two submitted tasks, then ``shutdown(wait=True)`` (SIGINT);
* ``process``: one task (item 0) by ``start_process``, then ``result()``;
* ``stream``: ``map`` over a million 50 ms tasks; it prints "ready" at the
  first result (the tests send bursts of SIGINT);
* ``exit``: four submitted :func:`gated_here` tasks (each finishes once the
  file ``go`` exists) on two workers that each run one task
  (``max_tasks_per_child=1``: the last two run on workers started while
  interpreter exit waits, which must import this script's functions); once
  the first two run, it prints "ready" and, at the end of its stdin, ends
  without shutting the executor down.
  The library's debug log goes to stdout: at exit, a line saying that
  interpreter exit waits for the work is the cue for the test.
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import signal
import sys
import threading
import time

from executor_tasks import started_then_gated
from pool_tasks import block, take

from singleton_proc import start_process
from singleton_proc._workers.executor import PoolExecutor, process_pool

from helpers import wait_for_file

#: The executor of ``exit`` mode, alive until interpreter exit.
_kept: list[PoolExecutor] = []


def main() -> None:
    """Run the pool as MODE says (SIGABRT prints where each thread is)."""
    faulthandler.enable()
    # Started from a background job (CI), we would inherit SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, method, directory = sys.argv[1:4]
    task = functools.partial(block, directory)
    if sys.argv[4:] == ["thread"]:
        ctrl_c_to_another_thread(directory, ["0"] if mode == "process" else ["0", "1"])
    if mode == "process":
        with start_process(task, 0, start_method=method) as handle:
            handle.result()
        return
    if mode == "exit":
        logging.basicConfig(stream=sys.stdout, level=logging.DEBUG)
        pool = process_pool(2, start_method=method, max_tasks_per_child=1)
        _kept.append(pool)
        for item in range(4):
            pool.submit(gated_here, directory, item)
        for item in range(2):
            wait_for_file(os.path.join(directory, str(item)))
        print("ready", flush=True)
        sys.stdin.read()  # until the test closes it
        return
    if mode == "shutdown":
        pool = process_pool(2, start_method=method)
        for item in range(2):
            pool.submit(task, item)
        pool.shutdown(wait=True)
        return
    with process_pool(2, start_method=method) as pool:
        use(pool, mode, task)


def ctrl_c_to_another_thread(directory: str, items: list[str]) -> None:
    """Have SIGINT delivered to a thread of ours once the main thread waits.

    A thread waits for the work to run (the files of ``items``) and for the
    main thread to block in a ``wait`` (its innermost frame, polled), then
    signals itself. Python handlers run only in the main thread: the C
    handler merely flags the signal, and a main thread that never wakes
    from its wait never raises the ``KeyboardInterrupt``.
    """
    main = threading.get_ident()  # called from the main thread

    def press() -> None:
        for item in items:
            wait_for_file(os.path.join(directory, item))
        while sys._current_frames()[main].f_code.co_name != "wait":  # noqa: SLF001
            time.sleep(0.001)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    threading.Thread(target=press, daemon=True).start()


def gated_here(directory: str, x: int) -> int:
    """``started_then_gated``, from a function of this script (``__main__``)."""
    return started_then_gated(directory, x)


def use(pool: PoolExecutor, mode: str, task: functools.partial[int]) -> None:
    """Inside the ``with`` block: the work of modes ``stream``, ``submit``, ``map``."""
    if mode == "stream":
        work = functools.partial(take, 0.05)
        for done, _ in enumerate(pool.map(work, range(10**6))):
            if done == 0:
                print("ready", flush=True)
    elif mode == "submit":
        for future in [pool.submit(task, item) for item in range(2)]:
            future.result()
    else:
        for _ in pool.map(task, range(2), chunksize=1):
            pass


if __name__ == "__main__":
    main()
