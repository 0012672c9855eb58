"""The parent's end of one worker: its pipe, noticing its end, stopping its tree.

One implementation for every worker kind: a ``run_process`` call's handle
and each pool worker hold a :class:`WorkerLink`, read their messages with
it, wait on any number of them at once (pipes and process sentinels
together, so that a worker that dies without a word is noticed at once),
stop their process trees with one grace period for all, and reap them.

Only the process that started a worker may wait for it or stop it: a
worker is started as nobody else's child (see ``launch``), so its pid stays
ours until we reap it and a stop can never reach a reused pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from singleton_proc._base.tree import TreeRoot, stopping_trees
from singleton_proc._base.waits import WORKER_LINGER, run_blocking

from .logforward import dispatch
from .protocol import Kind

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from multiprocessing.connection import Connection

    from .launch import Launched

__all__ = ["WorkerLink", "linger_warning", "stop_trees", "wait_for_any"]

#: How long a process whose sentinel is ready may take to be a zombie.
_EXIT_GAP = 0.1

_L = TypeVar("_L", bound="WorkerLink")

_log = logging.getLogger("singleton_proc")


class WorkerLink:
    """A started worker as its parent holds it.

    Attributes:
        pid: The worker's process id.
        label: How the log names it (``"worker 42"``, ``"pool worker 42"``).
        eof: Its pipe has ended (it exited, or closed its end).
    """

    def __init__(self, launched: Launched, label: str) -> None:
        """Hold ``launched``; ``label`` is followed by the pid in the log."""
        self.process = launched.process
        self.conn = launched.conn
        pid = self.process.pid
        assert pid is not None  # noqa: S101  (started)
        self.pid: int = pid
        self.label = f"{label} {pid}"
        self.mark = launched.mark  # what its descendants carry, daemons included
        self.eof = False
        # Nobody else reaps it, so the pid stays ours until we do: psutil can
        # look it up even if it died already.
        try:
            self.root: psutil.Process | None = psutil.Process(pid)
        except psutil.NoSuchProcess:  # pragma: no cover - reaped behind our back
            self.root = None

    def receive(self, *, block: bool = True) -> tuple[Kind, tuple[Any, ...]] | None:
        """The next message and its kind; a logging record is delivered here.

        Returns:
            ``(kind, message)`` (a record already handed to the parent's
            loggers comes back as ``Kind.LOG``, for the caller to count);
            ``None`` at end of file (:attr:`eof` is then set) or, with
            ``block=False``, when nothing has come yet.

        Raises:
            RuntimeError: a message of a kind we do not know (a bug).
        """
        if self.eof:
            return None
        try:
            if not block and not self.conn.poll(0):
                return None
            message = self.conn.recv()
        except (EOFError, OSError):
            self.eof = True
            return None
        kind = Kind.of(message)
        if kind is Kind.LOG:
            try:
                dispatch(message[1])
            except Exception:  # noqa: BLE001  (a broken handler must not stop us)
                _log.exception("could not log a record of %s", self.label)
        return kind, message

    def signal(self, *, kill: bool) -> None:
        """SIGKILL (or SIGTERM) to the worker alone, if it has not exited yet.

        Only while it is not reaped: until then its pid cannot be another's.
        """
        if self.root is None:  # pragma: no cover - reaped behind our back
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            if kill:
                self.root.kill()
            else:
                self.root.terminate()

    def has_exited(self, *, wait: bool = False) -> bool:
        """Whether its process has ended; with ``wait``, once it has.

        A child of ours is left to :meth:`reap` (until then its pid cannot
        be another process's). Not its sentinel, which a worker started by
        ``fork`` closes as it ``exec``s another program, long before it
        ends. Only the thread that reaps it may ask (its process object is
        not thread-safe); any thread may ask :meth:`looks_exited`.
        """
        if hasattr(os, "waitid"):  # POSIX: ask the kernel, without reaping
            flags = os.WEXITED | os.WNOWAIT | (0 if wait else os.WNOHANG)
            with contextlib.suppress(ChildProcessError):  # the forkserver's child
                return os.waitid(os.P_PID, self.pid, flags) is not None
        if wait:
            self.process.join()
        return not self.process.is_alive()

    def looks_exited(self) -> bool:
        """Whether its process has ended, asked of any thread.

        Gone or a zombie, it has. Else a ready sentinel means it is exiting
        (its descriptors close a moment before it is a zombie), or, started
        by fork, that it ``exec``ed and runs on: so it must also be a zombie
        within a moment. Not the sentinel alone: a ``forkserver`` child's is
        the server's socket, which says the exit status, and once the reader
        thread has read that it is not ready until the server closes it.
        """
        if self._zombie():
            return True
        if not wait([self.process.sentinel], 0):
            return False
        deadline = time.monotonic() + _EXIT_GAP
        while not self._zombie():
            if time.monotonic() > deadline:
                return False
            time.sleep(_EXIT_GAP / 50)
        return True

    def _zombie(self) -> bool:
        """Whether its process has exited (a zombie, or gone)."""
        if self.root is None:  # pragma: no cover - reaped behind our back
            return True
        try:
            return self.root.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    def reap(self, *, release: bool = True) -> int | None:
        """Wait for the exited process and return its exit code.

        Its pipe is closed; the process object too (its sentinel), unless
        ``release`` is false: then :meth:`release` does it later.
        """
        self.process.join()
        exitcode = self.process.exitcode
        self.conn.close()
        if release:
            self.release()
        return exitcode

    def release(self) -> None:
        """Close the reaped process object: its sentinel is no longer valid."""
        self.process.close()


def wait_for_any(
    links: Iterable[_L], timeout: float, also: Sequence[Connection] = ()
) -> list[_L]:
    """Wait up to ``timeout`` for a message from, or the end of, any of ``links``.

    Returns:
        Those with a message (or end of file) to read; those that exited
        are found by :meth:`WorkerLink.has_exited`. ``also`` only wakes it.
    """
    links = list(links)
    conns = {link.conn: link for link in links if not link.eof}
    sentinels = [link.process.sentinel for link in links]
    ready = wait([*conns, *sentinels, *also], timeout)
    return [conns[r] for r in ready if r in conns]


def stop_trees(links: Iterable[WorkerLink], grace: float) -> None:
    """Stop these workers' trees together: SIGTERM, ``grace``, SIGKILL."""
    roots = [
        TreeRoot(link.root, link.label, link.mark)
        for link in links
        if link.root is not None
    ]
    if roots:
        run_blocking(stopping_trees(roots, grace))


def linger_warning(links: Iterable[WorkerLink], what: str) -> None:
    """Log that workers did ``what`` but did not exit :data:`WORKER_LINGER` s on."""
    _log.warning(
        "%s did not exit %g s after %s was done (a non-daemon thread?); "
        "stopping the process tree",
        ", ".join(link.label for link in links),
        WORKER_LINGER,
        what,
    )
