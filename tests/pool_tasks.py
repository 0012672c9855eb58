"""Tasks that the pool tests run in workers (importable by spawn and forkserver)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
from child_tasks import say_ready

from helpers import wait_for_file

_log = logging.getLogger("child_tasks.pool")
#: Set by :func:`remember` in a worker's initializer.
_remembered: list[object] = []


def square(x: int) -> int:
    """``x * x``."""
    return x * x


def worker_pid(_item: object = None) -> int:
    """The pid of the worker running the task."""
    return os.getpid()


def fail_on(bad: int, x: int) -> int:
    """``x``, but raise ``ValueError`` for ``bad``."""
    if x == bad:
        _raise_bad(x)
    return x


def _raise_bad(x: int) -> None:
    raise ValueError(f"bad item {x}")


def die_on(bad: int, how: str, x: int) -> int:
    """``x``, but the worker dies on ``bad`` (SIGKILL or ``os._exit(3)``)."""
    if x == bad:
        if how == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    return x


def die_on_with_time(bad: int, stamp: str, x: int) -> int:
    """``x``, but on ``bad`` write the time to ``stamp`` and SIGKILL the worker."""
    if x == bad:
        say_ready(stamp, repr(time.time()))
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def fail_first_block_rest(directory: str, x: int) -> int:
    """Item 0 raises once every other item runs; the others block for ever."""
    if x == 0:
        wait_for_file(os.path.join(directory, "1"))
        _raise_bad(x)
    say_ready(os.path.join(directory, str(x)))
    threading.Event().wait()
    return x


def hang_on(bad: int, directory: str, x: int) -> int:
    """``x``, but ``bad`` starts a grandchild, says ready ("pid child"), hangs."""
    if x == bad:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(3600)"]
        )
        say_ready(os.path.join(directory, "hung"), f"{os.getpid()} {child.pid}")
        threading.Event().wait()
    return x


def take(seconds: float, x: int) -> int:
    """``x`` after ``seconds``: a task that takes that long."""
    time.sleep(seconds)
    return x


def block(directory: str, x: int) -> int:
    """Say ready (file named ``x`` holding our pid), then block for ever."""
    say_ready(os.path.join(directory, str(x)))
    threading.Event().wait()
    return x


def last_waits_for_go(directory: str, x: int) -> int:
    """Item 0 waits until the file ``go`` exists; the others return at once."""
    if x == 0:
        wait_for_file(os.path.join(directory, "go"))
    return x


def remember(*args: object) -> None:
    """An initializer: keep ``args`` in this worker."""
    _remembered.extend(args)


def remembered(_item: object = None) -> list[object]:
    """What the initializer kept."""
    return list(_remembered)


def raise_in_initializer(message: str) -> None:
    """An initializer that raises ``KeyError(message)``."""
    raise KeyError(message)


def exit_in_initializer() -> None:
    """An initializer that ends the worker."""
    os._exit(4)


def log_item(x: int) -> int:
    """Log one record per item at WARNING, one at DEBUG (filtered), return ``x``."""
    _log.warning("item %d in %d", x, os.getpid())
    _log.debug("never shown %d", x)
    return x


def unpicklable_result(_item: object = None) -> object:
    """A result that cannot be pickled."""
    return threading.Lock()


class _Unloadable(Exception):  # noqa: N818
    """Pickles, but cannot be unpickled: ``__init__`` needs two arguments."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def raise_unloadable(_item: object = None) -> None:
    """Raise an exception that cannot cross back."""
    raise _Unloadable(1, 2)


def leave_a_thread(_item: object = None) -> int:
    """Start a non-daemon thread that never ends: the worker cannot exit."""
    threading.Thread(target=threading.Event().wait, daemon=False).start()
    return os.getpid()


def note_call(directory: str) -> str:
    """Leave a file of its own in ``directory`` (one per call); return its name."""
    name = uuid.uuid4().hex
    Path(directory, name).touch()
    return name


def write_pid(directory: str, x: int) -> int:
    """Write our pid to ``directory/<x>``; return ``x``."""
    Path(directory, str(x)).write_text(str(os.getpid()))
    return x


