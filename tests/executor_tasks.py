"""Tasks that the executor tests run in workers (importable by spawn and forkserver)."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import wait_for_file


def gate_then_mark(directory: str, x: int) -> int:
    """Item 0 waits until the file ``go`` exists; every item marks ``ran-<x>``."""
    if x == 0:
        wait_for_file(os.path.join(directory, "go"))
    Path(directory, f"ran-{x}").write_text(str(os.getpid()))
    return x


def greet(name: str, *, greeting: str = "hello") -> str:
    """``"<greeting> <name>"``: a call with a keyword argument."""
    return f"{greeting} {name}"
