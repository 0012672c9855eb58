"""Argument types of the command line: a refusal is a usage error, in our words.

argparse calls these on each argument (``type=``); a value the library
would refuse (a name, a directory, a backend URL, a TTL) is refused here,
before anything runs, with the library's own message.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from typing import TYPE_CHECKING

from singleton_proc._base import validate
from singleton_proc._lock.backends import opened

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "UsageError",
    "backend_url",
    "exit_code",
    "lease_ttl",
    "library_check",
    "seconds",
]


class UsageError(Exception):
    """A bad command line."""


def backend_url(text: str) -> str:
    """An argparse type: a backend URL the library accepts (nothing is sent)."""
    try:
        with opened(text):
            pass
    except (ValueError, TypeError, ImportError) as exc:
        raise UsageError(str(exc)) from None
    return text


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, at least 0."""
    with contextlib.suppress(ValueError):
        if 0 <= (value := float(text)) < math.inf:
            return value
    raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")


def lease_ttl(text: str) -> float:
    """An argparse type: a lease's TTL, as the library takes it."""
    try:
        return validate.lease_ttl(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def library_check(check: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type: ``check`` (a library's), its refusal a usage error."""

    def checked(text: str) -> str:
        try:
            check(text)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return text

    return checked


def exit_code(text: str) -> int:
    """An argparse type: an exit status, 0 to 255."""
    if text.isdigit() and int(text) <= 255:  # noqa: PLR2004
        return int(text)
    raise argparse.ArgumentTypeError(f"not an exit status from 0 to 255: {text!r}")
