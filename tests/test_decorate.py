"""Decorators and async: held for the whole call, waiting never blocks the loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from singleton_proc import (
    AlreadyRunningError,
    SingleInstance,
    holder,
    is_running,
    single_instance,
)

from helpers import holding, open_lock_fds, read_line, reads_proc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

DERIVED = """
from singleton_proc import holder, single_instance

@single_instance{parens}
def main() -> str:
    found = holder("{stem}")
    return f"held by {{found.pid}}" if found else "not held"

print(main(), main.__name__)
print(holder("{stem}"))
"""


@pytest.mark.parametrize("parens", ["", "()"])
def test_bare_decorator_derives_the_name_from_the_program(
    tmp_path: Path, parens: str
) -> None:
    script = tmp_path / "nightly_job.py"
    script.write_text(DERIVED.format(parens=parens, stem="nightly_job"))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    first, second = proc.stdout.splitlines()
    assert first.startswith("held by ")
    assert first.endswith(" main")
    assert second == "None", "released when the call returned"


def test_named_decorator_applies_its_policy(lock_dir: Path) -> None:
    @single_instance("bot", directory=lock_dir, on_conflict="exit", exit_code=5)
    def job() -> str:
        return "ran"

    assert job() == "ran"
    with holding("bot", lock_dir), pytest.raises(SystemExit) as info:
        job()
    assert info.value.code == 5


def test_an_object_as_decorator_acquires_anew_on_every_call(lock_dir: Path) -> None:
    guard = SingleInstance("bot", directory=lock_dir)
    seen = []

    @guard
    def job(value: int) -> int:
        found = holder("bot", lock_dir)
        seen.append(found.pid if found else None)
        return value * 2

    assert [job(1), job(2)] == [2, 4]
    assert len(seen) == 2
    assert None not in seen
    assert not guard.held
    assert not is_running("bot", lock_dir)


def test_a_recursive_call_conflicts_with_its_own_process(lock_dir: Path) -> None:
    @single_instance("bot", directory=lock_dir)
    def job(depth: int) -> None:
        if depth:
            job(depth - 1)

    with pytest.raises(AlreadyRunningError, match="held by this very process"):
        job(1)
    assert not is_running("bot", lock_dir)


def test_decorating_something_not_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not callable"):
        SingleInstance("bot")(42)  # type: ignore[type-var]


def test_async_with_holds_and_releases(lock_dir: Path) -> None:
    async def main() -> tuple[bool, bool]:
        async with SingleInstance("bot", directory=lock_dir) as instance:
            await asyncio.sleep(0)
            return instance.held, is_running("bot", lock_dir)

    assert asyncio.run(main()) == (True, True)
    assert not is_running("bot", lock_dir)


def test_decorated_coroutine_is_held_for_its_whole_body(lock_dir: Path) -> None:
    @single_instance("bot", directory=lock_dir)
    async def job() -> int | None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        found = holder("bot", lock_dir)
        return found.pid if found else None

    import os  # noqa: PLC0415

    assert job.__name__ == "job"
    assert asyncio.run(job()) == os.getpid()
    assert not is_running("bot", lock_dir)


def test_waiting_in_async_with_lets_other_tasks_run(lock_dir: Path) -> None:
    with holding("bot", lock_dir) as first:
        assert first.stdin is not None
        stdin = first.stdin

        async def main() -> tuple[int, bool]:
            ticks = 0
            acquired = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not acquired.is_set():
                    ticks += 1
                    if ticks == 50:
                        stdin.close()  # the holder releases: the waiter may get in
                    await asyncio.sleep(0.001)

            async def waiter() -> bool:
                async with SingleInstance(
                    "bot", directory=lock_dir, on_conflict="wait", timeout=60
                ) as instance:
                    acquired.set()
                    return instance.held

            held, _ = await asyncio.gather(waiter(), ticker())
            return ticks, held

        ticks, held = asyncio.run(main())
        assert read_line(first).startswith("released")
    assert ticks >= 50, "the event loop was blocked while waiting"
    assert held
    assert not is_running("bot", lock_dir)


@reads_proc  # /proc/self/fd: no descriptor of the lock left open
def test_a_cancelled_wait_leaves_nothing_behind(lock_dir: Path) -> None:
    threads_before = threading.active_count()
    instance = SingleInstance("bot", directory=lock_dir, on_conflict="wait", timeout=60)
    with holding("bot", lock_dir):

        async def main() -> None:
            task = asyncio.create_task(instance.__aenter__())
            for _ in range(20):  # let it try, fail and sleep a few times
                await asyncio.sleep(0.001)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert not instance.held
        assert open_lock_fds(lock_dir) == []
        assert threading.active_count() == threads_before
    assert not is_running("bot", lock_dir)
    with instance:
        assert instance.held


def test_generator_functions_are_refused(lock_dir: Path) -> None:
    guard = SingleInstance("bot", directory=lock_dir)

    def numbers() -> Iterator[int]:
        yield 1

    async def stream() -> AsyncIterator[int]:
        yield 1

    for function in (numbers, stream):
        with pytest.raises(TypeError, match="released before its body runs"):
            guard(function)


def test_an_object_with_an_async_call_is_held_while_awaited(lock_dir: Path) -> None:
    class Job:
        async def __call__(self) -> bool:
            await asyncio.sleep(0)
            return is_running("bot", lock_dir)

    job = SingleInstance("bot", directory=lock_dir)(Job())
    assert asyncio.run(job()) is True
