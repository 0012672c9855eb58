"""Fixtures shared by every test: a private lock directory, and no child left.

The test process makes itself a child subreaper (Linux), so that processes
orphaned by a test (a forked grandchild whose parent exited) are re-parented
to it instead of to init, where ``no_child_left`` sees, fails and reaps them.
"""

from __future__ import annotations

import ctypes
import gc
import shutil
import sys
import tempfile
from multiprocessing import forkserver, resource_tracker
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from redis_server import RedisServer
from redis_server import redis_server as start_redis

from singleton_proc._workers import main_free

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: The scripts the tests start as processes: ``--doctest-modules`` must not
#: import them (some do their work at import, as programs without a main
#: guard do).
collect_ignore_glob = ["child_*.py"]


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """An empty private lock directory (0700)."""
    path = tmp_path / "locks"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A sticky, world-writable directory that every user can reach (like /tmp)."""
    top = Path(tempfile.mkdtemp(prefix="singleton-proc-test-", dir="/tmp"))
    top.chmod(0o755)
    shared = top / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    try:
        yield shared
    finally:
        shutil.rmtree(top)


@pytest.fixture(autouse=True)
def private_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default directory (for us and our children) into tmp_path."""
    path = tmp_path / "default"
    monkeypatch.setenv("SINGLETON_PROC_DIR", str(path))
    return path


_PR_SET_CHILD_SUBREAPER = 36


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001
    """Adopt orphans: they become our children, visible to ``no_child_left``."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """Fail a test that leaves a child process behind, killing it by pid."""
    yield
    children = psutil.Process().children(recursive=True)
    described: list[tuple[int, str, list[str]]] = []
    for child in children:
        try:
            described.append((child.pid, child.status(), child.cmdline()[:6]))
        except psutil.Error:
            described.append((child.pid, "gone", []))
        child.kill()
    psutil.wait_procs(children, timeout=10)
    assert not children, f"test left child processes: {described}"


@pytest.fixture(autouse=True)
def _stop_multiprocessing_helpers(no_child_left: None) -> Iterator[None]:  # noqa: ARG001  (teardown order)
    """Stop the forkserver and resource trackers, so no_child_left sees none.

    They are long-lived helpers of multiprocessing (they end with the
    parent); a test that used them stops them, and they are started again on
    demand. It depends on no_child_left so that it runs before that
    check, and leaves any worker of ours for that check to find.
    """
    yield
    gc.collect()  # loky's semaphores unregister from its tracker when collected
    helpers = [forkserver._forkserver, resource_tracker._resource_tracker]  # noqa: SLF001
    ours = main_free.forkserver_in_use()  # the forkserver of our workers
    if ours is not None:
        helpers.append(ours)
    loky_tracker = sys.modules.get("loky.backend.resource_tracker")
    if loky_tracker is not None and loky_tracker._resource_tracker._pid is not None:  # noqa: SLF001
        helpers.append(loky_tracker._resource_tracker)  # loky's own, the same kind  # noqa: SLF001
    for helper in helpers:
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()


#: Modules that run third-party executors (loky, dask.distributed), whose
#: threads live on in the test process: they run last, so that every other
#: test runs in a single-threaded process, as a user's program would.
_LAST = ("test_foreign.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests of :data:`_LAST` to the end, keeping the order otherwise."""
    items.sort(key=lambda item: item.path.name in _LAST)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port, stopped by pid after."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    with start_redis(workdir) as server:
        yield server


@pytest.fixture
def host_dir(tmp_path: Path) -> Callable[[str], Path]:
    """``host_dir("a")``: the private lock directory of simulated host "a".

    Each host of a cluster test has its own, so that the local lock cannot
    decide what only the lease must.
    """

    def make(host: str) -> Path:
        path = tmp_path / f"host-{host}"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    return make
