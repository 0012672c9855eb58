"""Tasks that the executor tests run in workers (importable by spawn and forkserver)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from child_tasks import say_ready

from helpers import wait_for_file


def gate_then_mark(directory: str, x: int) -> int:
    """Item 0 waits until the file ``go`` exists; every item marks ``ran-<x>``."""
    if x == 0:
        wait_for_file(os.path.join(directory, "go"))
    Path(directory, f"ran-{x}").write_text(str(os.getpid()))
    return x


def started_then_gated(directory: str, x: int) -> int:
    """Say ready in ``<x>``, wait until the file ``go`` exists, mark ``done-<x>``."""
    say_ready(os.path.join(directory, str(x)))
    wait_for_file(os.path.join(directory, "go"))
    Path(directory, f"done-{x}").write_text(str(os.getpid()))
    return x


def greet(name: str, *, greeting: str = "hello") -> str:
    """``"<greeting> <name>"``: a call with a keyword argument."""
    return f"{greeting} {name}"


class ExitWhenPickled:
    """An argument whose pickling, in the parent, calls ``sys.exit(3)``."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Exit: a ``__reduce__`` may run any code of the user's."""
        raise SystemExit(3)


class ExitWhenUnpickled:
    """A result whose unpickling, in the parent, calls ``sys.exit(4)``."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuilt by calling ``sys.exit(4)``."""
        return (sys.exit, (4,))


def exit_when_unpickled() -> ExitWhenUnpickled:
    """A task whose result exits the parent's thread that unpickles it."""
    return ExitWhenUnpickled()


class Tracked:
    """An object that marks its collection by a file ``freed-<name>-<pid>``.

    Each process's copy marks its own: a worker's copy of an argument, a
    function or a result says when the worker let it go.
    """

    def __init__(self, directory: str, name: str) -> None:
        """Mark in ``directory`` under ``name``."""
        self.directory, self.name = directory, name

    def __del__(self) -> None:
        """Collected: say so, with our pid."""
        Path(self.directory, f"freed-{self.name}-{os.getpid()}").touch()


def tracked_call(held: Tracked, arg: Tracked) -> tuple[int, Tracked, Tracked]:
    """Our pid, ``held`` (bound to the function), a new ``<arg>-result``."""
    return os.getpid(), held, Tracked(arg.directory, f"{arg.name}-result")


def tracked_item(arg: Tracked) -> tuple[int, Tracked]:
    """Our pid, and a new ``<arg>-result``: a map's item."""
    return os.getpid(), Tracked(arg.directory, f"{arg.name}-result")


class Blob:
    """A result that the parent can watch with a weak reference."""

    def __init__(self, x: int) -> None:
        """Blob number ``x``."""
        self.x = x


def make_blob(x: int) -> Blob:
    """``Blob(x)``."""
    return Blob(x)


#: What :func:`keep_shared` was given, in a worker.
_shared: dict[str, Any] = {}


def keep_shared(  # noqa: PLR0917  (initargs come by position)
    queue: Any, lock: Any, event: Any, semaphore: Any, value: Any, array: Any
) -> None:
    """An initializer that keeps ``multiprocessing`` objects for the tasks."""
    _shared.update(queue=queue, lock=lock, event=event, semaphore=semaphore,
                   value=value, array=array)  # fmt: skip


def use_shared(x: int) -> int:
    """Use each object :func:`keep_shared` kept; return ``x``."""
    with _shared["lock"]:
        _shared["value"].value += x
    with _shared["semaphore"]:
        _shared["array"][x] = 10 * x
    _shared["queue"].put(x)
    _shared["event"].set()
    return x


def pid_once(directory: str, x: int) -> tuple[int, int]:
    """``(our pid, x)``; raises if ``x`` ran before (``ran-<x>`` exists); 7 fails."""
    Path(directory, f"ran-{x}").touch(exist_ok=False)
    if x == 7:
        raise ValueError("seven")
    return os.getpid(), x


def fill_shared() -> int:
    """Fill what :func:`keep_shared` kept: ``array``, and ``lock`` holding one too.

    ``queue`` holds the write end of a pipe, ``value`` a number returned.
    """
    _shared["array"][:] = [1, 2]
    _shared["lock"][:] = [3, 4]
    _shared["queue"].send("filled")
    return int(_shared["value"].value)


def leave_a_thread() -> tuple[int, float]:
    """Start a thread that keeps the worker from exiting (as some libraries do).

    Returns the worker's pid and start time: which process it is.
    """
    threading.Thread(target=threading.Event().wait, daemon=False).start()
    return os.getpid(), psutil.Process().create_time()


def note_span(directory: str, x: int) -> int:
    """``x``, after 50 ms of work; writes ``span-<x>``: its start and end (ns)."""
    began = time.monotonic_ns()
    time.sleep(0.05)  # the work (nothing waits on it)
    Path(directory, f"span-{x}").write_text(f"{began} {time.monotonic_ns()}")
    return x
