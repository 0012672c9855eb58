"""The worker bootstrap: what runs inside every child before, around and after a call.

In order: ignore SIGINT (Ctrl-C reaches the whole foreground process group;
the parent decides what happens to its workers), arrange to die with the
parent (a thread that waits for end of file on a pipe only the parent can
write to, and ``PR_SET_PDEATHSIG`` when the creating thread lives as long
as the parent), forward logging to the parent, unpickle and run the call,
and send back its result or exception, with the traceback as text. Nothing
here raises into ``multiprocessing``: whatever cannot be pickled or
unpickled is reported on the pipe and named.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _platform
from ._logforward import LogLevels, forward
from ._wire import describe, dumps, format_traceback, loads

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["WATCHER_NAME", "WorkerSettings", "bootstrap"]

#: The name of the thread that ends a worker whose parent is gone; it
#: holds no lock, so it does not make forking unsafe (see _process).
WATCHER_NAME = "singleton_proc-parent-watch"
#: Exit status of a worker that ended because its parent was gone.
PARENT_GONE_EXIT = 75


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to know besides the call.

    Attributes:
        levels: The parent's logging levels.
        death_signal: Whether to ask for ``PR_SET_PDEATHSIG``: only when the
            thread that creates the worker lives as long as its parent
            process (the signal fires when that *thread* exits).
    """

    levels: LogLevels
    death_signal: bool


class _Channel:
    """The worker's end of its pipe, shared by the call and logging threads."""

    def __init__(self, conn: Connection) -> None:
        """Send on ``conn``, one message at a time."""
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, *message: str | bytes) -> None:
        """Send one message (a tuple of str and bytes)."""
        with self._lock:
            self._conn.send(message)

    def send_log(self, record: bytes) -> None:
        """Send one pickled logging record."""
        self.send("log", record)


def bootstrap(
    conn: Connection, parent_alive: Connection, call: bytes, settings: WorkerSettings
) -> None:
    """Run the pickled ``call`` in this worker and report how it ended on ``conn``.

    Args:
        conn: The write end of the worker's pipe to its parent.
        parent_alive: The read end of a pipe that only the parent writes
            to; its end of file means the parent is gone.
        call: ``(fn, args, kwargs)``, pickled by the parent.
        settings: Logging levels and parent-death options.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _platform.unblock_sigint()  # blocked by the parent around our start
    if settings.death_signal:
        with contextlib.suppress(OSError):  # the pipe below is enough
            _platform.set_parent_death_signal()
    _watch_parent(parent_alive)
    channel = _Channel(conn)
    forward(channel.send_log, settings.levels)  # records made while unpickling too
    try:
        fn, args, kwargs = loads(call)
    except Exception as exc:  # noqa: BLE001  (reported, and named)
        channel.send(
            "failed",
            "the call",
            f"the worker could not unpickle the call ({type(exc).__name__}: {exc}); "
            "the function and the classes of the arguments must be importable "
            "in a fresh interpreter (defined at module level, not in an "
            "interactive session) under the spawn and forkserver start methods",
            format_traceback(exc),
        )
        return
    # Again: unpickling may have imported modules that add handlers.
    forward(channel.send_log, settings.levels)
    _run(channel, fn, args, kwargs)


def _run(channel: _Channel, fn: Any, args: Any, kwargs: Any) -> None:
    """Call ``fn`` and send back its result or exception."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001  (SystemExit ends the worker as usual)
        _send_exception(channel, exc)
        return
    try:
        payload = dumps(result)
    except Exception as exc:  # noqa: BLE001  (pickle raises many types)
        channel.send(
            "failed",
            "the result",
            f"the result of the call ({describe(result)}) cannot be pickled to "
            f"return it to the parent ({type(exc).__name__}: {exc}); return "
            "plain data instead",
            format_traceback(exc),
        )
        return
    channel.send("ok", payload)


def _send_exception(channel: _Channel, exc: Exception) -> None:
    """Send ``exc`` with its traceback, or say why it cannot be sent."""
    text = format_traceback(exc)
    try:
        payload = dumps(exc)
        loads(payload)  # an __init__ with required arguments pickles, then fails
    except Exception as bad:  # noqa: BLE001  (pickle raises many types)
        channel.send(
            "failed",
            "the exception",
            f"the call raised {type(exc).__qualname__}: {exc}, which cannot be "
            f"pickled to re-raise it in the parent ({type(bad).__name__}: {bad}); "
            "give the exception class a __reduce__ or pass all its arguments "
            "on to Exception.__init__",
            text,
        )
        return
    channel.send("raised", payload, text)


def _watch_parent(parent_alive: Connection) -> None:
    """End this worker as soon as the parent process is gone.

    Nothing is ever written to the pipe; it reads end of file when the last
    copy of the write end closed: the parent died. (Through the connection,
    not ``os.read``: on Windows its ``fileno()`` is a handle, not an fd.)
    """

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                parent_alive.recv_bytes()
        os._exit(PARENT_GONE_EXIT)

    threading.Thread(target=watch, name=WATCHER_NAME, daemon=True).start()
