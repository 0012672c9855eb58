"""Fixtures shared by every test: a private lock directory, and no child left."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """An empty private lock directory (0700)."""
    path = tmp_path / "locks"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture(autouse=True)
def private_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default directory (for us and our children) into tmp_path."""
    path = tmp_path / "default"
    monkeypatch.setenv("SINGLETON_PROC_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """Fail a test that leaves a child process behind, killing it by pid."""
    yield
    children = psutil.Process().children(recursive=True)
    for child in children:
        child.kill()
    psutil.wait_procs(children, timeout=10)
    assert not children, f"test left child processes: {children}"
