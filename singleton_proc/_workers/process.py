"""One call in a fresh child process: its handle, shaped as ``multiprocessing.Process``.

Each handle has a reader thread that owns the parent's end of the worker's
pipe: it hands logging records to the parent's loggers as they come, keeps
the outcome, and waits on the pipe and on the process sentinel together,
so that a worker that dies without a word (SIGKILL, ``os._exit``, a crash)
is noticed at once and reaped; then ``result()`` says how it ended.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from singleton_proc._base import validate
from singleton_proc._base.waits import (
    STOP_GRACE,
    WORKER_LINGER,
    WORKER_PROBE,
    wait_until,
)
from singleton_proc._errors import UnpicklableError

from .bootstrap import bootstrap
from .errors import TaskTimeoutError, WorkerDiedError, death_message
from .launch import choose_start_method, launch
from .link import WorkerLink, linger_warning, stop_trees, wait_for_any
from .protocol import Kind, dumps_call, loads, name_of, rebuild

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["ProcessHandle"]


_live: weakref.WeakSet[ProcessHandle] = weakref.WeakSet()
#: The kinds of message that end a call.
_OUTCOMES = frozenset({Kind.OK, Kind.RAISED, Kind.FAILED})


class ProcessHandle:
    """A call running in a child process, as returned by :func:`start_process`.

    It has the interface of a started ``multiprocessing.Process`` (``pid``,
    ``name``, ``exitcode``, ``is_alive()``, ``join()``, ``terminate()``,
    ``kill()``, ``sentinel``, ``close()``), plus :meth:`result`,
    :meth:`done`, :meth:`terminate_tree` and a ``with`` block that stops the
    child's tree if it still runs at the end.

    Attributes:
        pid: The child's process id.
        name: Its process name: ``singleton_proc:`` and the function's name.
        start_method: How it was started (``"fork"``, ``"spawn"``, ``"forkserver"``).

    Example:
        >>> from singleton_proc import start_process
        >>> with start_process(pow, 2, 10) as handle:
        ...     print(handle.pid > 0, handle.result(timeout=30))
        True 1024
    """

    def __init__(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                 start_method: str | None) -> None:  # fmt: skip
        """Start the child; see :func:`start_process`."""
        method = choose_start_method(start_method)
        call = dumps_call(fn, args, kwargs)
        self._what = name_of(fn)
        self.name = f"singleton_proc: {self._what}"
        launched = launch(method, self.name, bootstrap, call)
        self._link = WorkerLink(launched, "worker")
        self._owner = os.getpid()  # only it may wait for or stop the child
        self.start_method = method
        self.pid: int = self._link.pid
        self._outcome: tuple[Any, ...] | None = None
        self._exitcode: int | None = None
        self._stopped_because: str | None = None
        self._done = threading.Event()
        # One stop at a time: the caller (timeout, Ctrl-C, terminate_tree) and
        # the reader (a worker lingering after its outcome) may both stop it.
        # The reader reaps with it held: a signal is never sent to a pid that
        # was reaped, and may be another process's by now.
        self._stopping = threading.Lock()
        self._reaped = False
        self._closed = False
        _live.add(self)
        self._reader = threading.Thread(
            target=self._read, name=f"singleton_proc-reader-{self.pid}", daemon=True
        )
        self._reader.start()

    def __repr__(self) -> str:
        """``<ProcessHandle pid=42 fn running>``."""
        state = "done" if self._done.is_set() else "running"
        return f"<ProcessHandle pid={self.pid} {self._what} {state}>"

    @property
    def exitcode(self) -> int | None:
        """The exit status, or the negated signal number; ``None`` while it runs."""
        self._settle_if_exited()
        return self._exitcode

    @property
    def sentinel(self) -> int:
        """A handle that is ready once the child has exited.

        For ``multiprocessing.connection.wait``, to wait for several children
        at once (on POSIX, ``select`` takes it too). Valid until :meth:`close`.
        As ``multiprocessing``'s own, a child started by ``fork`` that
        ``exec``s another program makes it ready then.

        Raises:
            ValueError: the handle was closed.
        """
        self._refuse_if_closed()
        sentinel: int = self._link.process.sentinel
        return sentinel

    def is_alive(self) -> bool:
        """Whether the child has not exited yet."""
        self._settle_if_exited()
        return not self._done.is_set()

    def done(self) -> bool:
        """Whether the call has ended: :meth:`result` would not wait."""
        return not self.is_alive()

    def terminate(self) -> None:
        """Send SIGTERM to the child alone, as ``Process.terminate`` does.

        What the call started is left alone: :meth:`terminate_tree` stops
        all of it. Nothing is sent once the child has ended, or from a
        process forked from ours (the child is not its to stop).
        """
        self._signal(kill=False)

    def kill(self) -> None:
        """Send SIGKILL to the child alone, as ``Process.kill`` does."""
        self._signal(kill=True)

    def close(self) -> None:
        """Release the handle's resources (the sentinel), as ``Process.close`` does.

        Raises:
            ValueError: the child is still running.
        """
        if self._closed:
            return
        if self.is_alive():
            raise ValueError(
                f"cannot close the handle of worker {self.pid} running "
                f"{self._what}: it is still running (join() or terminate() first)"
            )
        self._reader.join()
        with self._stopping:  # one close, whichever thread asks
            if not self._closed:
                self._closed = True
                self._link.release()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the child has ended and been reaped, at most ``timeout`` s.

        Raises:
            RuntimeError: in a process forked from ours since the start, while
                the child ran (only its parent can wait for it).
        """
        timeout = validate.wait_timeout(timeout)
        self._refuse_in_a_forked_child()
        if wait_until(self._done.wait, timeout):
            self._reader.join()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the call and return its value, or raise how it ended.

        Args:
            timeout: Seconds to wait; ``None`` waits as long as it takes.

        Raises:
            TimeoutError: the wait ran out; the child is left running.
            WorkerDiedError: the child ended without reporting (killed,
                crashed, ``os._exit``, ``sys.exit``, or ``terminate_tree``).
            TaskTimeoutError: ``run_process``'s ``timeout`` stopped it.
            UnpicklableError: the result or exception could not cross back.
            RuntimeError: as for :meth:`join`.
            Exception: whatever the call raised, its traceback as ``__cause__``.
        """
        timeout = validate.wait_timeout(timeout)
        self._refuse_in_a_forked_child()
        if not wait_until(self._done.wait, timeout):
            raise TimeoutError(
                f"worker {self.pid} running {self._what} is still running after "
                f"{timeout} s; it was left running (terminate_tree() stops it)"
            )
        self._reader.join()
        return self._value()

    def terminate_tree(self, grace: float = 5.0) -> None:
        """Stop the child and every process it started: SIGTERM, then SIGKILL.

        Does nothing once the child has ended. Afterwards the child is
        reaped, and :meth:`result` raises ``WorkerDiedError`` unless the
        outcome had already arrived.

        Args:
            grace: Seconds between SIGTERM and SIGKILL.
        """
        self._stop(validate.grace(grace), "stopped by terminate_tree()")

    def __enter__(self) -> Self:
        """The handle itself; leaving the block stops the child if it still runs."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the child's tree unless it has ended."""
        grace = 5.0 if exc_type is None else STOP_GRACE
        self._stop(grace, "stopped on leaving its with block")

    def _run_to_end(self, timeout: float | None) -> None:
        """For ``run_process``: wait, stopping the tree on timeout or Ctrl-C."""
        try:
            self.join(timeout)
            if self.is_alive():
                self._stop(0.0, f"killed after its timeout of {timeout} s")
                if self._outcome is None:  # else it made it just in time
                    self._timed_out(timeout)
        except BaseException:
            self._stop(STOP_GRACE, "stopped on Ctrl-C")
            raise

    def _timed_out(self, timeout: float | None) -> None:
        """Raise the error for a call that ran over ``timeout``."""
        raise TaskTimeoutError(
            f"{self._what} ran over its timeout of {timeout} s in worker "
            f"{self.pid}; its process tree was killed. Raise the timeout, "
            "or make the call faster",
            timeout=timeout,
        )

    def _settle_if_exited(self) -> None:
        """If the child has exited, wait the moment until the reader has reaped it.

        So that ``exitcode`` and ``is_alive()`` agree with :attr:`sentinel`,
        which is ready as soon as the child exits; asked without reaping it.
        """
        mine = os.getpid() == self._owner
        if mine and not self._done.is_set() and self._link.looks_exited():
            self.join()

    def _signal(self, *, kill: bool) -> None:
        """SIGKILL or SIGTERM to the child alone, unless it was reaped (or not ours)."""
        if os.getpid() != self._owner:
            return
        with self._stopping:
            if not self._reaped:
                self._link.signal(kill=kill)

    def _refuse_if_closed(self) -> None:
        """Raise ``ValueError`` once :meth:`close` has released the handle."""
        if self._closed:
            raise ValueError(f"the handle of worker {self.pid} was closed")

    def _refuse_in_a_forked_child(self) -> None:
        """Raise if this is a forked copy of the parent and the child ran then.

        The copy has no reader thread: nothing would ever end its wait.
        """
        if os.getpid() != self._owner and not self._done.is_set():
            raise RuntimeError(
                f"worker {self.pid} running {self._what} belongs to process "
                f"{self._owner}, which this process was forked from: only that "
                "process can wait for it or stop it"
            )

    def _stop(self, grace: float, because: str) -> None:
        """Stop the tree (unless it ended) and wait until the child is reaped.

        In a process forked from ours, nothing: the child is not ours to stop
        (leaving a ``with`` block, interpreter exit).
        """
        if os.getpid() != self._owner:
            return
        if not self._done.is_set():
            if self._stopped_because is None:
                self._stopped_because = because
            self._stop_tree(grace)
        self.join()

    def _stop_tree(self, grace: float) -> None:
        """Stop the worker's tree, unless another thread is stopping it already."""
        with self._stopping:
            if not self._done.is_set():
                stop_trees([self._link], grace)

    def _read(self) -> None:
        """The reader thread: dispatch logs, keep the outcome, notice the end."""
        try:
            try:
                self._read_until_end()
            except BaseException:
                self._stop_tree(STOP_GRACE)  # a bug: reap the child all the same
                raise
            finally:
                # Its pipe may end before it does (it closed its descriptors,
                # or exec'd): wait for the exit unlocked, so a stop can come.
                self._link.has_exited(wait=True)
                with self._stopping:
                    self._exitcode = self._link.reap(release=False)
                    self._reaped = True
        finally:
            _live.discard(self)
            self._done.set()

    def _read_until_end(self) -> None:
        """Read messages until end of file or until the child has exited."""
        link = self._link
        linger_until = None  # once the outcome is in: when to stop waiting for the exit
        while True:
            timeout = WORKER_PROBE
            if linger_until is not None:
                timeout = min(WORKER_PROBE, max(0.0, linger_until - time.monotonic()))
            if wait_for_any([link], timeout):
                if not self._receive(block=True):
                    return
                if self._outcome is not None and linger_until is None:
                    linger_until = time.monotonic() + WORKER_LINGER
                continue
            if link.has_exited():
                while self._receive(block=False):  # what it sent last
                    pass
                return
            if linger_until is not None and time.monotonic() >= linger_until:
                linger_warning([link], f"the call of {self._what}")
                self._stop_tree(STOP_GRACE)
                return

    def _receive(self, *, block: bool) -> bool:
        """Handle one message; ``False`` at end of file (or none, not blocking)."""
        received = self._link.receive(block=block)
        if received is None:
            return False
        kind, message = received
        if kind is Kind.LOG:
            return True
        if kind not in _OUTCOMES:
            raise RuntimeError(f"a worker sent a {kind} message to a call: a bug")
        if self._outcome is None:
            self._outcome = message
        return True

    def _value(self) -> Any:
        """The outcome as a value, or the exception that says how it ended."""
        outcome = self._outcome
        if outcome is None:
            raise self._death()
        if Kind.of(outcome) is Kind.OK:
            try:
                return loads(outcome[1])
            except Exception as exc:
                raise UnpicklableError(
                    f"the result of {self._what} from worker {self.pid} could not be "
                    f"unpickled here ({type(exc).__name__}: {exc})",
                    what="the result",
                ) from exc
        raise rebuild(outcome)

    def _death(self) -> WorkerDiedError:
        """The error for a child that ended without reporting an outcome."""
        return WorkerDiedError(
            death_message(self.pid, self._what, self._exitcode, self._stopped_because),
            pid=self.pid,
            exitcode=self._exitcode,
        )


def _stop_all_at_exit() -> None:
    """At interpreter exit, stop the workers still running (before mp joins them)."""
    for handle in list(_live):
        handle._stop(STOP_GRACE, "stopped at interpreter exit")  # noqa: SLF001


atexit.register(_stop_all_at_exit)
