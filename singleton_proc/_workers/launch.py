"""Starting a worker process: the start method, its pipes, and dying with the parent.

The start method is explicit; ``None`` picks a safe one: ``fork`` (the
fastest) on Linux and other Unixes only in a parent running a single thread,
since forking a multi-threaded process can copy a lock held by another
thread and deadlock the child; else ``forkserver``. macOS and Windows keep
their default (``spawn``). Any available method can be asked for.

Every worker gets the read end of one pipe per parent process whose write
end only the parent holds (a forked child closes its inherited copy at
once): its end of file tells the worker that the parent is gone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.util  # its atexit hook must be registered before ours
import os
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from singleton_proc._base import platform as _platform
from singleton_proc._base.lineage import new_mark

from .bootstrap import WorkerSettings
from .logforward import snapshot
from .main_free import forkserver_in_use, process_class

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

__all__ = ["Launched", "available_methods", "choose_start_method", "launch"]


def available_methods() -> list[str]:
    """The start methods this platform offers."""
    return multiprocessing.get_all_start_methods()


def choose_start_method(requested: str | None, *, threaded: bool = False) -> str:
    """The start method to use: ``requested``, or a safe default.

    Args:
        requested: The caller's choice, or ``None``.
        threaded: Whether workers will be started while other threads run
            (a pool run by a thread of its own): then never ``fork``.

    Raises:
        ValueError: ``requested`` is not a start method of this platform.
    """
    methods = available_methods()
    if requested is not None:
        if requested not in methods:
            raise ValueError(
                f"start_method must be one of {', '.join(map(repr, methods))} "
                f"(or None for a safe default), not {requested!r}"
            )
        return requested
    if _platform.IS_MACOS or _platform.IS_WINDOWS:  # pragma: no cover - by design
        return multiprocessing.get_context().get_start_method()
    if "fork" in methods and not threaded and _single_threaded():
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _single_threaded() -> bool:
    """Whether this process runs one thread, native ones (OpenBLAS, gRPC) included.

    The count comes from the kernel where it can (Linux), so that threads
    started by C code count too. A worker's own parent watcher counts as
    well: it holds no lock, but CPython (3.12+) warns about forking any
    threaded process, so a worker starts workers of its own by forkserver.
    """
    return _platform.thread_count() <= 1


_pipe_lock = threading.Lock()
_parent_alive: tuple[Connection, Connection] | None = None


def _parent_alive_reader() -> Connection:
    """The read end of this process's parent-alive pipe, made on first use."""
    global _parent_alive  # noqa: PLW0603  (one pipe per process)
    with _pipe_lock:
        if _parent_alive is None:
            _parent_alive = multiprocessing.Pipe(duplex=False)
        return _parent_alive[0]


def _forget_parent_alive_in_child() -> None:
    """After fork, in the child: close the write end, which only the parent may hold.

    The read end stays open: a worker started by ``fork`` watches it.
    """
    global _parent_alive, _pipe_lock  # noqa: PLW0603  (fork copies a process's state)
    _pipe_lock = threading.Lock()
    if _parent_alive is not None:
        _parent_alive[1].close()
        _parent_alive = None


_platform.at_fork(after_in_child=_forget_parent_alive_in_child)


def _forget_parent_helpers_in_child() -> None:
    """After fork, in the child: forget the parent's forkserver; share its tracker.

    ``multiprocessing`` keeps both helpers in module state that a forked child
    copies: the pid of a forkserver the parent started (``os.waitpid`` on it
    here raises ``ChildProcessError``: it is not our child), the write end of
    its "alive" pipe, and locks another thread may have held at the fork. So
    the child forgets that forkserver (closing its copy of the pipe, which
    would keep it alive) and starts its own when it needs one. The resource
    tracker is meant to be shared by every descendant: the child keeps its
    pipe but not its pid, which only the parent may wait for (a dead
    tracker's pid, reused by a child of ours, would be waited for instead).
    """
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is not None:
        for server in (forkserver._forkserver, forkserver_in_use()):  # noqa: SLF001
            if server is not None:
                _forget_forkserver(server)
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    if tracker is not None:
        shared = tracker._resource_tracker  # noqa: SLF001
        shared._lock = threading.RLock()  # noqa: SLF001  (as in Python >= 3.11)
        shared._pid = None  # noqa: SLF001


def _forget_forkserver(server: Any) -> None:
    """In a forked child: drop the parent's ``server`` (its pid, pipe and lock)."""
    server._lock = threading.Lock()  # noqa: SLF001  (multiprocessing's own state)
    if server._forkserver_pid is not None:  # noqa: SLF001  (the parent's)
        os.close(server._forkserver_alive_fd)  # noqa: SLF001
        server._forkserver_address = None  # noqa: SLF001
        server._forkserver_alive_fd = None  # noqa: SLF001
        server._forkserver_pid = None  # noqa: SLF001


_platform.at_fork(after_in_child=_forget_parent_helpers_in_child)


@dataclass(frozen=True)
class Launched:
    """A started worker and the parent's end of its pipe."""

    process: BaseProcess
    conn: Connection
    mark: str


def launch(
    start_method: str,
    name: str,
    target: Callable[..., None],
    *args: object,
    duplex: bool = False,
) -> Launched:
    """Start a worker running ``target(conn, parent_alive, settings, *args)``.

    Args:
        start_method: An available start method (see :func:`choose_start_method`).
        name: The process name, for ``ps``-like tools and logging records.
        target: The worker's entry point (``bootstrap.bootstrap`` for one call,
            ``child_loop.serve`` for a pool worker).
        *args: Its own arguments, after the pipe ends and the settings.
        duplex: Whether the parent also sends on the pipe (a pool worker).
    """
    context = multiprocessing.get_context(start_method)
    mine, theirs = context.Pipe(duplex=duplex)
    mark = new_mark()
    settings = WorkerSettings(
        levels=snapshot(),
        mark=mark,
        # PR_SET_PDEATHSIG fires when the creating *thread* exits: only the
        # main thread (and the forkserver's) lives as long as the process.
        death_signal=start_method == "forkserver"
        or threading.current_thread() is threading.main_thread(),
    )
    process = process_class(start_method)(
        target=target,
        args=(theirs, _parent_alive_reader(), settings, *args),
        name=name,
        daemon=False,  # a worker may start processes of its own
    )
    try:
        with _platform.sigint_blocked():  # until the worker ignores it: no traceback
            process.start()
        # multiprocessing reaps the processes it lists whenever any thread
        # starts another one; only we may wait for this one.
        with contextlib.suppress(AttributeError, KeyError):
            multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]  # noqa: SLF001
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()  # the worker's copy is the last: its exit means EOF
    return Launched(process=process, conn=mine, mark=mark)
