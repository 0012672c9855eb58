"""``progress=True``: a tqdm bar on stderr counting finished items.

tqdm is an optional extra (``pip install "singleton_proc[progress]"``);
asking for a bar without it is an ``ImportError`` that says so, raised
before any worker starts. While the bar shows, log records printed to the
console (the workers' records reach the parent's handlers) go above it
through ``tqdm.external_write_mode``, never onto its line.
"""

from __future__ import annotations

import importlib
import logging
import sys
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

    tqdm = require_tqdm()

    class _Bar(tqdm):  # type: ignore[misc,valid-type]
        """No monitor thread: with a thread running, workers would not fork."""

        monitor_interval = 0

        def close(self) -> None:
            """Finish the bar; the console handlers write as before."""
            try:
                super().close()
            finally:
                for handler, proxy in rerouted:
                    if handler.stream is proxy:  # else someone set theirs since
                        handler.setStream(proxy.stream)
                rerouted.clear()

    bar: Bar = _Bar(total=total, desc=what, unit="item", dynamic_ncols=True)
    rerouted: list[tuple[logging.StreamHandler[Any], _AboveTheBar]] = []
    for handler in _console_handlers():
        proxy = _AboveTheBar(handler.stream, tqdm)
        try:
            handler.setStream(proxy)
        except AttributeError:  # a handler whose stream is fixed (coloredlogs')
            continue
        rerouted.append((handler, proxy))
    return bar


class _AboveTheBar:
    """A console stream whose writes clear the bars on it first, then redraw them.

    Anything else (``isatty``, ``encoding``, ``fileno``) is the stream's own.
    """

    def __init__(self, stream: Any, tqdm: Any) -> None:
        self.stream = stream
        self._tqdm = tqdm

    def write(self, text: str) -> None:
        """Write ``text`` on a line of its own, above the bar."""
        with self._tqdm.external_write_mode(file=self.stream):
            self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _console_handlers() -> list[logging.StreamHandler[Any]]:
    """The logging handlers that print to the console (stderr or stdout), once each."""
    loggers = [logging.root, *logging.Logger.manager.loggerDict.values()]
    found: dict[int, logging.StreamHandler[Any]] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # a PlaceHolder has none
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and handler.stream in (sys.stderr, sys.stdout)
            ):
                found[id(handler)] = handler
    return list(found.values())
