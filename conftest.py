"""Doctests (``--doctest-modules``) run in a private lock directory each.

The examples in the docstrings take names such as ``"feishu"`` in the
default directory; here ``$SINGLETON_PROC_DIR`` points each doctest at a
fresh private one, so they never touch the user's own locks. The tests in
``tests/`` have their own fixtures (``tests/conftest.py``). And any run
starts with Python's own Ctrl-C handler (see :func:`pytest_configure`).
"""

from __future__ import annotations

import signal
import sys

import pytest

#: Docstring examples that need POSIX: skipped on Windows, saying why.
_POSIX_EXAMPLES = {
    # os.kill(pid, SIGINT) there ends the process (pytest with it)
    "singleton_proc._base.interrupts": "sends itself SIGINT",
    "singleton_proc.InsecureLockPathError": "POSIX permission bits (0o777)",
}


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001
    """Give SIGINT Python's handler back if the run started with it ignored.

    A command a shell without job control starts with ``&`` (a CI script
    running suites side by side) inherits SIGINT ignored, and Python then
    leaves it so, as do the programs it starts: the tests of Ctrl-C need
    what a terminal gives.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _doctest_lock_directory(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Point a doctest's default lock directory at its own temporary one."""
    if isinstance(request.node, pytest.DoctestItem):
        directory = request.getfixturevalue("tmp_path") / "locks"
        directory.mkdir(mode=0o700)
        monkeypatch.setenv("SINGLETON_PROC_DIR", str(directory))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the examples of :data:`_POSIX_EXAMPLES` to skip on Windows."""
    for item in items:
        needs = _POSIX_EXAMPLES.get(item.name)
        if needs is not None and isinstance(item, pytest.DoctestItem):
            item.add_marker(
                pytest.mark.skipif(
                    sys.platform == "win32", reason=f"POSIX only (not Windows): {needs}"
                )
            )
