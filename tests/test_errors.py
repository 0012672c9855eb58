"""The exception tree: shape, data, pickling, messages."""

from __future__ import annotations

import dataclasses
import pickle
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime, timezone

import pytest

from singleton_proc import (
    AlreadyRunningError,
    Holder,
    InsecureLockPathError,
    LockTimeoutError,
    ReplaceRefusedError,
    SingletonProcError,
    TaskTimeoutError,
    WorkerDiedError,
)

HOLDER = Holder(
    name="feishu",
    pid=4242,
    create_time=1_700_000_000.25,
    started_at=datetime(2026, 11, 27, 13, 45, tzinfo=timezone.utc),
    cmdline=("python", "bot.py"),
    user="alice",
    host="box",
)

ERRORS: list[SingletonProcError] = [
    SingletonProcError("base"),
    AlreadyRunningError("busy", holder=HOLDER),
    AlreadyRunningError("busy, holder unknown"),
    LockTimeoutError("waited 3 s", holder=HOLDER),
    ReplaceRefusedError("pid reused", holder=HOLDER),
    InsecureLockPathError("group-writable"),
    WorkerDiedError("worker 41 died (SIGKILL)", pid=41, exitcode=-9),
    TaskTimeoutError("task ran over 2 s", timeout=2.0),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_data(error: SingletonProcError) -> None:
    clone = pickle.loads(pickle.dumps(error))  # noqa: S301  (our own data)
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert vars(clone) == vars(error)


def test_tree_matches_the_spec() -> None:
    assert issubclass(AlreadyRunningError, SingletonProcError)
    assert issubclass(LockTimeoutError, AlreadyRunningError)
    assert issubclass(LockTimeoutError, TimeoutError)
    assert issubclass(ReplaceRefusedError, AlreadyRunningError)
    assert issubclass(InsecureLockPathError, SingletonProcError)
    assert issubclass(InsecureLockPathError, PermissionError)
    assert issubclass(WorkerDiedError, SingletonProcError)
    assert issubclass(WorkerDiedError, BrokenProcessPool)
    assert issubclass(TaskTimeoutError, SingletonProcError)
    assert issubclass(TaskTimeoutError, TimeoutError)


def test_errors_carry_their_data() -> None:
    assert AlreadyRunningError("x", holder=HOLDER).holder is HOLDER
    assert AlreadyRunningError("x").holder is None
    died = WorkerDiedError("x", pid=41, exitcode=-9)
    assert (died.pid, died.exitcode) == (41, -9)
    assert TaskTimeoutError("x", timeout=2.5).timeout == 2.5


def test_holder_reads_as_one_line() -> None:
    text = str(HOLDER)
    assert text.startswith("pid 4242, since ")
    assert text.endswith("command: python bot.py")
    odd = dataclasses.replace(HOLDER, cmdline=("python", "-c", "a\nb" * 200))
    assert "\n" not in str(odd)
    assert len(odd.command) == 200
