"""Calls that tests run in worker processes (importable by spawn and forkserver)."""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import open_lock_fds, wait_for_file

_log = logging.getLogger("child_tasks.demo")


def say_ready(path: str, text: str = "") -> None:
    """Write ``text`` (default: our pid) to ``path`` atomically: "ready"."""
    tmp = f"{path}.tmp"
    Path(tmp).write_text(text or str(os.getpid()))
    os.replace(tmp, path)


def add(x: int, y: int = 0) -> int:
    """Return ``x + y``."""
    return x + y


def _inner_fail(message: str) -> None:
    raise ValueError(message)


def fail(message: str) -> None:
    """Raise ValueError(message) from a nested frame."""
    _inner_fail(message)


def die(how: str) -> None:
    """End this worker without a result."""
    if how == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)
    elif how == "SIGSEGV":
        faulthandler.disable()  # pytest's, inherited under fork: no stack dump
        ctypes.string_at(0)  # a real crash in native code
    elif how == "os._exit":
        os._exit(3)
    elif how == "sys.exit":
        sys.exit(3)
    time.sleep(3600)


def block(ready: str) -> None:
    """Say ready (our pid), then block for ever."""
    say_ready(ready)
    threading.Event().wait()


def block_with_grandchild(ready: str) -> None:
    """Start a grandchild, say ready ("pid grandchild-pid"), block for ever."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    say_ready(ready, f"{os.getpid()} {child.pid}")
    threading.Event().wait()


def wait_for_go(ready: str, go: str) -> str:
    """Say ready, wait until the file ``go`` exists, return "went"."""
    say_ready(ready)
    wait_for_file(go)
    return "went"


def log_records() -> int:
    """Log one record per level (and one with a traceback); return our pid."""
    _log.debug("debug from the worker")
    _log.info("info from the worker %d", 1)
    _log.warning("warning from the worker")
    try:
        fail("boom")
    except ValueError:
        _log.exception("error with a traceback")
    return os.getpid()


def return_lock() -> threading.Lock:
    """Return something that cannot be pickled."""
    return threading.Lock()


class NeedsTwoArgsError(Exception):
    """Pickles, but cannot be unpickled: __init__ needs two arguments."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(first)
        self.second = second


def raise_unpicklable() -> None:
    """Raise an exception that cannot cross back to the parent."""
    raise NeedsTwoArgsError("first", "second")


def lock_fds(directory: str) -> list[str]:
    """Our descriptors that point into ``directory`` (an instance lock, say)."""
    return open_lock_fds(Path(directory))
