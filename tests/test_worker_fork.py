"""Fork safety of the worker side: a forked child leaves the parent's workers alone.

A child forked while pools run exits promptly, never stops or waits for
the parent's workers, and can start workers of its own under every start
method, as can a worker (SPEC "Worker processes", "Fork-safe").
"""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from helpers import DEADLINE, METHODS, TESTS

#: A forked child's exit takes well under a second; the bug took 30 s or for ever.
EXIT_BOUND = 5.0


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``script``; wait for the helpers it leaves (adopted: we are a subreaper).

    A program's forkserver and resource tracker end with it, a moment after.
    """
    before = psutil.Process().children()
    proc = subprocess.run(
        [sys.executable, str(TESTS / script), *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    left = [child for child in psutil.Process().children() if child not in before]
    _, alive = psutil.wait_procs(left, timeout=DEADLINE)
    assert not alive, f"{script} left processes running: {alive}"
    return proc


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("how", ["leave", "raise", "shutdown", "collect"])
def test_a_child_forked_in_a_process_pool_exits_at_once_leaving_the_workers(
    how: str, method: str
) -> None:
    proc = _run("child_worker_fork.py", how, method)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert facts["child_status"] == 0
    assert facts["child_seconds"] < EXIT_BOUND
    assert facts["workers_alive"], "the child stopped the parent's workers"
    assert facts["works"] == 9
    for refused in ("submit_error", "map_error"):
        if how in {"leave", "shutdown"}:
            assert "forked" in facts["child"][refused]
