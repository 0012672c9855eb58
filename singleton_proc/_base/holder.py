"""``Holder``: the process holding a name, and how it reads in one line.

This module has no ``from __future__ import annotations`` on purpose: the
annotations of a public dataclass stay real objects, so
``typing.get_type_hints(singleton_proc.Holder)`` works for pydantic, cattrs
and friends although ``__module__`` says ``singleton_proc``.
"""

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["Holder", "command_line", "hide_passwords", "printable"]

_MAX_COMMAND = 200
#: A password in a URL: ``scheme://user:PASSWORD@``, or ``?password=...``.
_PASSWORDS = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@/\s]*(?P<at>@)"
    r"|(?P<key>[?&]password=)[^&\s]*"
)


@dataclass(frozen=True)
class Holder:
    """The process holding an instance name, as recorded and verified.

    Attributes:
        name: The instance name.
        pid: The holder's process id.
        create_time: When the process started, as psutil reports it
            (seconds since the epoch).
        started_at: When it took the lock (an aware datetime, UTC).
        cmdline: Its command line.
        user: The user it runs as.
        host: The host it runs on.

    Example:
        >>> import os
        >>> from singleton_proc import SingleInstance, holder
        >>> with SingleInstance("feishu"):
        ...     h = holder("feishu")
        >>> h.pid == os.getpid()
        True
        >>> print(h)  # doctest: +ELLIPSIS
        pid ..., since ..., command: ...
    """

    name: str
    pid: int
    create_time: float
    started_at: datetime
    cmdline: tuple[str, ...]
    user: str
    host: str

    def __str__(self) -> str:
        """One line for people: pid, since when (local time), command."""
        since = self.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        return f"pid {self.pid}, since {since}, command: {self.command}"

    @property
    def command(self) -> str:
        """The command line, shell-quoted, printable, cut at 200 characters."""
        return command_line(self.cmdline)


def command_line(argv: Sequence[str]) -> str:
    """A command line for one line of a message or a log: quoted, printable, cut.

    Passwords in URLs are hidden (see :func:`hide_passwords`).
    """
    return printable(shlex.join(hide_passwords(arg) for arg in argv), _MAX_COMMAND)


def hide_passwords(text: str) -> str:
    """``text`` with every password of a URL in it replaced by ``***``.

    Example:
        >>> hide_passwords("--backend=redis://:s3cret@db:6379/0")
        '--backend=redis://:***@db:6379/0'
        >>> hide_passwords("rediss://app:pw@db/0?password=pw2&db=1")
        'rediss://app:***@db/0?password=***&db=1'
    """
    return _PASSWORDS.sub(_hidden, text)


def _hidden(found: re.Match[str]) -> str:
    if found["key"] is not None:
        return f"{found['key']}***"
    return f"{found['head']}***{found['at']}"


def printable(text: str, limit: int = _MAX_COMMAND) -> str:
    r"""``text`` made safe for one line of a terminal or a log.

    Every character that is not printable (newlines, escape sequences, line
    separators, bidi controls) becomes a ``\x..``/``\u....`` escape, and the
    result is cut at ``limit`` characters.
    """
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"
