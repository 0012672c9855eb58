"""Everything that differs between Linux, macOS and Windows, chosen once.

portalocker and psutil do most of the platform work; what is left lives
here, with every branch importable everywhere so that the rest of the
package never tests ``os.name`` or ``sys.platform`` itself:

* the OS lock: an explicit portalocker locker (``flock`` on POSIX,
  ``msvcrt.locking`` on Windows), never portalocker's global, mutable
  ``LOCKER`` setting;
* open flags (``O_NOFOLLOW``, ``O_CLOEXEC``, ``O_NONBLOCK``) and file modes;
* where the per-user cache directory and its fallback are;
* who holds a lock, read without taking it (Linux: ``/proc/locks``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from portalocker import exceptions as _pl_exceptions
from portalocker.constants import LockFlags
from portalocker.portalocker import BaseLocker

__all__ = [
    "HAS_NOFOLLOW",
    "IS_WINDOWS",
    "OPEN_FLAGS",
    "cache_home",
    "current_uid",
    "fallback_directory",
    "flock_holders",
    "set_mode",
    "try_lock",
    "unlock",
]

IS_WINDOWS = os.name == "nt"
IS_MACOS = sys.platform == "darwin"

_LOCKER: BaseLocker
if IS_WINDOWS:  # pragma: no cover - Windows is correct by design, not tested in CI
    from portalocker.portalocker import MsvcrtLocker

    _LOCKER = MsvcrtLocker()
else:
    from portalocker.portalocker import FlockLocker

    _LOCKER = FlockLocker()
_EXCLUSIVE_NOW = LockFlags.EXCLUSIVE | LockFlags.NON_BLOCKING

#: ``O_NOFOLLOW`` refuses a symlink in the last path component at open time.
#: Windows has no such flag; callers ``lstat`` first there.
HAS_NOFOLLOW = hasattr(os, "O_NOFOLLOW")

#: Flags added to every ``os.open`` of our files: never follow a symlink,
#: never leak the descriptor into an exec'd program, never block on a FIFO
#: planted where a regular file should be.
OPEN_FLAGS = (
    getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)

_PROC_LOCKS = Path("/proc/locks")


def try_lock(fd: int) -> bool:
    """Take the exclusive OS lock on ``fd`` without waiting.

    Returns:
        ``True`` when the lock is now held through this open file,
        ``False`` when another open file holds it.

    Raises:
        OSError: locking failed for another reason (the filesystem does not
            support locks, the descriptor is bad); the original error is the
            cause.
    """
    try:
        _LOCKER.lock(fd, _EXCLUSIVE_NOW)
    except _pl_exceptions.AlreadyLocked:
        return False
    except _pl_exceptions.LockException as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):
            raise cause from None
        raise OSError(str(exc)) from exc
    return True


def unlock(fd: int) -> None:
    """Release the OS lock held through ``fd``."""
    _LOCKER.unlock(fd)


def set_mode(fd: int, mode: int) -> None:
    """Give a file we created ``mode`` whatever the umask (POSIX only)."""
    if not IS_WINDOWS:
        os.fchmod(fd, mode)


def current_uid() -> int | None:
    """The effective user id, or ``None`` where there is no such thing."""
    if IS_WINDOWS:  # pragma: no cover - Windows is correct by design
        return None
    return os.geteuid()


def cache_home() -> Path:
    """The per-user cache directory that every session of the user shares.

    ``~`` is resolved as :func:`os.path.expanduser` does (``$HOME``, else the
    password database), never from session variables such as
    ``$XDG_RUNTIME_DIR`` or ``$TMPDIR``, which cron and systemd do not set.
    """
    if IS_WINDOWS:  # pragma: no cover - Windows is correct by design
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    home = Path(os.path.expanduser("~"))  # noqa: PTH111  (documented semantics)
    if IS_MACOS:  # pragma: no cover - macOS is correct by design
        return home / "Library" / "Caches"
    return home / ".cache"


def fallback_directory() -> Path:
    """Where the private directory goes when the home directory cannot hold it.

    Service users and containers often have no home, or one they cannot
    write to. ``/tmp`` is used literally (not ``$TMPDIR``, which differs
    between sessions), with the uid in the name so that every user has one.
    """
    if IS_WINDOWS:  # pragma: no cover - Windows is correct by design
        import tempfile  # noqa: PLC0415  (Windows only)

        return Path(tempfile.gettempdir()) / "singleton_proc"
    return Path(f"/tmp/singleton_proc-{os.geteuid()}")  # noqa: S108


def flock_holders(st: os.stat_result) -> frozenset[int] | None:
    """The pids holding a ``flock`` on the file ``st`` describes, without locking.

    Linux lists every lock in ``/proc/locks``, identified by the device
    (hexadecimal ``major:minor``) and the inode; lines marked ``->`` are
    waiters, not holders.

    Returns:
        The holders' pids (empty when the file is not locked), or ``None``
        when the platform cannot tell without taking the lock.
    """
    try:
        text = _PROC_LOCKS.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: set[int] = set()
    for line in text.splitlines():
        fields = line.split()
        # Fields: ordinal, FLOCK, ADVISORY, WRITE, pid, major:minor:inode, ...
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:  # noqa: PLR2004
            try:
                pids.add(int(fields[4]))
            except ValueError:
                continue
    return frozenset(pids)
