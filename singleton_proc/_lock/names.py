"""Instance names: validation, and the name derived from the running program."""

from __future__ import annotations

import functools
import sys
import unicodedata
from pathlib import Path

from singleton_proc._base.holder import printable

__all__ = ["MAX_NAME_LENGTH", "derive_name", "validate_name"]

MAX_NAME_LENGTH = 128
#: The longest file we make is ``.<name>.pid.tmp``: 9 bytes more than the
#: name, well within the usual 255-byte limit.
_MAX_NAME_BYTES = 200
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
#: Controls, format characters (bidi overrides, zero-width), line and
#: paragraph separators, lone surrogates.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in "123456789¹²³"}
)


def validate_name(name: object) -> str:
    r"""Return ``name`` if it is safe as a file name on every platform.

    Args:
        name: The instance name given by the user.

    Returns:
        The name, unchanged.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: it is empty, ``.`` or ``..``, longer than 128 characters
            or 200 bytes of UTF-8, contains a path separator, a character
            Windows forbids in file names (``<>:"|?*``), a control, format,
            line-separator or surrogate character, ends with a dot or a
            space, or is a Windows device name (``CON``, ``NUL``, ``COM1``,
            ...); the message names the offending part.
    """
    if not isinstance(name, str):
        raise TypeError(f"instance name must be a str, not {type(name).__name__}")
    problem = _name_problem(name)
    if problem:
        raise ValueError(f"invalid instance name '{printable(name, 60)}': {problem}")
    return name


@functools.lru_cache(maxsize=256)
def _name_problem(name: str) -> str:  # noqa: C901, PLR0911  (a flat list of checks)
    """Say what makes ``name`` unusable, or return ``""`` when it is fine."""
    if not name:
        return "it is empty"
    if name in {".", ".."}:
        return "it names a directory"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long, the limit is {MAX_NAME_LENGTH}"
    for char in name:
        if char in "/\\":
            return f"it contains the path separator {char!r}"
        if char in _WINDOWS_FORBIDDEN:
            return f"it contains {char!r}, which Windows forbids in file names"
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            return f"it contains the control or invisible character {char!r}"
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        return f"it is over {_MAX_NAME_BYTES} bytes in UTF-8"
    if name[-1] in ". ":
        return "it ends with a dot or a space, which Windows drops"
    if name.split(".", 1)[0].strip().upper() in _WINDOWS_DEVICES:
        return "it is a Windows device name"
    return ""


def derive_name() -> str:
    """Derive an instance name from the running program.

    ``python -m pkg.tool`` gives ``pkg.tool``; ``python /srv/bot.py`` gives
    ``bot``. The result is validated like a name given by hand.

    Raises:
        ValueError: the program has no name to derive (an interactive
            session, ``python -c``); pass a name explicitly.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    module_name = getattr(spec, "name", None)
    if isinstance(module_name, str) and module_name not in {"__main__", ""}:
        return validate_name(module_name.removesuffix(".__main__"))
    main_file = getattr(main, "__file__", None)
    if isinstance(main_file, str) and main_file:
        return validate_name(Path(main_file).stem)
    raise ValueError(
        "cannot derive an instance name: the program has no script or module "
        "name (interactive session or python -c); pass a name, e.g. "
        'SingleInstance("mybot")'
    )
