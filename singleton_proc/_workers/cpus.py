"""How many workers a pool gets: by default, the CPUs this process may use.

The CPUs this process may use are its affinity, capped by its cgroup's
quota: ``os.cpu_count()`` counts the machine. A container limited to two CPUs
(``docker run --cpus 2``, a Kubernetes limit) still sees every CPU of the
host, and a pool of that many workers only thrashes. The affinity mask
(``taskset``) and the cgroup CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us``/``cpu.cfs_period_us``) of this process and of every
cgroup above it are read; the smallest wins. Where none of this exists
(macOS, Windows) the answer is ``os.cpu_count()``.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from singleton_proc._base import validate

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

__all__ = ["check_workers", "usable_cpus"]

_PROC_CGROUP = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(
    proc_cgroup: Path = _PROC_CGROUP, cgroup_root: Path = _CGROUP_ROOT
) -> int:
    """The CPUs this process may use, at least 1.

    Args:
        proc_cgroup: Where this process's cgroup membership is listed.
        cgroup_root: Where the cgroup filesystems are mounted.
    """
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(proc_cgroup, cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(proc_cgroup: Path, cgroup_root: Path) -> float | None:
    """The tightest CPU quota (in CPUs) of this process's cgroups, if any."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if not controllers:  # cgroup v2: "0::/path"
            quotas += _along(cgroup_root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # v1: "4:cpu,cpuacct:/path"
            mount = cgroup_root / controllers
            if not mount.is_dir():
                mount = cgroup_root / "cpu"
            quotas += _along(mount, path, _v1_quota)
    return min(quotas, default=None)


def _along(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas of the cgroup at ``path`` under ``mount`` and of its ancestors."""
    found = []
    directory = mount / path.strip("/")
    while True:
        quota = read(directory)
        if quota is not None:
            found.append(quota)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    """``cpu.max`` ("max 100000" or "200000 100000") as CPUs, or ``None``."""
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):  # "max", missing, garbled
        return None


def _v1_quota(directory: Path) -> float | None:
    """``cpu.cfs_quota_us / cpu.cfs_period_us`` as CPUs; -1 means none."""
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def check_workers(
    n: int | None,
    timeout: float | None,
    initializer: object,
    executor: Executor | None = None,
    *,
    name: str = "n",
) -> int:
    """Check what every pool takes (``process_pool`` too); return ``n``.

    ``n`` defaults to the executor's worker count when it says (see
    :func:`_workers_of`), else to the CPUs this process may use; ``name``
    is how the caller spelled it.
    """
    if initializer is not None and not callable(initializer):
        raise TypeError(
            f"initializer must be callable or None, not {type(initializer).__name__}"
        )
    validate.task_timeout(timeout)
    if n is None:
        n = _workers_of(executor) or usable_cpus()
    return validate.worker_count(n, name)


def _workers_of(executor: Executor | None) -> int | None:
    """How many calls ``executor`` runs at once, where it says so.

    ``max_workers`` (the stdlib's executors, loky's); for dask.distributed's
    ``Client.get_executor()``, the threads of its cluster's workers.
    """
    count = getattr(executor, "_max_workers", None)
    if count is None:
        nthreads = getattr(getattr(executor, "_client", None), "nthreads", None)
        if callable(nthreads):
            with contextlib.suppress(Exception):  # a cluster that cannot answer
                count = sum(nthreads().values())
    return count if isinstance(count, int) and count > 0 else None
