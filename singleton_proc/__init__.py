"""Run one instance of a program per machine or per user, safely.

The public surface, declared once. Worker-side names load on first use
(PEP 562), so a program that only guards itself with :class:`SingleInstance`
never imports ``multiprocessing``, ``concurrent.futures`` or ``asyncio``.

Example:
    >>> from singleton_proc import SingleInstance
    >>> with SingleInstance("feishu"):  # doctest: +SKIP
    ...     main()
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._decorate import single_instance
from ._errors import (
    AlreadyRunningError,
    InsecureLockPathError,
    LockTimeoutError,
    ReplaceRefusedError,
    SingletonProcError,
)
from ._holder import Holder
from ._instance import SingleInstance
from ._introspect import holder, is_running, list_instances
from ._stop import terminate
from ._version import __version__

if TYPE_CHECKING:
    from ._executor import process_pool
    from ._map import iter_in_pool, run_in_pool
    from ._process import run_process, start_process
    from ._worker_errors import TaskTimeoutError, WorkerDiedError

__all__ = [
    "AlreadyRunningError",
    "Holder",
    "InsecureLockPathError",
    "LockTimeoutError",
    "ReplaceRefusedError",
    "SingleInstance",
    "SingletonProcError",
    "TaskTimeoutError",
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
    "TaskTimeoutError": "._worker_errors",
    "WorkerDiedError": "._worker_errors",
    "iter_in_pool": "._map",
    "process_pool": "._executor",
    "run_in_pool": "._map",
    "run_process": "._process",
    "start_process": "._process",
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
