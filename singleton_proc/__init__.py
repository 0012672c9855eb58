"""Run one instance of a program per machine or per user, safely.

The public surface, declared once. Worker-side names load on first use
(PEP 562), so a program that only guards itself with :class:`SingleInstance`
never imports ``multiprocessing``, ``concurrent.futures`` or ``asyncio``.

Example:
    >>> from singleton_proc import SingleInstance, is_running
    >>> with SingleInstance("feishu"):
    ...     is_running("feishu")  # the bot's work goes here
    True
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._base.holder import Holder
from ._errors import (
    AlreadyRunningError,
    BackendUnavailableError,
    InsecureLockPathError,
    LeaseLostError,
    LockTimeoutError,
    ReplaceRefusedError,
    SingletonProcError,
    UnpicklableError,
)
from ._lock.inspection import holder, is_running, list_instances
from ._lock.instance import SingleInstance, single_instance
from ._lock.stop import terminate
from ._version import __version__

if TYPE_CHECKING:
    from ._workers.errors import TaskTimeoutError, WorkerDiedError
    from ._workers.executor import PoolExecutor, process_pool
    from ._workers.map import iter_in_pool, run_in_pool
    from ._workers.one_call import run_process, start_process
    from ._workers.process import ProcessHandle

__all__ = [
    "AlreadyRunningError",
    "BackendUnavailableError",
    "Holder",
    "InsecureLockPathError",
    "LeaseLostError",
    "LockTimeoutError",
    "PoolExecutor",
    "ProcessHandle",
    "ReplaceRefusedError",
    "SingleInstance",
    "SingletonProcError",
    "TaskTimeoutError",
    "UnpicklableError",
    "WorkerDiedError",
    "__version__",
    "holder",
    "is_running",
    "iter_in_pool",
    "list_instances",
    "process_pool",
    "run_in_pool",
    "run_process",
    "single_instance",
    "start_process",
    "terminate",
]

#: Public names that live in modules importing the worker machinery.
_LAZY = {
    "PoolExecutor": "._workers.executor",
    "ProcessHandle": "._workers.process",
    "TaskTimeoutError": "._workers.errors",
    "WorkerDiedError": "._workers.errors",
    "iter_in_pool": "._workers.map",
    "process_pool": "._workers.executor",
    "run_in_pool": "._workers.map",
    "run_process": "._workers.one_call",
    "start_process": "._workers.one_call",
}

logging.getLogger(__name__).addHandler(logging.NullHandler())

for _name in sorted(set(__all__) - set(_LAZY) - {"__version__"}):
    globals()[_name].__module__ = __name__
del _name


def __getattr__(name: str) -> Any:
    """Load a worker-side public name on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names, loaded or not (and the module's dunders)."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
