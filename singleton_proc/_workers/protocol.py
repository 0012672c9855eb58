"""What crosses a worker's pipe to its parent, and naming what will not pickle.

A worker sends tuples of plain ``str`` and ``bytes`` (which always pickle),
the objects inside them pickled beforehand, so that a failure is caught
where it happens and named, instead of hanging a queue (CPython #103061).
The first field is the message's :class:`Kind`::

    ("log", record)                     a logging record, see logforward
    ("ok", result)                      the call returned
    ("raised", exception, traceback)    the call raised
    ("failed", what, message, traceback) something could not be (un)pickled

Pool workers add their own kinds (see ``child_loop``); exceptions travel
as :func:`report_exception` makes them and :func:`rebuild` remakes them.
"""

from __future__ import annotations

import contextlib
import enum
import pickle
import socket
import traceback
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from singleton_proc._base.platform import IS_WINDOWS
from singleton_proc._errors import UnpicklableError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "Inherited",
    "Kind",
    "Mode",
    "RemoteTraceback",
    "describe",
    "dumps",
    "dumps_call",
    "dumps_checked",
    "dumps_job",
    "format_traceback",
    "loads",
    "name_of",
    "rebuild",
    "report_exception",
    "task_alone",
    "with_inherited",
]

_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: How a pickle names the main module (a false positive costs only speed).
_MAIN = b"__main__"
#: Pipe ends and sockets: pickled as they are, their descriptor's number
#: would mean nothing in a worker; passed as it starts, it is duplicated.
_DESCRIPTORS = (Connection, socket.socket)
#: Initializer arguments passed as a worker starts: ``(position, object)``.
Inherited = tuple[tuple[int, Any], ...]


class Kind(enum.Enum):
    """What a message from a worker says; on the wire, its value (a ``str``)."""

    LOG = "log"  # (record,): a logging record
    OK = "ok"  # (result,): the call returned
    RAISED = "raised"  # (exception, traceback): the call raised
    FAILED = "failed"  # (what, message, traceback): could not be (un)pickled
    READY = "ready"  # (): a pool worker's initializer ran
    INIT = "init"  # (*report): the function or the initializer failed
    DONE = "done"  # (values, errors, seconds): a chunk ran
    STOPPED = "stopped"  # (offset, *report): an item failed, the rest did not run
    UNREADABLE = "unreadable"  # (*report): a chunk could not be unpickled

    @classmethod
    def of(cls, message: tuple[Any, ...]) -> Kind:
        """The kind of ``message``; one we do not know is a bug, and raises.

        Raises:
            RuntimeError: an unknown kind (a worker and a parent that do not
                speak the same protocol: a bug to report).
        """
        try:
            return cls(message[0])
        except (ValueError, IndexError, TypeError) as exc:
            raise RuntimeError(
                f"a worker sent a message of unknown kind ({describe(message)}): "
                "a bug in singleton_proc, please report it"
            ) from exc


