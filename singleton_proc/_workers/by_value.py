"""What the main script defines, sent to workers by value, into one namespace there.

A worker never imports the parent's main module (see ``main_free``), so
the functions and classes of the script, a program fed through stdin, a
notebook or the REPL cannot be found there by name: they go by value, with
cloudpickle. Plain cloudpickle gives each message's functions a fresh copy
of the globals they use: a global an initializer sets would be set in a
dict no task sees, and a class sent back would have its methods replaced,
in the parent, by copies bound to stale globals. So a function of
``__main__`` is rebuilt with the ``__main__`` namespace of the process that
unpickles it as its globals:

- in a worker, that namespace fills as definitions arrive: a function or a
  class replaces the one of its name (the parent may have redefined it),
  data is set only where missing (a worker keeps what it set itself, as a
  forked one keeps its copy);
- in the process that runs the script, nothing of it is replaced: a class
  that comes back whole is left as it is.

Everything importable goes by reference, as pickle sends it.
"""

from __future__ import annotations

import functools
import io
import pickle
import sys
import types
from typing import Any

__all__ = ["dumps_by_value", "fill_main_here", "for_worker"]

_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Whether this process is a worker, whose ``__main__`` fills as definitions come.
_filling = False


def fill_main_here() -> None:
    """In a worker, as it starts: the script's definitions fill ``__main__``."""
    global _filling  # noqa: PLW0603  (once, as the worker starts)
    _filling = True


def for_worker(obj: object, by_reference: bytes | None) -> bytes:
    """Pickle ``obj`` for a worker by value, or else as ``by_reference``.

    ``by_reference`` is what plain pickle made of it (``None``: it failed).
    What cannot go by value (a function whose globals hold a lock) goes by
    reference after all, which a worker started by ``fork`` after its
    definition can follow.

    Raises:
        Exception: what pickling raised, when neither way works.
    """
    try:
        return dumps_by_value(obj)
    except Exception:
        if by_reference is None:
            raise
        return by_reference


def dumps_by_value(obj: object) -> bytes:
    """Pickle ``obj`` with cloudpickle, the script's functions rebuilt as above."""
    buffer = io.BytesIO()
    _main_pickler()(buffer, protocol=_PROTOCOL).dump(obj)
    return buffer.getvalue()


class _MainNamespace:
    """Stands for the ``__main__`` namespace of the process that unpickles it."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return main_namespace, ()


_MAIN_NAMESPACE = _MainNamespace()


def main_namespace() -> dict[str, Any]:
    """The ``__main__`` namespace of this process."""
    return vars(sys.modules["__main__"])


@functools.cache  # made on first use: cloudpickle is imported only then
def _main_pickler() -> type[Any]:
    """The pickler of cloudpickle, the script's functions and classes rebuilt."""
    import cloudpickle  # type: ignore[import-untyped]  # noqa: PLC0415

    class MainPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            reduced = super().reducer_override(obj)
            if (
                isinstance(obj, type)
                and obj.__module__ == "__main__"
                and isinstance(reduced, tuple)
                and len(reduced) == 6  # noqa: PLR2004  (a class by value)
            ):
                return (*reduced[:5], _set_class_state)
            return reduced

        def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
            reduced = super()._dynamic_function_reduce(func)
            if func.__globals__ is not main_namespace():
                return reduced
            make, (code, _, name, defaults, closure), state, items, pairs, _ = reduced
            newargs = (code, _MAIN_NAMESPACE, name, defaults, closure)
            return make, newargs, state, items, pairs, _set_function_state

    return MainPickler


def _set_function_state(func: types.FunctionType, state: Any) -> None:
    """Finish a function of ``__main__`` rebuilt on this process's namespace."""
    state, slotstate = state
    namespace = func.__globals__
    builtins = namespace.get("__builtins__")
    used = slotstate["__globals__"]
    slotstate["__globals__"] = {}
    if _filling:
        for name, value in used.items():
            if name not in namespace or _definition(value):
                namespace[name] = value
    _cloudpickle()._function_setstate(func, (state, slotstate))  # noqa: SLF001
    if builtins is not None:  # cloudpickle sets its own
        namespace["__builtins__"] = builtins
    top_level = func.__qualname__ == func.__name__ != "<lambda>"
    if _filling and top_level:
        namespace[func.__name__] = func


def _set_class_state(cls: type, state: Any) -> type:
    """Finish a class of ``__main__``, unless it is whole already.

    The tracker of cloudpickle hands back the very class it was pickled
    from where it exists (the parent's, or one rebuilt here before): its
    methods are not replaced.
    """
    attributes = state[0]
    if all(name in vars(cls) for name in attributes):
        return cls
    _cloudpickle()._class_setstate(cls, state)  # noqa: SLF001
    if _filling and cls.__qualname__ == cls.__name__:
        main_namespace()[cls.__name__] = cls
    return cls


def _definition(value: object) -> bool:
    """Whether ``value`` is code the parent defines (it wins) rather than data."""
    return isinstance(value, (types.FunctionType, type, types.ModuleType))


def _cloudpickle() -> Any:
    """The module of cloudpickle (loaded already: what is unpickled names it)."""
    from cloudpickle import cloudpickle  # noqa: PLC0415

    return cloudpickle
