"""The exceptions of the worker side, loaded on first use.

They sit apart from ``_errors`` because ``WorkerDiedError`` derives from
``concurrent.futures.process.BrokenProcessPool``, and a program that only
guards itself with ``SingleInstance`` must not pay for importing
``concurrent.futures`` and ``multiprocessing``.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

from ._errors import SingletonProcError

__all__ = ["TaskTimeoutError", "WorkerDiedError"]


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
