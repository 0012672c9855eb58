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
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from singleton_proc._base import lineage
from singleton_proc._base import platform as _platform

from .by_value import fill_main_here
from .logforward import LogLevels, forward
from .protocol import (
    Kind,
    describe,
    dumps,
    format_traceback,
    loads,
    report_exception,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = [
    "PIPE_LOST_EXIT",
    "Channel",
    "WorkerSettings",
    "bootstrap",
    "prepare",
    "unpicklable_result",
    "unpickling_failed",
]

#: The name of the thread that ends a worker whose parent is gone. It holds
#: no lock, but it is a second thread: CPython (3.12+) warns about forking a
#: threaded process, so a worker that starts workers of its own gets
#: ``forkserver`` by default, not ``fork`` (see launch.choose_start_method).
_WATCHER_NAME = "singleton_proc-parent-watch"
#: Exit status of a worker that ended because its parent was gone.
PARENT_GONE_EXIT = 75
#: Exit status of a worker that could not write to its pipe: the parent is
#: gone, or a task closed the descriptor (``os.closerange(3, ...)``).
PIPE_LOST_EXIT = 76
#: The longest a worker whose parent pipe a task closed waits between looks
#: at its parent (psutil).
_PARENT_PROBE = 1.0


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to know besides the call.

    Attributes:
        levels: The parent's logging levels.
        death_signal: Whether to ask for ``PR_SET_PDEATHSIG``: only when the
            thread that creates the worker lives as long as its parent
            process (the signal fires when that *thread* exits).
        mark: What the worker's descendants carry (see ``lineage``), so
            that a stop of its tree finds the daemons they fork off.
    """

    levels: LogLevels
    death_signal: bool
    mark: str


class Channel:
    """The worker's end of its pipe, shared by the call and logging threads.

    A worker that cannot write to it has nobody left to report to: it exits
    at once with :data:`PIPE_LOST_EXIT`, printing nothing (no traceback for
    a parent that died before we said "ready", no line per logging record
    after a task closed the descriptor); a living parent names the cause.
    """

    def __init__(self, conn: Connection) -> None:
        """Send on ``conn``, one message at a time."""
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, kind: Kind, *fields: object) -> None:
        """Send one message of ``kind`` (see ``protocol``)."""
        self.send_report((kind.value, *fields))

    def send_report(self, message: tuple[object, ...]) -> None:
        """Send a message whose first field is its kind's value (a report).

        The tuple is pickled as a whole; a worker that cannot send exits.
        """
        with self._lock:
            try:
                self._conn.send(message)
            except OSError:
                os._exit(PIPE_LOST_EXIT)

    def send_log(self, record: bytes) -> None:
        """Send one pickled logging record."""
        self.send(Kind.LOG, record)


def prepare(
    conn: Connection, parent_alive: Connection, settings: WorkerSettings
) -> Channel:
    """Set this worker up: SIGINT ignored, parent watched, tree marked, logs forwarded.

    Args:
        conn: The write end of the worker's pipe to its parent.
        parent_alive: The read end of a pipe that only the parent writes
            to; its end of file means the parent is gone.
        settings: Logging levels and parent-death options.

    Returns:
        The channel on which to report to the parent.
    """
    fill_main_here()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _platform.unblock_sigint()  # blocked by the parent around our start
    lineage.carry(settings.mark)
    if settings.death_signal:
        with contextlib.suppress(OSError):  # the pipe below is enough
            _platform.set_parent_death_signal()
    _watch_parent(parent_alive)
    channel = Channel(conn)
    forward(channel.send_log, settings.levels)  # records made while unpickling too
    return channel


def unpickling_failed(what: str, exc: Exception) -> tuple[str, ...]:
    """The ``failed`` message for ``what`` that this worker could not unpickle."""
    message = (
        f"the worker could not unpickle {what} ({type(exc).__name__}: {exc}); "
        "what goes by reference (the functions and classes of importable "
        "modules) must be importable in the worker too, from the parent's "
        "sys.path; what the main script defines goes by value with the globals "
        "it uses, unless one of those cannot be pickled (a lock, an open file): "
        "then only a worker forked after its definition finds it, so create "
        "such a global in the worker (initializer=) or pass it as an argument"
    )
    return (Kind.FAILED.value, what, message, format_traceback(exc))


def bootstrap(
    conn: Connection, parent_alive: Connection, settings: WorkerSettings, call: bytes
) -> None:
    """Run the pickled ``call`` in this worker and report how it ended on ``conn``.

    Args:
        conn: The write end of the worker's pipe to its parent.
        parent_alive: See :func:`prepare`.
        settings: See :func:`prepare`.
        call: ``(fn, args, kwargs)``, pickled by the parent.
    """
    channel = prepare(conn, parent_alive, settings)
    try:
        fn, args, kwargs = loads(call)
    except Exception as exc:  # noqa: BLE001  (reported, and named)
        channel.send_report(unpickling_failed("the call", exc))
        return
    # Again: unpickling may have imported modules that add handlers.
    forward(channel.send_log, settings.levels)
    _run(channel, fn, args, kwargs)


def _run(channel: Channel, fn: Any, args: Any, kwargs: Any) -> None:
    """Call ``fn`` and send back its result or exception."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001  (SystemExit ends the worker as usual)
        channel.send_report(report_exception(exc))
        return
    try:
        payload = dumps(result)
    except Exception as exc:  # noqa: BLE001  (pickle raises many types)
        channel.send_report(unpicklable_result(result, exc))
        return
    channel.send(Kind.OK, payload)


def unpicklable_result(result: object, exc: Exception) -> tuple[str, ...]:
    """The ``failed`` message for a result that cannot be pickled."""
    message = (
        f"the result of the call ({describe(result)}) cannot be pickled to "
        f"return it to the parent ({type(exc).__name__}: {exc}); return "
        "plain data instead"
    )
    return (Kind.FAILED.value, "the result", message, format_traceback(exc))


def _watch_parent(parent_alive: Connection) -> None:
    """End this worker as soon as the parent process is gone.

    Nothing is ever written to the pipe: it is ready once the last copy of
    its write end closed, the parent died. It is polled, never read: a task
    may close every descriptor (``os.closerange``) and open others under the
    same number, whose data stay the task's. So a ready (or closed) pipe is
    checked against the parent itself, its pid and start time (psutil): if
    the parent lives on, the pipe is no longer ours, and the thread asks
    psutil instead, every second at most. (Polled through the connection:
    on Windows its ``fileno()`` is a handle.)
    """
    parent = _parent_identity()

    def watch() -> None:
        with contextlib.suppress(OSError):  # closed by the task
            parent_alive.poll(None)
        delay = _PARENT_PROBE / 100  # an exiting parent closes its pipe first
        while _lives(parent):
            time.sleep(delay)
            delay = min(2 * delay, _PARENT_PROBE)
        os._exit(PARENT_GONE_EXIT)

    threading.Thread(target=watch, name=_WATCHER_NAME, daemon=True).start()


def _parent_identity() -> psutil.Process | None:
    """The parent process (not a forkserver), or ``None`` if it is gone already."""
    parent = multiprocessing.parent_process()
    try:
        return psutil.Process(os.getppid() if parent is None else parent.pid)
    except psutil.Error:
        return None


def _lives(parent: psutil.Process | None) -> bool:
    """Whether ``parent`` is still running: not gone, a zombie or its pid reused."""
    try:
        return (
            parent is not None
            and parent.is_running()
            and parent.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False
