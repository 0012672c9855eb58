"""A parent program whose worker the tests interrupt or orphan.

Usage: ``child_runner.py MODE START_METHOD READY``, MODE one of:

* ``run``: ``run_process(block, READY)`` (Ctrl-C tests send SIGINT);
* ``start``: ``start_process(block, READY)`` from the main thread, then
  wait for ever (the test SIGKILLs this process);
* ``thread-start``: the same from a short-lived thread that has exited
  before the test SIGKILLs this process.

The worker writes its pid to READY when it runs.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING

from child_tasks import block

from singleton_proc import run_process, start_process

if TYPE_CHECKING:
    from singleton_proc._workers.process import ProcessHandle


def main() -> None:
    """Start the worker as MODE says."""
    # Run from a background job (CI), we would inherit SIGINT ignored and the
    # Ctrl-C tests would test nothing: take Ctrl-C as an interactive program.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, method, ready = sys.argv[1:4]
    if mode == "run":
        run_process(block, ready, start_method=method)
        return
    handles: list[ProcessHandle] = []
    if mode == "start":
        handles.append(start_process(block, ready, start_method=method))
    else:
        starter = threading.Thread(
            target=lambda: handles.append(
                start_process(block, ready, start_method=method)
            )
        )
        starter.start()
        starter.join()
    threading.Event().wait()


if __name__ == "__main__":
    main()
