"""portalocker's locking modules, imported without its package's Redis lock.

portalocker's ``__init__`` imports its ``RedisLock`` whenever redis-py is
installed, and with it redis-py, ``asyncio`` and ``concurrent.futures``:
about 90 ms, and the very modules ``import singleton_proc`` must not load
(SPEC's first quality bar). The file lock needs three of its modules,
``portalocker.portalocker``, ``.constants`` and ``.exceptions``, which
import nothing else of the package. So they are imported under a stand-in
for the package, never executed, that is taken away at once: a later
``import portalocker`` (the program's, or ours with a Redis backend) runs
the real ``__init__``, which finds these same modules, so its classes and
exceptions are ours. Where portalocker was imported already, it is used
as it is.

The names here are those modules; use them as ``locking.FlockLocker``,
``constants.LockFlags``, ``exceptions.AlreadyLocked``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

    import portalocker.portalocker as locking
    from portalocker import constants, exceptions

__all__ = ["constants", "exceptions", "locking"]

_PACKAGE = "portalocker"
_MODULES = (
    f"{_PACKAGE}.portalocker",
    f"{_PACKAGE}.constants",
    f"{_PACKAGE}.exceptions",
)


def _import_core() -> tuple[ModuleType, ...]:
    """The three modules, without running the package's ``__init__`` if not yet run.

    The stand-in is in ``sys.modules`` only while they import: a thread
    that imports portalocker in that moment (under a millisecond, once per
    process) gets the stand-in, which has nothing but these modules.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if _PACKAGE in sys.modules or spec is None or spec.loader is None:
        return tuple(importlib.import_module(name) for name in _MODULES)
    stand_in = importlib.util.module_from_spec(spec)  # its __init__ not run
    sys.modules[_PACKAGE] = stand_in
    try:
        return tuple(importlib.import_module(name) for name in _MODULES)
    finally:
        if sys.modules.get(_PACKAGE) is stand_in:
            del sys.modules[_PACKAGE]


if not TYPE_CHECKING:
    locking, constants, exceptions = _import_core()
