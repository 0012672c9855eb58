"""Fork safety of the worker side: a forked child leaves the parent's workers alone.

A child forked while pools run exits promptly, never stops or waits for
the parent's workers, and can start workers of its own under every start
method, as can a worker (SPEC "Worker processes", "Fork-safe").
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import child_tasks
import fork_tasks
import psutil
import pytest

from singleton_proc import process_pool, run_in_pool, run_process, start_process

from helpers import (
    DEADLINE,
    METHODS,
    TESTS,
    forking_with_threads,
    posix_only,
    wait_for_file,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = posix_only("os.fork")

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


def _in_a_forked_child(work: Callable[[], object], bound: float = DEADLINE) -> Any:
    """What ``work()`` returns in a child forked from here (via JSON).

    The child runs the atexit hooks, as a normal exit would (not pytest's
    exit), and must end within ``bound`` s; else it is killed and the test fails.
    """
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(report_r)
            value = json.dumps(work()).encode()
            atexit._run_exitfuncs()  # noqa: SLF001  (a normal exit, minus pytest)
            os.write(report_w, value)
            status = 0
        finally:
            os._exit(status)
    os.close(report_w)
    child = psutil.Process(pid)
    try:
        child.wait(bound)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()  # it hung: fail, leaving nothing behind
            child.wait()
        with os.fdopen(report_r) as replies:
            report = replies.read()
    assert report, "the forked child reported nothing"
    return json.loads(report)


@pytest.mark.parametrize("method", METHODS)
def test_a_child_forked_in_a_start_process_block_leaves_the_worker_alone(
    method: str, tmp_path: Path
) -> None:
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    with start_process(
        child_tasks.wait_for_go, ready, go, start_method=method
    ) as handle:
        wait_for_file(ready)

        def in_the_child() -> list[str]:
            refusals = []
            for wait in (handle.result, handle.join):
                try:
                    wait(DEADLINE)
                except RuntimeError as exc:
                    refusals.append(str(exc))
            handle.terminate_tree(0)
            with handle:  # leaving the block the child was forked in
                pass
            return refusals

        refusals = _in_a_forked_child(in_the_child, EXIT_BOUND)
        assert len(refusals) == 2
        assert all("forked" in refusal for refusal in refusals)
        assert handle.is_alive(), "the child stopped the parent's worker"
        child_tasks.say_ready(go)
        assert handle.result(DEADLINE) == "went"


#: How the child ends, and how the parent's workers were started: every
#: method for the plain exit, one for the other ways (the child's side of
#: the pool is the same whatever the method).
ENDINGS = [
    *(("leave", method) for method in METHODS),
    *((how, "forkserver") for how in ("raise", "shutdown", "collect")),
]


@pytest.mark.parametrize(("how", "method"), ENDINGS)
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


# -- nested use: every worker API in a forked child and in a worker -----------


@contextlib.contextmanager
def _helpers_end_with_their_users() -> Iterator[None]:
    """Fail unless the processes adopted meanwhile end by themselves; reap them.

    A forked child or a worker that starts a forkserver leaves it behind when
    it exits; it ends at once (its "alive" pipe closed), and as a subreaper
    we adopt it.
    """
    before = psutil.Process().children()
    yield
    left = [child for child in psutil.Process().children() if child not in before]
    _, alive = psutil.wait_procs(left, timeout=DEADLINE)
    assert not alive, f"processes left running: {alive}"


def _in_a_worker(api: str, outer: str, method: str) -> dict[str, Any]:
    """``every_api(method)`` in a worker of ``api`` started by ``outer``."""
    if api == "run_process":
        outcomes = run_process(
            fork_tasks.every_api, method, start_method=outer, timeout=DEADLINE
        )
    else:
        [outcomes] = run_in_pool(
            fork_tasks.every_api, [method], n=1, start_method=outer, timeout=DEADLINE
        )
    return dict(outcomes)


#: Where the APIs are used: a child forked from here, or a worker of
#: run_process or run_in_pool started by each start method. Workers started
#: by fork inherit our state, as a forked child does; the others start afresh
#: and take longer (slow).
PLACES = [
    pytest.param(None, id="forked-child"),
    *(
        pytest.param(
            (api, outer),
            id=f"{api}-worker-by-{outer}",
            marks=[] if outer == "fork" else [pytest.mark.slow],
        )
        for api in ("run_process", "run_in_pool")
        for outer in METHODS
    ),
]


@forking_with_threads
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("place", PLACES)
def test_every_worker_api_works_nested_after_the_parent_used_forkserver(
    place: tuple[str, str] | None, method: str
) -> None:
    # The parent's forkserver and resource tracker run (their state is what a
    # forked child inherits), and so does a pool while the child is forked.
    assert run_process(fork_tasks.square, 2, start_method="forkserver") == 4
    with (
        _helpers_end_with_their_users(),
        process_pool(1, start_method="forkserver") as pool,
    ):
        assert pool.submit(fork_tasks.square, 2).result(DEADLINE) == 4
        if place is None:
            outcomes = dict(_in_a_forked_child(lambda: fork_tasks.every_api(method)))
        else:
            outcomes = _in_a_worker(*place, method)
        assert pool.submit(fork_tasks.square, 3).result(DEADLINE) == 9
    assert outcomes == fork_tasks.EXPECTED
