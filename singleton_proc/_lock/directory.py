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
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from singleton_proc._base import platform as _platform
from singleton_proc._errors import InsecureLockPathError

__all__ = [
    "ENV_DIRECTORY",
    "FILE_MODE",
    "NameFiles",
    "absolute_directory",
    "check_directory",
    "directory_key",
    "existing_directory",
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
_PACKAGE_DIR = os.path.dirname(__file__)

#: Filesystems on which file locks may silently fail to exclude.
_NETWORK_FS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "ceph",
        "glusterfs", "lustre", "afs", "gpfs", "ncpfs", "davfs", "webdav",
        "afpfs", "sshfs", "virtiofs",
    }
)  # fmt: skip
_checked_devices: set[int] = set()
_OPTIONS = f"(directory=, --dir or ${ENV_DIRECTORY})"
#: What to do about the errors opening a lock file that are not our bug.
_ADVICE = {
    errno.ENOSPC: f"free some space or inodes, or use another filesystem {_OPTIONS}",
    errno.EDQUOT: f"free some of your quota, or use another filesystem {_OPTIONS}",
    errno.EROFS: f"use a lock directory on a writable filesystem {_OPTIONS}",
    errno.EMFILE: "close some, or raise this process's limit (ulimit -n)",
    errno.ENFILE: "close some files; the whole system is at its limit",
    errno.ENXIO: (
        "a socket or device file is where a lock file should be: "
        f"remove it, or use another name or lock directory {_OPTIONS}"
    ),
}


@dataclass(frozen=True)
class NameFiles:
    """Where one name's files live, as plain strings (cheap to pass to ``os``).

    Attributes:
        directory: The lock directory.
        name: The instance name.
        lock: ``<name>.lock``, which carries the OS lock.
        record: ``<name>.pid``, the holder's record.
        temp: ``.<name>.pid.tmp``, the record's temporary file: one fixed
            name, written only by the holder, under the lock.
    """

    directory: str
    name: str
    lock: str
    record: str
    temp: str

    @classmethod
    def of(cls, directory: str | os.PathLike[str], name: str) -> NameFiles:
        """The files of ``name`` in ``directory`` (an already checked one)."""
        base = os.fspath(directory)
        return cls(
            directory=base,
            name=name,
            lock=os.path.join(base, f"{name}.lock"),
            record=os.path.join(base, f"{name}.pid"),
            temp=os.path.join(base, f".{name}.pid.tmp"),
        )


def resolve_directory(directory: str | os.PathLike[str] | None) -> Path:
    """Return the checked lock directory, creating it when it is missing.

    Args:
        directory: An explicit, possibly shared directory, or ``None`` for
            the private per-user default: ``$SINGLETON_PROC_DIR`` if set;
            else ``singleton_proc`` in the user's cache directory
            (``~/.cache`` on Linux); else, when the home directory is
            missing, unusable or read-only, ``/tmp/singleton_proc-<uid>``.

    Raises:
        InsecureLockPathError: the directory is a symlink or not a
            directory, a private one belongs to another user or is writable
            by group or others, or a shared one is writable by others
            without the sticky bit.
        ValueError: ``directory`` or ``$SINGLETON_PROC_DIR`` is not an
            absolute path.
        OSError: the directory could not be created.
    """
    path = _resolve(directory, create=True)
    assert path is not None  # noqa: S101  (created, or an error was raised)
    return path


