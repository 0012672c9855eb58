"""The lock directory: where it is in every context, and who may touch it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import psutil
import pytest

import singleton_proc
from singleton_proc import InsecureLockPathError, SingleInstance
from singleton_proc._base import platform as _platform
from singleton_proc._lock import directory as _paths
from singleton_proc._lock.directory import existing_directory, resolve_directory

from helpers import linux_only, needs_root, posix_only

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = posix_only("POSIX file modes and owners, the sticky bit, /tmp")

#: The per-user cache is ~/.cache on Linux (~/Library/Caches on macOS).
xdg_cache = linux_only("~/.cache (macOS: ~/Library/Caches)")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_env_directory_is_created_private_whatever_the_umask(
    private_default_dir: Path,
) -> None:
    old = os.umask(0)
    try:
        assert resolve_directory(None) == private_default_dir
    finally:
        os.umask(old)
    assert _mode(private_default_dir) == 0o700


def test_relative_env_directory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SINGLETON_PROC_DIR", "relative/locks")
    with pytest.raises(ValueError, match="SINGLETON_PROC_DIR must be an absolute path"):
        resolve_directory(None)


@pytest.mark.parametrize(
    "call",
    [
        lambda: SingleInstance("bot", directory="locks"),  # refused at once
        lambda: singleton_proc.is_running("bot", directory="./locks"),
        lambda: singleton_proc.holder("bot", directory="locks"),
        lambda: singleton_proc.terminate("bot", directory="locks"),
        lambda: singleton_proc.list_instances(directory="locks"),
        lambda: singleton_proc.single_instance("bot", directory="locks"),
    ],
)
def test_a_relative_directory_is_refused_everywhere(
    call: Callable[[], object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule for every way in: cron would find another directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="directory must be an absolute path"):
        call()
    assert list(tmp_path.iterdir()) == []  # nothing made where it would have gone


@pytest.mark.parametrize("directory", [b"/tmp/locks", b"locks"])
def test_a_bytes_directory_is_refused_at_once(directory: bytes) -> None:
    with pytest.raises(TypeError, match="directory must be a str or a path, not bytes"):
        SingleInstance("bot", directory=directory)  # type: ignore[arg-type]


@xdg_cache
def test_default_is_under_the_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("SINGLETON_PROC_DIR")
    monkeypatch.setenv("HOME", str(home))
    assert resolve_directory(None) == home / ".cache" / "singleton_proc"
    assert _mode(home / ".cache" / "singleton_proc") == 0o700


@xdg_cache
def test_home_from_the_password_database_when_home_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pwd  # noqa: PLC0415  (POSIX: the module is collected on Windows too)

    monkeypatch.delenv("HOME")
    expected = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".cache"
    assert _platform.cache_home() == expected


def test_missing_home_falls_back_to_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _platform.fallback_directory() == Path(f"/tmp/singleton_proc-{os.geteuid()}")
    fallback = tmp_path / "fallback"
    monkeypatch.setattr(_platform, "fallback_directory", lambda: fallback)
    monkeypatch.delenv("SINGLETON_PROC_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "no-such-home"))
    assert resolve_directory(None) == fallback
    assert _mode(fallback) == 0o700
    assert not (tmp_path / "no-such-home").exists(), "the home must not be invented"


@xdg_cache
def test_same_directory_under_cron_and_a_login_shell(tmp_path: Path) -> None:
    """cron sets HOME but no XDG_RUNTIME_DIR; shells set TMPDIR; all must agree."""
    home = tmp_path / "home"
    home.mkdir()
    show = (
        "import singleton_proc._lock.directory as p; print(p.resolve_directory(None))"
    )
    cron = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    shell = {
        **cron,
        "XDG_RUNTIME_DIR": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "USER": "x",
    }
    seen = {
        subprocess.run(
            [sys.executable, "-c", show],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        for env in (cron, shell)
    }
    assert seen == {str(home / ".cache" / "singleton_proc")}


def test_group_writable_private_directory_is_refused(private_default_dir: Path) -> None:
    private_default_dir.mkdir(mode=0o700)
    private_default_dir.chmod(0o770)
    with pytest.raises(InsecureLockPathError, match="chmod 700"):
        SingleInstance("x").acquire()
    assert list(private_default_dir.iterdir()) == []


def test_a_shared_sticky_directory_as_the_private_one_is_refused_without_chmod(
    private_default_dir: Path,
) -> None:
    """$SINGLETON_PROC_DIR=/run/lock: pass it as directory=, never chmod it."""
    private_default_dir.mkdir()
    private_default_dir.chmod(0o1777)
    with pytest.raises(InsecureLockPathError) as refused:
        SingleInstance("x").acquire()
    message = str(refused.value)
    assert "is a shared directory (sticky, mode 1777)" in message
    assert "pass it as directory=" in message
    assert "chmod" not in message
    assert list(private_default_dir.iterdir()) == []
    with SingleInstance("x", directory=private_default_dir):  # as the message says
        pass


@needs_root
def test_private_directory_of_another_user_is_refused(
    private_default_dir: Path,
) -> None:
    private_default_dir.mkdir(mode=0o700)
    os.chown(private_default_dir, 65534, 65534)
    with pytest.raises(InsecureLockPathError, match="belongs to uid 65534"):
        SingleInstance("x").acquire()
    assert list(private_default_dir.iterdir()) == []


def test_symlinked_private_directory_is_refused(
    tmp_path: Path, private_default_dir: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    private_default_dir.symlink_to(target)
    with pytest.raises(InsecureLockPathError, match="symlink"):
        SingleInstance("x").acquire()
    assert list(target.iterdir()) == []


def test_shared_directory_must_be_sticky_when_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(InsecureLockPathError, match="not sticky"):
        SingleInstance("x", directory=shared).acquire()
    shared.chmod(0o1777)
    with SingleInstance("x", directory=shared):
        assert _mode(shared / "x.lock") == 0o644


def test_explicit_directory_that_is_a_symlink_or_a_file_is_refused(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(InsecureLockPathError, match="symlink"):
        resolve_directory(tmp_path / "link")
    (tmp_path / "file").write_text("")
    with pytest.raises(InsecureLockPathError, match="not a directory"):
        resolve_directory(tmp_path / "file")
    assert list(real.iterdir()) == []


def test_missing_explicit_directory_is_created(tmp_path: Path) -> None:
    wanted = tmp_path / "a" / "b"
    assert resolve_directory(wanted) == wanted
    assert wanted.is_dir()


class _Partition(NamedTuple):
    device: str
    mountpoint: str
    fstype: str
    opts: str


def test_network_filesystem_gets_a_warning(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.path.realpath(lock_dir)
    nfs = _Partition("server:/export", str(Path(real).parent), "nfs4", "rw")
    monkeypatch.setattr(psutil, "disk_partitions", lambda all: [nfs])  # noqa: A006, ARG005
    monkeypatch.setattr(_paths, "_checked_devices", set())
    with pytest.warns(RuntimeWarning, match="nfs4 filesystem"):
        resolve_directory(lock_dir)


def test_local_filesystem_gets_no_warning(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_paths, "_checked_devices", set())
    resolve_directory(lock_dir)  # warnings are errors in this suite


def test_private_directory_is_0700_even_under_a_harsh_umask(
    private_default_dir: Path,
) -> None:
    old = os.umask(0o277)
    try:
        with SingleInstance("x"):
            pass
    finally:
        os.umask(old)
    assert _mode(private_default_dir) == 0o700


@pytest.mark.parametrize("home", ["", "relative/home"])
def test_an_unusable_home_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: str
) -> None:
    fallback = tmp_path / "fallback"
    monkeypatch.setattr(_platform, "fallback_directory", lambda: fallback)
    monkeypatch.delenv("SINGLETON_PROC_DIR")
    monkeypatch.setenv("HOME", home)
    monkeypatch.chdir(tmp_path)
    assert resolve_directory(None) == fallback
    assert not (tmp_path / ".cache").exists()


def test_looking_creates_no_directory(
    private_default_dir: Path, tmp_path: Path
) -> None:
    assert existing_directory(None) is None
    assert existing_directory(tmp_path / "explicit") is None
    assert not private_default_dir.exists()
    assert not (tmp_path / "explicit").exists()
