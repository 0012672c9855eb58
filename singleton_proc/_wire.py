"""What crosses a worker's pipe to its parent, and naming what will not pickle.

A worker sends tuples of plain ``str`` and ``bytes`` (which always pickle),
the objects inside them pickled beforehand, so that a failure is caught
where it happens and named, instead of hanging a queue (CPython #103061)::

    ("log", record)                     a logging record, see _logforward
    ("ok", result)                      the call returned
    ("raised", exception, traceback)    the call raised
    ("failed", what, message, traceback) something could not be (un)pickled
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

from ._errors import SingletonProcError

__all__ = [
    "RemoteTraceback",
    "UnpicklableError",
    "describe",
    "dumps",
    "dumps_call",
    "format_traceback",
    "loads",
]

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class UnpicklableError(SingletonProcError, pickle.PicklingError):
    """Something that must cross the process boundary cannot be (un)pickled.

    Raised instead of a hang or a cryptic error for the function, an
    argument, the result or the exception of a call run in a worker.

    Attributes:
        what: Which thing it was (``"the function"``, ``"argument 2"``,
            ``"keyword argument 'size'"``, ``"the result"``,
            ``"the exception"``).

    Example:
        >>> import threading
        >>> from singleton_proc._wire import dumps_call
        >>> try:
        ...     dumps_call(print, (threading.Lock(),), {})
        ... except UnpicklableError as exc:
        ...     print(exc.what)
        argument 1
    """

    def __init__(self, message: str, *, what: str = "") -> None:
        """Store the message and which thing could not be pickled."""
        super().__init__(message)
        self.what = what


class RemoteTraceback(Exception):  # noqa: N818  (named like concurrent.futures')
    """The worker's traceback, set as ``__cause__`` of an exception re-raised here.

    Example:
        >>> RemoteTraceback("Traceback (most recent call last): ...").text[:9]
        'Traceback'
    """

    def __init__(self, text: str) -> None:
        """Keep the formatted traceback text of the worker."""
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        """The traceback, fenced so that it reads as quoted output."""
        return f'\n"""\n{self.text}"""'


def format_traceback(exc: BaseException) -> str:
    """``exc`` with its traceback and chained causes, as Python prints it."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def dumps(obj: object) -> bytes:
    """Pickle ``obj`` with the highest protocol."""
    return pickle.dumps(obj, protocol=_PROTOCOL)


def loads(data: bytes) -> Any:
    """Unpickle what :func:`dumps` made."""
    return pickle.loads(data)  # noqa: S301  (our own worker's data)


def dumps_call(fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call for a worker, or raise naming the part that will not pickle.

    Raises:
        UnpicklableError: ``fn``, an argument or a keyword argument cannot be
            pickled; ``.what`` says which, the original error is the cause.
    """
    try:
        return dumps((fn, args, kwargs))
    except Exception as whole:  # pickle raises many types
        parts: list[tuple[str, object]] = [("the function", fn)]
        parts += [(f"argument {i}", arg) for i, arg in enumerate(args, 1)]
        parts += [(f"keyword argument {key!r}", val) for key, val in kwargs.items()]
        for what, part in parts:
            try:
                dumps(part)
            except Exception as exc:
                raise _unpicklable(what, part, exc) from exc
        raise _unpicklable("the call", (fn, args, kwargs), whole) from whole


def _unpicklable(what: str, obj: object, exc: BaseException) -> UnpicklableError:
    """The error for ``obj`` (``what``) that could not be sent to a worker."""
    advice = (
        "pass a function defined at module level (not a lambda, a nested "
        "function or a method of an object that cannot be pickled)"
        if what == "the function"
        else "pass plain data, or create the object inside the worker"
    )
    return UnpicklableError(
        f"cannot send {what} ({describe(obj)}) to a worker process: it cannot "
        f"be pickled ({type(exc).__name__}: {exc}); {advice}",
        what=what,
    )


def describe(obj: object) -> str:
    """``obj`` for messages: its type, and its repr cut to a readable length."""
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001  (a broken __repr__ must not hide the error)
        text = "?"
    if len(text) > 80:  # noqa: PLR2004
        text = text[:77] + "..."
    return f"{type(obj).__name__}: {text}"
