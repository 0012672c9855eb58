"""A program with a progress bar and console logging, for the terminal test.

Usage: ``child_progress.py``, its stderr a terminal. It logs to stderr
(``logging.basicConfig``, each line starting with ``LOG``), and runs
``pool_tasks.log_item`` on eight items with ``progress=True``: each worker
logs one record per item, which the parent prints while the bar shows.
"""

from __future__ import annotations

import logging

import pool_tasks

from singleton_proc import run_in_pool

logging.basicConfig(format="LOG %(message)s", level=logging.INFO)
run_in_pool(pool_tasks.log_item, range(8), n=2, chunksize=1, progress=True)
logging.getLogger("after").warning("the bar is done")
