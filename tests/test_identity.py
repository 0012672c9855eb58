"""Identity checks: a record is believed only for the very process it names."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import psutil
import pytest

from singleton_proc._lock.identity import (
    CREATE_TIME_TOLERANCE,
    current_identity,
    mismatch,
)

from helpers import own_holder

if TYPE_CHECKING:
    from singleton_proc import Holder


def _me() -> Holder:
    return own_holder("bot")


def test_our_own_record_matches() -> None:
    assert mismatch(_me(), None) == ""
    assert mismatch(_me(), frozenset({os.getpid()})) == ""


def test_create_time_within_the_tolerance_matches() -> None:
    shifted = dataclasses.replace(
        _me(), create_time=_me().create_time + CREATE_TIME_TOLERANCE / 2
    )
    assert mismatch(shifted, None) == ""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"create_time": 1_000_000.0}, "the pid was reused"),
        ({"cmdline": ("python", "other.py")}, "not 'python other.py' as recorded"),
        ({"user": "somebody-else"}, "runs as user"),
        ({"host": "another-box"}, "written on host 'another-box'"),
    ],
)
def test_each_identity_check_names_what_differs(
    change: dict[str, object], expected: str
) -> None:
    assert expected in mismatch(dataclasses.replace(_me(), **change), None)  # type: ignore[arg-type]


def test_a_pid_that_does_not_hold_the_lock_is_not_the_holder() -> None:
    why = mismatch(_me(), frozenset({1}))
    assert (
        why
        == f"pid {os.getpid()} named by the record does not hold the lock (held by 1)"
    )


def test_a_dead_pid_is_not_the_holder() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = dataclasses.replace(_me(), pid=proc.pid)
    assert "is not running" in mismatch(dead, None)


def test_identity_is_computed_once_per_process() -> None:
    assert current_identity() is current_identity()
    assert current_identity().create_time == psutil.Process().create_time()
