"""Worker processes that never import the parent's main module, under any start method.

Under ``spawn`` and ``forkserver``, ``multiprocessing`` has each child import
the parent's main script (as ``__mp_main__``) before it runs anything: an
unguarded script (no ``if __name__ == "__main__":``) re-runs its top level
there, and fails with "An attempt has been made to start a new process
before the current process has finished its bootstrapping phase". Our
workers need nothing from it: what the script defines travels by value
(``protocol.dumps``). So our processes are started by the standard
machinery with one change, the preparation data without the two entries
that import the main module (``sys.path``, the working directory and the
rest are kept). Under ``forkserver`` they come from a server of our own,
which preloads our worker modules and never the main module; the
program's own forkserver and its preload are left as they were.

Nothing of ``multiprocessing`` is patched: the standard ``Popen`` method
that prepares a child runs unchanged, its code bound to a view of the
``spawn`` and ``forkserver`` modules in which only those two functions
differ. The program's own processes start exactly as before. Under
``fork`` the child is a copy of this process and imports nothing.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import types
from typing import TYPE_CHECKING, Any

from singleton_proc._base.platform import IS_WINDOWS

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.process import BaseProcess

__all__ = ["forkserver_in_use", "process_class"]

#: The entries of ``spawn.get_preparation_data`` that import the main module.
_MAIN_ENTRIES = ("init_main_from_name", "init_main_from_path")
#: What our forkserver imports once, so that each worker starts warm.
_PRELOAD = ["singleton_proc._workers.bootstrap", "singleton_proc._workers.child_loop"]
#: Our forkserver, once started (see :func:`forkserver_in_use`).
_server: Any = None


class _ModuleView:
    """A module, but for the functions given: what rebound code sees."""

    def __init__(
        self, module: types.ModuleType, **functions: Callable[..., Any]
    ) -> None:
        self._module = module
        self.__dict__.update(functions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _preparation_data(name: str) -> dict[str, Any]:
    """``spawn.get_preparation_data``, without importing the main module."""
    from multiprocessing import spawn  # noqa: PLC0415  (loaded with the start method)

    data: dict[str, Any] = spawn.get_preparation_data(name)
    for entry in _MAIN_ENTRIES:
        data.pop(entry, None)
    return data


def _rebound(function: Any, **views: _ModuleView) -> Any:
    """``function``'s own code, some of its module's globals seen through ``views``."""
    return types.FunctionType(
        function.__code__, {**function.__globals__, **views}, function.__name__,
        function.__defaults__, function.__closure__)  # fmt: skip


def _popen(start_method: str) -> type[Any]:
    """``start_method``'s standard ``Popen``, preparing children without main."""
    from multiprocessing import spawn  # noqa: PLC0415

    spawn_view = _ModuleView(spawn, get_preparation_data=_preparation_data)
    if start_method == "forkserver":
        from multiprocessing import forkserver, popen_forkserver  # noqa: PLC0415

        server_view = _ModuleView(
            forkserver, connect_to_new_process=_our_server().connect_to_new_process
        )
        base: Any = popen_forkserver.Popen
        views = {"spawn": spawn_view, "forkserver": server_view}
    elif IS_WINDOWS:  # pragma: no cover - by design (its Popen prepares in __init__)
        from multiprocessing import popen_spawn_win32  # noqa: PLC0415

        base = popen_spawn_win32.Popen  # type: ignore[attr-defined]
        init = _rebound(base.__init__, spawn=spawn_view)
        return type("Popen", (base,), {"__init__": init})
    else:
        from multiprocessing import popen_spawn_posix  # noqa: PLC0415

        base = popen_spawn_posix.Popen
        views = {"spawn": spawn_view}
    return type("Popen", (base,), {"_launch": _rebound(base._launch, **views)})  # noqa: SLF001


_POPEN: dict[str, type[Any]] = {}


def _start(start_method: str, process: BaseProcess) -> Any:
    """``Process._Popen``: start ``process`` by ``start_method``, without main."""
    if start_method not in _POPEN:
        _POPEN[start_method] = _popen(start_method)
    return _POPEN[start_method](process)


def _our_server() -> Any:
    """Our forkserver (started on first use): it never imports the main module."""
    global _server  # noqa: PLW0603  (one per process)
    if _server is None:
        from multiprocessing import forkserver  # noqa: PLC0415

        _server = forkserver.ForkServer()
        _server.set_forkserver_preload(_PRELOAD)
    return _server


def forkserver_in_use() -> Any:
    """Our forkserver if this process made one (for after-fork clean-up)."""
    return _server


class _SpawnProcess(multiprocessing.context.SpawnProcess):
    """A ``spawn`` worker that does not import the parent's main module."""

    @staticmethod
    def _Popen(process_obj: BaseProcess) -> Any:  # noqa: N802  (multiprocessing's name)
        return _start("spawn", process_obj)


_CLASSES: dict[str, type[BaseProcess]] = {"spawn": _SpawnProcess}

if not IS_WINDOWS:  # forkserver is POSIX only

    class _ForkServerProcess(multiprocessing.context.ForkServerProcess):
        """A ``forkserver`` worker from our server, without the main module."""

        @staticmethod
        def _Popen(process_obj: BaseProcess) -> Any:  # noqa: N802
            return _start("forkserver", process_obj)

    _CLASSES["forkserver"] = _ForkServerProcess


def process_class(start_method: str) -> Callable[..., BaseProcess]:
    """The class that starts a worker by ``start_method`` without the main module."""
    if start_method in _CLASSES:
        return _CLASSES[start_method]
    process: Callable[..., BaseProcess] = multiprocessing.get_context(
        start_method
    ).Process  # type: ignore[attr-defined]
    return process
