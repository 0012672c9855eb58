"""The lock directory (private or shared, checked) and safe opening of its files.

A per-user directory is private: ``0700``, ours, writable by nobody else,
and the same whether the program runs from a login shell, cron, systemd,
ssh or ``sudo -u``. A shared directory is only ever chosen explicitly and
must be sticky if others may write to it, so nobody can swap our files.
Nothing here follows a symlink.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from . import _platform
from ._errors import InsecureLockPathError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ENV_DIRECTORY",
    "FILE_MODE",
    "default_directory",
    "open_no_follow",
    "resolve_directory",
    "symlink_refused",
]

#: The environment variable that moves the private directory.
ENV_DIRECTORY = "SINGLETON_PROC_DIR"
#: Mode of every file we create: others may read the record and contend.
FILE_MODE = 0o644
_PRIVATE_MODE = 0o700
_SHARED_MODE = 0o755
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH

#: Filesystems on which file locks may silently fail to exclude.
_NETWORK_FS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "ceph",
        "glusterfs", "lustre", "afs", "gpfs", "ncpfs", "davfs", "webdav",
        "afpfs", "sshfs", "virtiofs",
    }
)  # fmt: skip
_warned_devices: set[int] = set()


def resolve_directory(directory: str | os.PathLike[str] | None) -> Path:
    """Return the checked lock directory, creating it when it is missing.

    Args:
        directory: An explicit, possibly shared directory, or ``None`` for
            the private per-user default.

    Raises:
        InsecureLockPathError: the directory is a symlink or not a
            directory, a private one is not private, or a shared one is
            writable by others without the sticky bit.
        OSError: the directory could not be created.
    """
    if directory is None:
        return default_directory()
    path = Path(os.fspath(directory)).absolute()
    _make_directory(path, _SHARED_MODE, parents=True)
    st = _lstat_directory(path)
    if st.st_mode & _OTHERS_WRITE and not st.st_mode & stat.S_ISVTX:
        raise InsecureLockPathError(
            f"lock directory {path} is writable by other users but not sticky, "
            "so they could replace the lock files; use a sticky directory "
            "(chmod +t, like /tmp or /run/lock) or one only you can write to"
        )
    _warn_if_network(path, st)
    return path


def default_directory() -> Path:
    """Return the private per-user lock directory, created and checked.

    ``$SINGLETON_PROC_DIR`` if set; else ``singleton_proc`` in the user's
    cache directory (``~/.cache`` on Linux); else, when the home directory
    is missing or read-only, ``/tmp/singleton_proc-<uid>``.

    Raises:
        InsecureLockPathError: the directory exists but is a symlink,
            belongs to another user, or is writable by group or others.
        ValueError: ``$SINGLETON_PROC_DIR`` is not an absolute path.
    """
    configured = os.environ.get(ENV_DIRECTORY)
    if configured:
        path = Path(os.path.expanduser(configured))  # noqa: PTH111
        if not path.is_absolute():
            raise ValueError(
                f"${ENV_DIRECTORY} must be an absolute path (it is {configured!r}): "
                "a relative one would name another directory under cron"
            )
        candidates: Iterable[tuple[Path, bool]] = ((path, True),)
    else:
        # Never create the home directory itself: a missing home means "use
        # the fallback", as does one we cannot write to.
        candidates = (
            (_platform.cache_home() / "singleton_proc", False),
            (_platform.fallback_directory(), False),
        )
    failure: OSError | None = None
    for path, parents in candidates:
        try:
            _make_directory(path, _PRIVATE_MODE, parents=parents)
        except OSError as exc:  # home missing or read-only: try the next one
            failure = exc
            continue
        _check_private(path)
        return path
    assert failure is not None  # noqa: S101  (the loop ran at least once)
    raise failure


def _make_directory(path: Path, mode: int, *, parents: bool) -> None:
    """Create ``path`` with ``mode`` unless it exists (as anything).

    With ``parents`` every missing ancestor is created; without, only the
    immediate parent (``~/.cache`` under an existing home), so that a
    missing home directory shows as a failure instead of being invented.
    """
    if os.path.lexists(path):  # the common case, and cheaper than mkdir's error
        return
    try:
        path.parent.mkdir(parents=parents, exist_ok=True)
        path.mkdir(mode)
    except FileExistsError:
        return


def _lstat_directory(path: Path) -> os.stat_result:
    """``lstat`` ``path`` and insist on a real directory."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise InsecureLockPathError(
            f"lock directory {path} is a symlink; refusing to follow it "
            "(point the configuration at the real directory)"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureLockPathError(f"lock directory {path} is not a directory")
    return st


