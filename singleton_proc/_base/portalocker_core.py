"""portalocker's locking modules, imported without its package's Redis lock.

portalocker's ``__init__`` imports its ``RedisLock`` whenever redis-py is
installed, and with it redis-py, ``asyncio`` and ``concurrent.futures``:
about 80 ms, and the very modules ``import singleton_proc`` must not load
(SPEC's first quality bar). The file lock needs three of its modules,
``portalocker.portalocker``, ``.constants`` and ``.exceptions``, which
import nothing else of the package but ``.types``. So this module lends
them a package of its own: its ``__path__`` is portalocker's directory,
and they load as its submodules (``singleton_proc._base.portalocker_core
.portalocker``, ...), never running portalocker's ``__init__``.

They are our own copies: the program's ``import portalocker``, before or
after ours, from any thread, is untouched and gets the whole package
(portalocker's locks and ours still exclude each other: the OS holds the
locks). Use the names here as ``locking.FlockLocker``,
``constants.LockFlags``, ``exceptions.AlreadyLocked``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

__all__ = ["constants", "exceptions", "locking"]


def _portalocker_directories() -> list[str]:
    """Where portalocker's modules are, found without importing it.

    Raises:
        ModuleNotFoundError: portalocker is not installed (or not a package).
    """
    spec = importlib.util.find_spec("portalocker")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'portalocker'", name="portalocker")
    return list(spec.submodule_search_locations)


__path__ = _portalocker_directories()  # their package, for the imports below

if TYPE_CHECKING:
    import portalocker.portalocker as locking
    from portalocker import constants, exceptions
else:
    locking = importlib.import_module(f"{__name__}.portalocker")
    constants = importlib.import_module(f"{__name__}.constants")
    exceptions = importlib.import_module(f"{__name__}.exceptions")
