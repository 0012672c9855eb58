"""A parent program that forks a child while its ``process_pool`` runs.

Usage: ``child_worker_fork.py HOW START_METHOD``. The parent starts two
workers, notes their pids, and forks a child that ends as HOW says:

* ``leave``: it tries ``submit`` and ``map`` (noting their errors), then
  leaves the ``with`` block normally and exits;
* ``raise``: it raises ``SystemExit`` inside the ``with`` block;
* ``shutdown``: it calls ``shutdown(wait=True)``, then ``submit``;
* ``collect``: the executor has no ``with`` block; the child drops it and
  collects garbage, then exits.

Each child exits the normal way (atexit hooks and all). The parent waits
for it (10 s at most, then kills it), uses its workers again, and prints
one JSON line: the child's report, its exit status, the seconds from fork
to its end, and whether the parent's workers still run and work.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import psutil
from pool_tasks import square, worker_pid

from singleton_proc import process_pool

if TYPE_CHECKING:
    from collections.abc import Callable

#: Safety net for the child's exit (a hang is the bug under test).
CHILD_BOUND = 10.0


def child(pool: Any, how: str, report: dict[str, object]) -> None:
    """What the forked child does before it leaves the ``with`` block."""
    attempts: dict[str, Callable[[], object]] = {
        "submit": lambda: pool.submit(square, 2),
        "map": lambda: pool.map(square, [2]),
    }
    if how == "shutdown":
        pool.shutdown(wait=True)
        report["shut_down"] = True
    if how in {"leave", "shutdown"}:
        for name, attempt in attempts.items():
            try:
                attempt()
            except RuntimeError as exc:
                report[f"{name}_error"] = str(exc)
    if how == "raise":
        raise SystemExit(0)


def wait_for(pid: int) -> tuple[int | None, float]:
    """The child's exit status (``None`` if it hung and was killed) and its time."""
    forked = time.monotonic()
    process = psutil.Process(pid)
    try:
        status = process.wait(CHILD_BOUND)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait()
        status = None
    return status, time.monotonic() - forked


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main() -> None:
    """Fork inside a running pool; report what the child and the parent saw."""
    how, method = sys.argv[1:3]
    pool = process_pool(2, start_method=method)
    if how != "collect":
        pool.__enter__()
    workers = set(pool.map(worker_pid, range(20), chunksize=1))
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        report: dict[str, object] = {}
        try:
            if how == "collect":
                del pool
                gc.collect()
            else:
                with pool:  # the block the child was forked in ends here
                    child(pool, how, report)
        finally:
            os.write(report_w, json.dumps(report).encode())
            os.close(report_w)
        return  # exits the normal way
    os.close(report_w)
    status, seconds = wait_for(pid)
    with os.fdopen(report_r) as replies:
        child_report = json.loads(replies.read() or "{}")
    facts = {
        "child": child_report,
        "child_status": status,
        "child_seconds": seconds,
        "workers_alive": all(alive(worker) for worker in workers),
        "works": pool.submit(square, 3).result(30),
    }
    pool.shutdown()
    print(json.dumps(facts), flush=True)


if __name__ == "__main__":
    main()
