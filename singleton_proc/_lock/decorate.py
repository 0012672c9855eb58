"""Decorating with a context manager: sync and async functions, held per call.

``contextlib.ContextDecorator`` is not enough: around an ``async def`` it
would release the lock as soon as the coroutine object is created, before
its body runs. Here a coroutine function gets an ``async def`` wrapper that
holds the lock for the whole coroutine.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["decorate"]

_F = TypeVar("_F", bound="Callable[..., Any]")


class _SyncAndAsync(Protocol):
    """A context manager usable with both ``with`` and ``async with``."""

    def __enter__(self) -> object: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    async def __aenter__(self) -> object: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def decorate(new_manager: Callable[[], _SyncAndAsync], func: _F) -> _F:
    """Wrap ``func`` so that every call runs inside a fresh ``new_manager()``.

    Raises:
        TypeError: ``func`` is not callable, or is a generator function
            (sync or async): the name would be released when the generator
            object is created, before its body runs. Decorate the function
            that iterates it instead.
    """
    if not callable(func):
        raise TypeError(f"cannot decorate {func!r}: it is not callable")
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"cannot decorate the generator function {func!r}: the name would be "
            "released before its body runs; decorate the function that iterates it"
        )
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004  (an object with async __call__)
    ):

        @functools.wraps(func)
        async def hold_while_awaited(*args: Any, **kwargs: Any) -> Any:
            async with new_manager():
                return await func(*args, **kwargs)

        return cast("_F", hold_while_awaited)

    @functools.wraps(func)
    def hold_while_running(*args: Any, **kwargs: Any) -> Any:
        with new_manager():
            return func(*args, **kwargs)

    return cast("_F", hold_while_running)
