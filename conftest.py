"""Doctests (``--doctest-modules``) run in a private lock directory each.

The examples in the docstrings take names such as ``"feishu"`` in the
default directory; here ``$SINGLETON_PROC_DIR`` points each doctest at a
fresh private one, so they never touch the user's own locks. The tests in
``tests/`` have their own fixtures (``tests/conftest.py``).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _doctest_lock_directory(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point a doctest's default lock directory at its own temporary one."""
    if isinstance(request.node, pytest.DoctestItem):
        directory = request.getfixturevalue("tmp_path") / "locks"
        directory.mkdir(mode=0o700)
        monkeypatch.setenv("SINGLETON_PROC_DIR", str(directory))
