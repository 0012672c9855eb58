"""The exceptions of the worker side, loaded on first use.

They sit apart from ``_errors`` because ``WorkerDiedError`` derives from
``concurrent.futures.process.BrokenProcessPool``, and a program that only
guards itself with ``SingleInstance`` must not pay for importing
``concurrent.futures`` and ``multiprocessing``.
"""

from __future__ import annotations

import signal
from concurrent.futures.process import BrokenProcessPool

from singleton_proc._errors import SingletonProcError

from .bootstrap import PIPE_LOST_EXIT

__all__ = [
    "WHILE_RUNNING",
    "WHILE_SENDING",
    "TaskTimeoutError",
    "WorkerDiedError",
    "death_message",
]


class WorkerDiedError(SingletonProcError, BrokenProcessPool):
    """A worker process ended without reporting the result of its task.

    It was killed (SIGKILL, often the OOM killer), called ``os._exit``,
    crashed (SIGSEGV) or was stopped from outside.

    Attributes:
        pid: The worker's process id, when known.
        exitcode: Its exit status, or the negated signal number when a
            signal ended it (as ``multiprocessing.Process.exitcode``).

    Example:
        >>> err = WorkerDiedError("worker 41 died (SIGKILL)", pid=41, exitcode=-9)
        >>> err.exitcode
        -9
    """

    def __init__(
        self, message: str, *, pid: int | None = None, exitcode: int | None = None
    ) -> None:
        """Store the message, the worker's pid and how it ended."""
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode


class TaskTimeoutError(SingletonProcError, TimeoutError):
    """A task ran longer than its ``timeout``; its worker's tree was killed.

    Attributes:
        timeout: The limit, in seconds, that the task exceeded.

    Example:
        >>> TaskTimeoutError("task 3 ran over 2.0 s", timeout=2.0).timeout
        2.0
    """

    def __init__(self, message: str, *, timeout: float | None = None) -> None:
        """Store the message and the limit that ran out."""
        super().__init__(message)
        self.timeout = timeout


_SIGNAL_HINTS = {
    "SIGKILL": " (often the OOM killer: check the kernel log, dmesg)",
    "SIGSEGV": " (a crash in native code)",
    "SIGBUS": " (a crash in native code)",
    "SIGABRT": " (abort() in native code)",
    "SIGTERM": " (stopped from outside)",
}


#: The stages a worker dies in, as :func:`death_message` names them: running
#: the call, or sending its result back (the call had returned).
WHILE_RUNNING = "running"
WHILE_SENDING = "sending the result of"


def death_message(
    pid: int,
    what: str,
    exitcode: int | None,
    because: str | None = None,
    *,
    stage: str = WHILE_RUNNING,
) -> str:
    """Say how worker ``pid`` ended in ``stage`` of ``what``: the exit code or signal.

    Example:
        >>> death_message(4242, "work", -9)  # doctest: +ELLIPSIS
        'worker 4242 running work was killed by SIGKILL (often the OOM killer...'
        >>> death_message(4242, "work", 76, stage=WHILE_SENDING)  # doctest: +ELLIPSIS
        'worker 4242 sending the result of work lost its pipe to the parent and...'
    """
    head = f"worker {pid} {stage} {what}"
    returned = stage != WHILE_RUNNING
    ending = "before the parent had it" if returned else "before it returned"
    if because is not None:
        return f"{head} was {because} {ending}"
    if exitcode is None:
        return f"{head} ended without reporting a result"
    if exitcode == PIPE_LOST_EXIT:
        return (
            f"{head} lost its pipe to the parent and exited {ending} (did the "
            "call close file descriptors it had not opened, such as "
            "os.closerange(3, ...)?)"
        )
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = _SIGNAL_HINTS.get(name, "")
        return f"{head} was killed by {name}{hint} {ending}"
    if returned:
        return f"{head} exited with code {exitcode} {ending}"
    return (
        f"{head} exited with code {exitcode} before it returned "
        "(os._exit() or sys.exit() in the call?)"
    )