def die_once(marker: str) -> None:
    """An initializer: the first worker to run it (it creates ``marker``) dies."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(4)


def flood_logs(_item: object = None) -> None:
    """Log without pause, for ever."""
    while True:
        _log.warning("flood")


def log_a_lot(count: int) -> None:
    """An initializer that logs ``count`` records (more than a pipe holds)."""
    for i in range(count):
        _log.warning("initializer record %d of a long start-up, padded %s", i, "." * 40)


def length(item: bytes) -> int:
    """``len(item)``."""
    return len(item)


def bytes_read_at(marks: tuple[object, ...], x: object) -> int | None:
    """At the items in ``marks``: how many bytes this worker has read so far."""
    return psutil.Process().io_counters().read_chars if x in marks else None


def heavy_result(size: int, _item: object = None) -> tuple[int, int, bytes]:
    """``size`` bytes, after the worker's pid and the bytes it has written so far.

    The items of one chunk see the same count: a worker writes a chunk's
    results once, at its end.
    """
    return os.getpid(), psutil.Process().io_counters().write_chars, bytes(size)


class _BadResult:
    """Pickles, but cannot be unpickled: ``__setstate__`` raises."""

    def __init__(self) -> None:
        self.state = "some"  # a state to set: __setstate__ is called

    def __setstate__(self, state: object) -> None:
        raise AttributeError("this result cannot be rebuilt")


def unloadable_result(_item: object = None) -> object:
    """A result that pickles in the worker and fails to unpickle in the parent."""
    return _BadResult()


def _exit_now() -> None:
    os._exit(3)


class KillsWhenUnpickled:
    """An item whose unpickling ends the process that unpickles it."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_exit_now, ())


def _refuse() -> None:
    raise ValueError("this item cannot be unpickled")


class FailsWhenUnpickled:
    """An item whose unpickling raises ``ValueError``."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse, ())


def identity(x: object) -> object:
    """``x``."""
    return x


def fork_holder_then_die(directory: str, x: int) -> int:
    """On item 1: fork a child that keeps our pipes open, write its pid, exit."""
    if x == 1:
        child = os.fork()
        if child == 0:  # the grandchild: holds every descriptor, does nothing
            time.sleep(3600)
            os._exit(0)
        say_ready(os.path.join(directory, "grandchild"), str(child))
        os._exit(3)
    return x


def _count_run(directory: str, x: object) -> None:
    """Append one byte to ``directory/<x>``: the file's size counts the runs."""
    with open(os.path.join(directory, str(x)), "ab") as runs:
        runs.write(b".")


class KillsWhenPickled:
    """A result whose pickling SIGKILLs the worker (as the OOM killer might)."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")  # pragma: no cover


def lose_result_on(bad: int, how: str, directory: str, x: int) -> object:
    """Count the run; on ``bad``, lose the result in the worker ``how`` says.

    ``how``: ``"pickling"`` (the result kills its worker when pickled),
    ``"closerange"`` (close every descriptor of the worker, its pipe
    included, and return), ``"closerange-log"`` (the same, then log a
    record) or ``"SIGKILL"`` (before returning).
    """
    _count_run(directory, x)
    if x != bad:
        return x
    if how == "pickling":
        return KillsWhenPickled()
    if how.startswith("closerange"):
        _real_exit()
        os.closerange(3, 4096)
        if how.endswith("log"):
            _log.warning("item %d closed every descriptor", x)
        return x
    os.kill(os.getpid(), signal.SIGKILL)
    return x  # pragma: no cover


def _real_exit() -> None:
    """Give this process the real ``os._exit`` back, if coverage patched it.

    The README's suite runs under coverage with ``patch = ["_exit"]``: its
    ``os._exit`` saves the measurements first, which, once every descriptor
    is closed (its database's too), may crash the worker (SIGSEGV, 2 runs in
    30) instead of letting it exit with the status the test reads.
    """
    os._exit = sys.modules[os.name]._exit  # noqa: SLF001  (posix._exit, nt._exit)


def wait_for_go_in_initializer(directory: str) -> None:
    """An initializer: say ready (our pid in ``directory/ready``), wait for ``go``."""
    say_ready(os.path.join(directory, "ready"))
    wait_for_file(os.path.join(directory, "go"), timeout=60)
