"""``run_process`` and ``start_process``: one call in a fresh child process.

Both start a :class:`~singleton_proc._workers.process.ProcessHandle`;
``run_process`` waits for it, stopping the child's tree on its timeout or
a Ctrl-C.
"""

from __future__ import annotations

from typing import Any

from singleton_proc._base import validate

from .process import ProcessHandle

__all__ = ["run_process", "start_process"]


def start_process(
    fn: Any, /, *args: Any, start_method: str | None = None, **kwargs: Any
) -> ProcessHandle:
    """Start ``fn(*args, **kwargs)`` in a fresh child process; do not wait.

    The call, its result and its exception cross the process boundary by
    pickle, whatever the start method (so what works under ``fork`` works
    under ``spawn``). The child ignores SIGINT, ends by itself if this
    process dies, and forwards its logging records to this process's
    handlers. Use the handle as a context manager to stop the child's tree
    if the block is left before it finished.

    Args:
        fn: The function to call (what the script defines, lambdas and
            closures go by value).
        *args: Positional arguments for ``fn``.
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None``
            picks a safe one (``fork`` only in a single-threaded parent).
        **kwargs: Keyword arguments for ``fn``.

    Returns:
        The :class:`ProcessHandle`: a ``multiprocessing.Process`` (``pid``,
        ``join()``, ``terminate()``, ``sentinel``...), plus
        ``.result(timeout=None)``, ``.done()``, ``.terminate_tree(grace)``.

    Raises:
        UnpicklableError: ``fn`` or an argument cannot be pickled (named).
        ValueError: ``start_method`` is not available here.

    Example:
        >>> from singleton_proc import start_process
        >>> handle = start_process(sum, [1, 2, 3])
        >>> handle.result(timeout=30)
        6
    """
    return ProcessHandle(fn, args, kwargs, start_method)


def run_process(
    fn: Any,
    /,
    *args: Any,
    timeout: float | None = None,
    start_method: str | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``fn(*args, **kwargs)`` in a fresh child process and return its value.

    ``timeout`` and ``start_method`` are ours; every other keyword goes to
    ``fn``. The child has ended and been reaped when this returns or raises.

    Args:
        fn: The function to call (what the script defines, lambdas and
            closures go by value).
        *args: Positional arguments for ``fn``.
        timeout: Seconds the call may take; then the child's whole process
            tree is killed and :class:`TaskTimeoutError` raised.
        start_method: As for :func:`start_process`.
        **kwargs: Keyword arguments for ``fn``.

    Returns:
        What ``fn`` returned.

    Raises:
        Exception: what ``fn`` raised, same type, the child's traceback as
            its ``__cause__``.
        WorkerDiedError: the child died (killed, crashed, exited) first; the
            message names its pid and exit code or signal.
        TaskTimeoutError: ``timeout`` ran out.
        UnpicklableError: the function, an argument, the result or the
            exception cannot be pickled; the message says which.
        KeyboardInterrupt: Ctrl-C; the child's tree was stopped first.

    Example:
        >>> from singleton_proc import run_process
        >>> run_process(pow, 2, 10, timeout=30)
        1024
    """
    timeout = validate.task_timeout(timeout)
    handle = ProcessHandle(fn, args, kwargs, start_method)
    try:
        handle._run_to_end(timeout)  # noqa: SLF001  (the handle's own logic)
        return handle.result()
    finally:
        if handle.done():  # else a Ctrl-C cut the stop short: it is stopped at exit
            handle.close()