class Mode(enum.Enum):
    """How a pool worker calls its function on each item of a chunk."""

    ONE = "one"  # fn(item)
    NONE = "none"  # fn(): run_in_pool without items, once per worker
    STAR = "star"  # fn(*item): map() over several iterables
    CALL = "call"  # the item is itself a call (fn, args, kwargs): submit()


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
    """Pickle ``obj`` for the parent, by reference, as pickle does.

    The parent runs the script, so what it defines is found there by name;
    only what has no name (a lambda, a closure, a class made in the call)
    goes by value (see ``by_value``).
    """
    try:
        return pickle.dumps(obj, protocol=_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        from .by_value import dumps_by_value  # noqa: PLC0415  (loads cloudpickle)

        return dumps_by_value(obj)


def _for_worker(obj: object) -> bytes:
    """Pickle ``obj`` for a worker: what the script defines by value (``by_value``).

    Plain pickle is tried first (several times faster on plain data, and
    cloudpickle is loaded only when needed); its bytes name a module only
    as text, so a reference to ``__main__`` shows in them.
    """
    by_reference: bytes | None = None
    with contextlib.suppress(pickle.PicklingError, AttributeError, TypeError):
        by_reference = pickle.dumps(obj, protocol=_PROTOCOL)
    if by_reference is not None and _MAIN not in by_reference:
        return by_reference
    from .by_value import for_worker  # noqa: PLC0415  (loads cloudpickle)

    return for_worker(obj, by_reference)


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
        return _for_worker(obj)
    except BaseException as error:  # pickle raises many types, SystemExit too
        if not task_alone(error):
            raise
        for what, part in parts:
            try:
                _for_worker(part)
            except BaseException as exc:
                if not task_alone(exc):
                    raise
                raise _unpicklable(what, part, exc) from exc
        raise _unpicklable(whole, obj, error) from error


def dumps_job(
    fn: object, initializer: object, initargs: tuple[Any, ...], start_method: str
) -> tuple[bytes, Inherited]:
    """Pickle a pool's job (its function, initializer and initializer arguments).

    ``multiprocessing``'s queues, locks, events, semaphores and shared values
    and arrays refuse to be pickled but while a process starts ("shared
    between processes through inheritance"), and pipe ends and sockets would
    be pickled as a number that means nothing in another process: that is
    how ``ProcessPoolExecutor`` passes them. Such arguments are left out of
    the job (``None`` in their place) and returned, to go with each worker's
    start; :func:`with_inherited` puts them back.

    Raises:
        UnpicklableError: which part will not pickle; the cause is the error.
        RuntimeError: a lock among them was made for ``fork`` and the workers
            start by ``start_method`` (where it would crash them, or be
            refused by ``multiprocessing`` as they start).
    """
    if not any(isinstance(arg, _DESCRIPTORS) for arg in initargs):
        try:
            return _for_worker((fn, initializer, initargs)), ()
        except BaseException as error:  # pickle raises many types, SystemExit too
            if not task_alone(error):
                raise
    inherited = tuple((i, arg) for i, arg in enumerate(initargs) if _inherited(arg))
    for position, arg in inherited:
        if start_method != "fork" and not IS_WINDOWS and _holds_fork_lock(arg):
            raise RuntimeError(
                f"initializer argument {position + 1} ({type(arg).__name__}) holds "
                "a lock made for the 'fork' start method (multiprocessing's "
                "default on Linux before Python 3.14); this pool starts its "
                f"workers by "
                f"{start_method!r}: make it with multiprocessing.get_context("
                f"{start_method!r}), or pass the pool start_method='fork'"
            )
    kept = with_inherited(initargs, tuple((i, None) for i, _ in inherited))
    parts = [("the function", fn), ("the initializer", initializer)]
    parts += [(f"initializer argument {i}", arg) for i, arg in enumerate(kept, 1)]
    return dumps_checked((fn, initializer, kept), parts, "the pool's job"), inherited


def with_inherited(args: tuple[Any, ...], inherited: Inherited) -> tuple[Any, ...]:
    """``args`` with each ``(position, object)`` of ``inherited`` in its place."""
    merged = list(args)
    for position, obj in inherited:
        merged[position] = obj
    return tuple(merged)


def _inherited(obj: object) -> bool:
    """Whether ``obj`` is passed as a process starts (see :func:`dumps_job`)."""
    if isinstance(obj, _DESCRIPTORS):
        return True
    try:
        ForkingPickler.dumps(obj)  # multiprocessing's pickler knows its objects
    except RuntimeError as exc:
        return "through inheritance" in str(exc)
    except BaseException as exc:
        if not task_alone(exc):
            raise
    return False


def _holds_fork_lock(obj: object, depth: int = 4) -> bool:
    """Whether ``obj`` is or holds a lock made for ``fork`` (a few levels deep).

    Such a lock is unnamed: another start method finds it by its address in
    the parent (a crash, Python 3.10) or refuses it (3.11+). Looked for in
    lists, tuples, dicts and ``multiprocessing``'s own objects (a queue's
    locks, an event's condition, a synchronized value's lock).
    """
    from multiprocessing.synchronize import SemLock  # noqa: PLC0415  (absent on some platforms)

    if isinstance(obj, SemLock):
        return obj._semlock.name is None  # type: ignore[attr-defined]  # noqa: SLF001
    if depth == 0:
        return False
    if isinstance(obj, (list, tuple)):
        parts: Iterable[object] = obj
    elif isinstance(obj, dict):
        parts = obj.values()
    elif type(obj).__module__.startswith("multiprocessing.") and hasattr(
        obj, "__dict__"
    ):
        parts = vars(obj).values()
    else:
        return False
    return any(_holds_fork_lock(part, depth - 1) for part in parts)


def task_alone(error: BaseException) -> bool:
    """Whether ``error``, raised here while handling one task, is that task's alone.

    Pickling a task's arguments or unpickling its result runs the user's
    code (``__reduce__``, ``__setstate__``), which may raise anything, even
    ``SystemExit``: that fails the task, never the pool or the program. A
    ``KeyboardInterrupt`` is a Ctrl-C wherever it lands, and stays one.
    """
    return not isinstance(error, KeyboardInterrupt)


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
        "what it refers to (the object of a bound method, its closure, the "
        "globals it uses) must pickle too: create such things inside the "
        "worker (initializer=), or pass plain data"
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
        return (Kind.FAILED.value, "the exception", message, text)
    return (Kind.RAISED.value, payload, text)


def rebuild(report: tuple[Any, ...]) -> BaseException:
    """In the parent: the exception a worker reported, its traceback as the cause.

    ``report`` is ``("raised", exception, traceback)`` or ``("failed", what,
    message, traceback)``; the latter becomes an :class:`UnpicklableError`.
    """
    kind = Kind.of(report)
    if kind is Kind.RAISED:
        try:
            error: BaseException = loads(report[1])
        except BaseException as exc:  # pragma: no cover - checked in the worker
            if not task_alone(exc):
                raise
            error = UnpicklableError(
                f"the exception raised in a worker could not be unpickled here "
                f"({type(exc).__name__}: {exc})",
                what="the exception",
            )
    elif kind is Kind.FAILED:
        _, what, message, _ = report
        error = UnpicklableError(message, what=what)
    else:
        raise RuntimeError(f"{kind} is not an exception's report: a bug")
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
