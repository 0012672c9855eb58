"""Worker logging: records made in a child reach the parent's handlers, exactly once.

The parent takes a snapshot of its logger levels (:func:`snapshot`) and
sends it with the call. The child (:func:`forward`) applies those levels,
so it makes exactly the records the parent would make, removes every handler
it inherited or imported (under ``fork`` they would write a second copy),
and installs one handler on the root logger that sends each record, made
picklable, on the worker's pipe. The parent hands each received record to
the logger of the same name (:func:`dispatch`), which applies its own levels,
filters, handlers and propagation, as if the record had been made there.
The pipe belongs to one worker, so a worker killed mid-record cannot block
the others (a shared ``multiprocessing.Queue`` lock could).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .protocol import dumps, loads

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LogLevels", "dispatch", "forward", "snapshot"]

_ROOT = "root"


@dataclass(frozen=True)
class LogLevels:
    """The parent's logging levels: the root's, the explicitly set ones, the cut-off."""

    root: int
    loggers: dict[str, int] = field(default_factory=dict)
    disable: int = logging.NOTSET


def snapshot() -> LogLevels:
    """The levels configured in this process, for a worker to copy."""
    manager = logging.Logger.manager
    loggers = {
        name: logger.level
        for name, logger in list(manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
    }
    return LogLevels(
        root=logging.getLogger().level, loggers=loggers, disable=manager.disable
    )


class _ForwardHandler(logging.Handler):
    """Sends each record to the parent, made picklable."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        """Send pickled records with ``send``."""
        super().__init__(logging.NOTSET)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        """Pickle a copy of ``record`` whose message is formatted, and send it."""
        try:
            self._send(_pickled(record))
        except Exception:  # noqa: BLE001  (as every logging handler does)
            self.handleError(record)


def _pickled(record: logging.LogRecord) -> bytes:
    """``record`` as bytes: message formatted, traceback as text, extras that pickle."""
    state = dict(record.__dict__)
    state["msg"] = record.getMessage()
    state["args"] = None
    if record.exc_info:
        state["exc_text"] = record.exc_text or logging.Formatter().formatException(
            record.exc_info
        )
    state["exc_info"] = None
    try:
        return dumps(state)
    except Exception:  # noqa: BLE001  (an ``extra=`` value that will not pickle)
        for key, value in state.items():
            try:
                dumps(value)
            except Exception:  # noqa: BLE001
                state[key] = repr(value)
        return dumps(state)


def forward(send: Callable[[bytes], None], levels: LogLevels) -> None:
    """In the worker: apply the parent's levels and send every record with ``send``.

    Every logger keeps its filters and propagates to the root, whose only
    handler is the forwarding one: each record leaves the worker once, and
    the parent's own configuration decides where it goes.
    """
    manager = logging.Logger.manager
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in list(manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        if logger is not root:
            logger.propagate = True
            logger.setLevel(levels.loggers.get(logger.name, logging.NOTSET))
    for name, level in levels.loggers.items():
        logging.getLogger(name).setLevel(level)
    root.setLevel(levels.root)
    logging.disable(levels.disable)
    root.addHandler(_ForwardHandler(send))


def dispatch(data: bytes) -> None:
    """In the parent: hand a worker's record to the logger of the same name."""
    record = logging.makeLogRecord(loads(data))
    name = None if record.name == _ROOT else record.name
    logger = logging.getLogger(name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
