"""Instance names: validation, and the name derived from the running program."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["MAX_NAME_LENGTH", "derive_name", "validate_name"]

MAX_NAME_LENGTH = 128


def validate_name(name: object) -> str:
    r"""Return ``name`` if it is safe as a file name in the lock directory.

    Args:
        name: The instance name given by the user.

    Returns:
        The name, unchanged.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: it is empty, ``.`` or ``..``, longer than 128 characters,
            or contains ``/``, ``\\``, NUL or a control character; the
            message names the offending part.
    """
    if not isinstance(name, str):
        raise TypeError(f"instance name must be a str, not {type(name).__name__}")
    problem = _name_problem(name)
    if problem:
        raise ValueError(f"invalid instance name {name!r}: {problem}")
    return name


def _name_problem(name: str) -> str:
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
        if ord(char) < 0x20 or ord(char) == 0x7F:  # noqa: PLR2004  (C0 controls, DEL)
            return f"it contains the control character {char!r}"
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