def directory_key(directory: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """What :func:`resolve_directory`'s answer depends on, for caching it.

    The environment for the default directory, the path as given for an
    explicit one (refused when relative by :func:`resolve_directory`, on
    the first look-up: this key is on every acquire's path, kept cheap).
    """
    if directory is None:
        return (
            "default",
            os.environ.get(ENV_DIRECTORY, ""),
            os.environ.get("HOME", ""),
        )
    return ("explicit", os.fspath(directory))


def absolute_directory(what: str, directory: str | os.PathLike[str]) -> str:
    """``directory`` as a string, refused unless absolute (``~`` is expanded).

    One rule whichever way a directory comes (``directory=``, ``--dir``,
    ``$SINGLETON_PROC_DIR``): a relative path would name another directory
    from another working directory (cron and systemd start in ``/`` or the
    home directory), and two copies would not see each other. A string, not
    a ``Path``: every ``SingleInstance()`` checks its directory here.

    Raises:
        TypeError: ``directory`` is not text (bytes, for one).
        ValueError: naming ``what`` and the path.
    """
    path = os.fspath(directory)
    if not isinstance(path, str):
        raise TypeError(f"{what} must be a str or a path, not {type(path).__name__}")
    path = os.path.expanduser(path)
    if not _platform.is_absolute(path):
        raise ValueError(
            f"{what} must be an absolute path (it is {os.fspath(directory)!r}): "
            "a relative one names another directory from another working "
            "directory, as under cron"
        )
    return path


def existing_directory(directory: str | os.PathLike[str] | None) -> Path | None:
    """Like :func:`resolve_directory`, for looking: nothing is created.

    Returns:
        The checked directory, or ``None`` when it does not exist (so
        nothing can be running there).
    """
    return _resolve(directory, create=False)


def _resolve(directory: str | os.PathLike[str] | None, *, create: bool) -> Path | None:
    """Find and check the lock directory, creating it only if asked."""
    if directory is None:
        return _default_directory(create=create)
    path = Path(absolute_directory("directory", directory))
    if not os.path.lexists(path):
        if not create:
            return None
        _make_directory(path, _SHARED_MODE, parents=True)
    check_directory(path, private=False)
    return path


def _default_directory(*, create: bool) -> Path | None:
    """The private per-user directory: the first candidate that works."""
    configured = os.environ.get(ENV_DIRECTORY)
    if configured:
        candidates = [(Path(absolute_directory(f"${ENV_DIRECTORY}", configured)), True)]
    else:
        # Never create the home directory itself: a missing home means "use
        # the fallback", as does one we cannot write to.
        cache = _platform.cache_home()
        candidates = [(cache / "singleton_proc", False)] if cache else []
        candidates.append((_platform.fallback_directory(), False))
    failure: OSError | None = None
    for path, parents in candidates:
        if not os.path.lexists(path):
            if not create:
                continue
            try:
                _make_directory(path, _PRIVATE_MODE, parents=parents)
            except OSError as exc:  # home missing or read-only: try the next one
                failure = exc
                continue
        check_directory(path, private=True)
        return path
    if failure is None:
        return None
    raise failure


def _make_directory(path: Path, mode: int, *, parents: bool) -> None:
    """Create ``path`` with exactly ``mode``, unless it exists (as anything).

    With ``parents`` every missing ancestor is created; without, only the
    immediate parent (``~/.cache`` under an existing home), so that a
    missing home directory shows as a failure instead of being invented.
    """
    path.parent.mkdir(parents=parents, exist_ok=True)
    try:
        path.mkdir(mode)
    except FileExistsError:  # created by someone else meanwhile: checked next
        return
    _platform.set_directory_mode(path, mode)  # the umask may have taken bits


def check_directory(path: str | os.PathLike[str], *, private: bool) -> os.stat_result:
    """Check a lock directory with one ``lstat``; return that ``lstat``.

    Every directory must be a real directory, not a symlink. A private one
    must belong to the current user and be writable by nobody else; a
    shared one must be sticky if others may write to it.

    Raises:
        InsecureLockPathError: the directory fails a check; the message
            says how to fix it.
        FileNotFoundError: it does not exist (any more).
    """
    st = os.lstat(path)
    if _platform.is_link(st):
        raise InsecureLockPathError(
            f"lock directory {path} is a symlink; refusing to follow it "
            "(point the configuration at the real directory)"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureLockPathError(f"lock directory {path} is not a directory")
    if private:
        _check_private(path, st)
    elif st.st_mode & _OTHERS_WRITE and not st.st_mode & stat.S_ISVTX:
        raise InsecureLockPathError(
            f"lock directory {path} is writable by other users but not sticky, "
            "so they could replace the lock files; use a sticky directory "
            "(chmod +t, like /tmp or /run/lock) or one only you can write to"
        )
    _warn_if_network(path, st)
    return st


def _check_private(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """Insist that a private directory is ours and writable by nobody else."""
    uid = _platform.current_uid()
    if uid is None:  # Windows: ACLs, not mode bits
        return
    if st.st_mode & _OTHERS_WRITE and st.st_mode & stat.S_ISVTX:
        # /run/lock or /tmp given as $SINGLETON_PROC_DIR: never chmod those
        raise InsecureLockPathError(
            f"{path} is a shared directory (sticky, mode "
            f"{stat.S_IMODE(st.st_mode):04o}), not a private lock directory: "
            "to lock there, pass it as directory= (--dir on the command line); "
            f"else set ${ENV_DIRECTORY} to a directory of your own"
        )
    if st.st_uid != uid:
        raise InsecureLockPathError(
            f"private lock directory {path} belongs to uid {st.st_uid}, not to "
            f"you (uid {uid}); remove it, or set ${ENV_DIRECTORY} or "
            "directory= to a directory of your own"
        )
    if st.st_mode & _OTHERS_WRITE:
        raise InsecureLockPathError(
            f"private lock directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 700 {path}"
        )


def _warn_if_network(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """Warn once per filesystem when file locks there may not exclude.

    The check is best effort: a mount table we cannot read now (out of
    descriptors, no ``/proc`` in a container) stops nothing, and is read
    again next time.
    """
    if st.st_dev in _checked_devices:
        return
    try:
        fstype = _platform.filesystem_type(os.fspath(path))
    except OSError:
        return
    _checked_devices.add(st.st_dev)
    words = set(fstype.lower().split())
    if words & _NETWORK_FS or "remote" in words or "fuse" in fstype.lower():
        warnings.warn(
            f"lock directory {path} is on a {fstype} filesystem, where file "
            "locks may not exclude processes on other machines or at all; "
            "use a local directory",
            RuntimeWarning,
            stacklevel=_caller_stacklevel(),
        )


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside us."""
    level, frame = 1, sys._getframe(1)  # noqa: SLF001
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        level += 1
        frame = frame.f_back  # type: ignore[assignment]
    return level


def open_no_follow(
    path: str, flags: int, mode: int = FILE_MODE
) -> tuple[int, os.stat_result]:
    """``os.open`` a regular file without following a symlink at ``path``.

    Args:
        path: The file to open.
        flags: ``os.O_*`` flags; ours (no-follow, close-on-exec,
            non-blocking) are added.
        mode: The mode for a file that ``O_CREAT`` creates.

    Returns:
        The open descriptor of a regular file, and its ``fstat``.

    Raises:
        InsecureLockPathError: ``path`` is a symlink or not a regular file.
        OSError: it could not be opened (missing, permission denied, ...);
            a full or read-only filesystem, too many open files and a
            socket at ``path`` say what to do (see :func:`_explained`).
    """
    if not _platform.HAS_NOFOLLOW and os.path.islink(path):  # pragma: no cover
        raise symlink_refused(path)
    try:
        fd = os.open(path, flags | _platform.OPEN_FLAGS, mode)
    except FileNotFoundError:  # the common answer for a record: nothing to explain
        raise
    except OSError as exc:
        if _platform.refused_symlink(exc) and os.path.islink(path):
            raise symlink_refused(path) from None
        raise _explained(exc, path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InsecureLockPathError(f"{path} is not a regular file; refusing to use it")
    return fd, st


def _explained(exc: OSError, path: str) -> OSError:
    """``exc`` with what to do about it, for the errors that are not our bug.

    The class, ``errno`` and ``filename`` stay, so callers may still catch
    ``OSError`` or test ``errno``; only the text changes, from the bare
    ``strerror`` to one that says what to do. Others are returned as they are.
    """
    advice = _ADVICE.get(exc.errno or 0)
    if advice is None:
        return exc
    return type(exc)(exc.errno, f"{exc.strerror}; {advice}", path)


def symlink_refused(path: str) -> InsecureLockPathError:
    """The error for a symlink found where one of our files should be."""
    return InsecureLockPathError(
        f"{path} is a symlink; refusing to follow it (its target is left "
        "untouched). Remove the symlink if you did not create it."
    )
