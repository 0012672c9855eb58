"""usable_cpus: the affinity mask, capped by the cgroup CPU quota (v1 and v2)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from singleton_proc._workers.cpus import usable_cpus

if TYPE_CHECKING:
    from pathlib import Path

#: What usable_cpus starts from: the affinity mask (Linux), else the CPU count.
AFFINITY = (
    len(os.sched_getaffinity(0))
    if hasattr(os, "sched_getaffinity")
    else os.cpu_count() or 1
)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_without_a_quota_it_is_the_affinity(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    _write(membership, "0::/app\n")
    _write(tmp_path / "fs" / "app" / "cpu.max", "max 100000\n")
    assert usable_cpus(membership, tmp_path / "fs") == AFFINITY
    assert usable_cpus(tmp_path / "missing", tmp_path / "fs") == AFFINITY


@pytest.mark.skipif(AFFINITY < 2, reason="needs at least 2 CPUs to see a cap")
def test_a_cgroup_v2_quota_caps_it_even_from_a_parent_cgroup(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    _write(membership, "0::/outer/inner\n")
    fs = tmp_path / "fs"
    _write(fs / "outer" / "inner" / "cpu.max", "max 100000\n")
    _write(fs / "outer" / "cpu.max", "50000 100000\n")  # half a CPU: rounds up to 1
    assert usable_cpus(membership, fs) == 1


@pytest.mark.skipif(AFFINITY < 2, reason="needs at least 2 CPUs to see a cap")
def test_a_cgroup_v1_quota_caps_it(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    _write(membership, "4:memory:/x\n3:cpu,cpuacct:/job\n")
    mount = tmp_path / "fs" / "cpu,cpuacct" / "job"
    _write(mount / "cpu.cfs_quota_us", "100000\n")
    _write(mount / "cpu.cfs_period_us", "100000\n")
    assert usable_cpus(membership, tmp_path / "fs") == 1


def test_a_quota_above_the_affinity_does_not_raise_it(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    _write(membership, "3:cpu,cpuacct:/job\n")
    mount = tmp_path / "fs" / "cpu" / "job"  # no "cpu,cpuacct" mount: the fallback
    _write(mount / "cpu.cfs_quota_us", str(100000 * (AFFINITY + 8)))
    _write(mount / "cpu.cfs_period_us", "100000")
    assert usable_cpus(membership, tmp_path / "fs") == AFFINITY


def test_garbled_or_unlimited_files_are_ignored(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    _write(membership, "0::/a\n3:cpu:/b\n")
    fs = tmp_path / "fs"
    _write(fs / "a" / "cpu.max", "garbage\n")
    _write(fs / "cpu" / "b" / "cpu.cfs_quota_us", "-1")
    _write(fs / "cpu" / "b" / "cpu.cfs_period_us", "100000")
    assert usable_cpus(membership, fs) == AFFINITY


def test_this_process_gets_at_least_one() -> None:
    assert 1 <= usable_cpus() <= AFFINITY
