"""What crosses a worker's pipe to its parent, and naming what will not pickle.

A worker sends tuples of plain ``str`` and ``bytes`` (which always pickle),
the objects inside them pickled beforehand, so that a failure is caught
where it happens and named, instead of hanging a queue (CPython #103061)::

    ("log", record)                     a logging record, see _logforward
    ("ok", result)                      the call returned
    ("raised", exception, traceback)    the call raised
    ("failed", what, message, traceback) something could not be (un)pickled

Pool workers add their own messages (see _pool_worker); exceptions travel
as :func:`report_exception` makes them and :func:`rebuild` remakes them.
"""

from __future__ import annotations

import pickle
import traceback
from typing import TYPE_CHECKING, Any

from ._errors import SingletonProcError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "RemoteTraceback",
    "UnpicklableError",
    "describe",
    "dumps",
    "dumps_call",
    "dumps_checked",
    "format_traceback",
    "loads",
    "name_of",
    "rebuild",
    "report_exception",
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


def loads(data: bytes | memoryview) -> Any:
    """Unpickle what :func:`dumps` made."""
    return pickle.loads(data)  # noqa: S301  (our own worker's data)


def dumps_checked(
    obj: object, parts: Iterable[tuple[str, object]], whole: str
) -> bytes:
    """Pickle ``obj``, or raise naming which of its ``parts`` will not pickle.

    Args:
        obj: What to pickle.
        parts: ``(what, part)`` pairs that make up ``obj``, looked at one by
            one only when ``obj`` fails, to name the culprit.
        whole: How to name ``obj`` if no single part is to blame.

    Raises:
        UnpicklableError: ``.what`` says which part; the original error is
            the cause.
    """
    try:
        return dumps(obj)
    except Exception as error:  # pickle raises many types
        for what, part in parts:
            try:
                dumps(part)
            except Exception as exc:
                raise _unpicklable(what, part, exc) from exc
        raise _unpicklable(whole, obj, error) from error


def dumps_call(fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call for a worker, or raise naming the part that will not pickle.

    Raises:
        UnpicklableError: ``fn``, an argument or a keyword argument cannot be
            pickled; ``.what`` says which, the original error is the cause.
    """
    parts: list[tuple[str, object]] = [("the function", fn)]
    parts += [(f"argument {i}", arg) for i, arg in enumerate(args, 1)]
    parts += [(f"keyword argument {key!r}", val) for key, val in kwargs.items()]
    return dumps_checked((fn, args, kwargs), parts, "the call")


def _unpicklable(what: str, obj: object, exc: BaseException) -> UnpicklableError:
    """The error for ``obj`` (``what``) that could not be sent to a worker."""
    advice = (
        "pass a function defined at module level (not a lambda, a nested "
        "function or a method of an object that cannot be pickled)"
        if what in {"the function", "the initializer"}
        else "pass plain data, or create the object inside the worker"
    )
    return UnpicklableError(
        f"cannot send {what} ({describe(obj)}) to a worker process: it cannot "
        f"be pickled ({type(exc).__name__}: {exc}); {advice}",
        what=what,
    )


def report_exception(exc: BaseException) -> tuple[str | bytes, ...]:
    """In a worker: ``exc`` as a message for the parent (see :func:`rebuild`).

    ``("raised", exception, traceback)``, or, when the exception will not
    cross, ``("failed", "the exception", message, traceback)``.
    """
    text = format_traceback(exc)
    try:
        payload = dumps(exc)
        loads(payload)  # an __init__ with required arguments pickles, then fails
    except Exception as bad:  # noqa: BLE001  (pickle raises many types)
        message = (
            f"the call raised {type(exc).__qualname__}: {exc}, which cannot be "
            f"pickled to re-raise it in the parent ({type(bad).__name__}: {bad}); "
            "give the exception class a __reduce__ or pass all its arguments "
            "on to Exception.__init__"
        )
        return ("failed", "the exception", message, text)
    return ("raised", payload, text)


def rebuild(report: tuple[Any, ...]) -> BaseException:
    """In the parent: the exception a worker reported, its traceback as the cause.

    ``report`` is ``("raised", exception, traceback)`` or ``("failed", what,
    message, traceback)``; the latter becomes an :class:`UnpicklableError`.
    """
    if report[0] == "raised":
        try:
            error: BaseException = loads(report[1])
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - checked there
            error = UnpicklableError(
                f"the exception raised in a worker could not be unpickled here "
                f"({type(exc).__name__}: {exc})",
                what="the exception",
            )
    else:
        _, what, message, _ = report
        error = UnpicklableError(message, what=what)
    error.__cause__ = RemoteTraceback(report[-1])
    return error


def name_of(fn: object) -> str:
    """A function's name for messages (a ``functools.partial``'s function's)."""
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "__qualname__", None) or repr(inner)


def describe(obj: object) -> str:
    """``obj`` for messages: its type, and its repr cut to a readable length."""
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001  (a broken __repr__ must not hide the error)
        text = "?"
    if len(text) > 80:  # noqa: PLR2004
        text = text[:77] + "..."
    return f"{type(obj).__name__}: {text}"
