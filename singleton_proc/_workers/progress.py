"""``progress=True``: a tqdm bar on stderr counting finished items.

tqdm is an optional extra (``pip install "singleton_proc[progress]"``);
asking for a bar without it is an ``ImportError`` that says so, raised
before any worker starts.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

__all__ = ["Bar", "open_bar", "require_tqdm"]


class Bar(Protocol):
    """What the pool needs of a progress bar."""

    def update(self, n: int) -> object:
        """Count ``n`` more finished items."""

    def close(self) -> None:
        """Finish the bar."""


class _NoBar:
    """``progress=False``: counts nothing, shows nothing."""

    def update(self, n: int) -> None:
        """Nothing to count."""

    def close(self) -> None:
        """Nothing to finish."""


def require_tqdm() -> Any:
    """The ``tqdm`` class.

    Raises:
        ImportError: tqdm is not installed; the message names the extra.
    """
    try:
        return importlib.import_module("tqdm").tqdm
    except ImportError as exc:
        raise ImportError(
            'progress=True needs tqdm: pip install "singleton_proc[progress]" '
            "(or pip install tqdm)"
        ) from exc


def open_bar(enabled: bool, total: int | None, what: str | None) -> Bar:
    """A tqdm bar on stderr for ``total`` items (unknown: ``None``), or none.

    Raises:
        ImportError: ``enabled`` and tqdm is not installed.
    """
    if not enabled:
        return _NoBar()

    class _Bar(require_tqdm()):  # type: ignore[misc]
        """No monitor thread: with a thread running, workers would not fork."""

        monitor_interval = 0

    bar: Bar = _Bar(total=total, desc=what, unit="item", dynamic_ncols=True)
    return bar