def _check_private(path: Path) -> None:
    """Insist that ``path`` is a directory only the current user controls."""
    st = _lstat_directory(path)
    uid = _platform.current_uid()
    if uid is None:  # pragma: no cover - Windows: ACLs, not mode bits
        return
    if st.st_uid != uid:
        raise InsecureLockPathError(
            f"private lock directory {path} belongs to uid {st.st_uid}, not to "
            f"you (uid {uid}); remove it, or set ${ENV_DIRECTORY} or directory= "
            "to a directory of your own"
        )
    if st.st_mode & _OTHERS_WRITE:
        raise InsecureLockPathError(
            f"private lock directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 700 {path}"
        )
    _warn_if_network(path, st)


def _warn_if_network(path: Path, st: os.stat_result) -> None:
    """Warn once per filesystem when file locks there may not exclude."""
    if st.st_dev in _warned_devices:
        return
    _warned_devices.add(st.st_dev)
    fstype = _filesystem_type(path)
    if fstype:
        warnings.warn(
            f"lock directory {path} is on a {fstype} filesystem, where file "
            "locks may not exclude processes on other machines or at all; "
            "use a local directory",
            RuntimeWarning,
            stacklevel=4,
        )


def _filesystem_type(path: Path) -> str:
    """The type of the network or FUSE filesystem holding ``path``, or ``""``."""
    import psutil  # noqa: PLC0415  (only on the first lock in a directory)

    real = os.path.realpath(path)
    best = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint
        inside = real == mount or real.startswith(mount.rstrip(os.sep) + os.sep)
        if inside and (best is None or len(mount) > len(best.mountpoint)):
            best = part
    if best is None:
        return ""
    fstype = best.fstype.lower()
    if fstype in _NETWORK_FS or "fuse" in fstype or "remote" in best.opts:
        return best.fstype
    return ""


def open_no_follow(path: Path, flags: int, mode: int = FILE_MODE) -> int:
    """``os.open`` a regular file without following a symlink at ``path``.

    Args:
        path: The file to open.
        flags: ``os.O_*`` flags; ours (no-follow, close-on-exec,
            non-blocking) are added.
        mode: The mode for a file that ``O_CREAT`` creates.

    Returns:
        The open descriptor of a regular file.

    Raises:
        InsecureLockPathError: ``path`` is a symlink or not a regular file.
        OSError: it could not be opened (missing, permission denied, ...).
    """
    if not _platform.HAS_NOFOLLOW and path.is_symlink():  # pragma: no cover
        raise symlink_refused(path)
    try:
        fd = os.open(path, flags | _platform.OPEN_FLAGS, mode)
    except OSError as exc:
        if exc.errno in {errno.ELOOP, errno.EMLINK} and path.is_symlink():
            raise symlink_refused(path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InsecureLockPathError(f"{path} is not a regular file; refusing to use it")
    return fd


def symlink_refused(path: Path) -> InsecureLockPathError:
    """The error for a symlink found where one of our files should be."""
    return InsecureLockPathError(
        f"{path} is a symlink; refusing to follow it (its target is left "
        "untouched). Remove the symlink if you did not create it."
    )
