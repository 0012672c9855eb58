"""Everything that differs between Linux, macOS and Windows, chosen once.

portalocker and psutil do most of the platform work; what is left lives
here, with every branch importable everywhere so that the rest of the
package never tests ``os.name`` or ``sys.platform`` itself:

* the OS lock: an explicit portalocker locker (``flock`` on POSIX through
  its primitive, ``msvcrt.locking`` on Windows), never its global ``LOCKER``;
* open flags (``O_NOFOLLOW``, ``O_CLOEXEC``, ``O_NONBLOCK``) and file modes;
* where the per-user cache directory and its fallback are;
* links and junctions, fork hooks, filesystems, SIGTERM to oneself, ``prctl``.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import signal
import stat
import sys
import threading
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

from .portalocker_core import constants, exceptions, locking

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "HAS_FORK",
    "HAS_NOFOLLOW",
    "IS_WINDOWS",
    "OPEN_FLAGS",
    "adopt_orphans",
    "at_fork",
    "cache_home",
    "current_uid",
    "exists_no_follow",
    "fallback_directory",
    "filesystem_type",
    "is_absolute",
    "is_link",
    "map_named_memory",
    "process_group",
    "refused_symlink",
    "set_directory_mode",
    "set_mode",
    "set_parent_death_signal",
    "sigint_blocked",
    "sigterm_self",
    "thread_count",
    "try_lock",
    "unblock_sigint",
    "unlock",
]

IS_WINDOWS = os.name == "nt"
#: ``os.fork`` and so ``subprocess``'s ``preexec_fn``: not on Windows.
HAS_FORK = hasattr(os, "fork")
IS_MACOS = sys.platform == "darwin"

_LOCKER: locking.BaseLocker
#: The ``fcntl``-style callable of the POSIX locker, called with plain ints.
_PRIMITIVE: Callable[[int, int], object] | None
if IS_WINDOWS:  # pragma: no cover - Windows is correct by design, not tested in CI
    _LOCKER = locking.MsvcrtLocker()
    _PRIMITIVE = None
else:
    _FLOCK = locking.FlockLocker()
    _LOCKER, _PRIMITIVE = _FLOCK, _FLOCK.locker
_EXCLUSIVE_NOW = constants.LockFlags.EXCLUSIVE | constants.LockFlags.NON_BLOCKING
_EXCLUSIVE_NOW_BITS = int(_EXCLUSIVE_NOW)
_UNLOCK_BITS = int(constants.LockFlags.UNBLOCK)

#: ``O_NOFOLLOW`` refuses a symlink in the last path component at open time.
#: Windows has no such flag; callers ``lstat`` first there.
HAS_NOFOLLOW = hasattr(os, "O_NOFOLLOW")

#: Flags of every ``os.open`` of our files: never follow a symlink, leak
#: the descriptor into an exec'd program, or block on a planted FIFO.
OPEN_FLAGS = (
    getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)

_REPARSE_POINT = 0x400  # FILE_ATTRIBUTE_REPARSE_POINT: symlinks and junctions


def try_lock(fd: int) -> bool:
    """Take the exclusive OS lock on ``fd`` without waiting.

    On POSIX it calls ``fcntl.flock`` as portalocker's ``FlockLocker`` holds
    it: the wrapper re-validates its flags, +25% on every acquire and release.

    Returns:
        ``True`` when the lock is now held through this open file,
        ``False`` when another open file holds it.

    Raises:
        OSError: locking failed for another reason (the filesystem does not
            support locks, the descriptor is bad); the original error is the
            cause.
    """
    if _PRIMITIVE is not None:
        try:
            _PRIMITIVE(fd, _EXCLUSIVE_NOW_BITS)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        return True
    try:  # pragma: no cover - Windows
        _LOCKER.lock(fd, _EXCLUSIVE_NOW)
    except exceptions.AlreadyLocked:
        return False
    except exceptions.LockException as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):
            raise cause from None
        raise OSError(str(exc)) from exc
    return True


def unlock(fd: int) -> None:
    """Release the OS lock held through ``fd``."""
    if _PRIMITIVE is not None:
        _PRIMITIVE(fd, _UNLOCK_BITS)
    else:  # pragma: no cover - Windows
        _LOCKER.unlock(fd)


def set_mode(fd: int, mode: int) -> None:
    """Give a file we created ``mode`` whatever the umask (POSIX only)."""
    if not IS_WINDOWS:
        os.fchmod(fd, mode)


def set_directory_mode(path: Path, mode: int) -> None:
    """Give a directory we created ``mode`` whatever the umask (POSIX only)."""
    if not IS_WINDOWS:
        os.chmod(path, mode, follow_symlinks=False)


def is_link(st: os.stat_result) -> bool:
    """Whether an ``lstat`` result is a symlink (or, on Windows, a junction)."""
    attributes = getattr(st, "st_file_attributes", 0)
    return stat.S_ISLNK(st.st_mode) or bool(attributes & _REPARSE_POINT)


def exists_no_follow(path: str) -> bool:
    """Whether anything, a symlink included, is at ``path``, without an exception.

    ``os.path.lexists`` raises and catches an ``OSError`` when nothing is
    there, which costs more than the system call: where ``access`` can
    leave a symlink unfollowed and look with the effective ids (as an
    ``open`` would), it answers instead.
    """
    if _ACCESS_ANSWERS:
        return os.access(path, os.F_OK, effective_ids=True, follow_symlinks=False)
    return os.path.lexists(path)  # pragma: no cover - tested in a sandboxed child


def _access_answers() -> bool:
    """Whether ``access`` can answer :func:`exists_no_follow` in this process.

    It needs ``faccessat2``, which a sandbox may refuse (older container
    runtimes' seccomp says ``EPERM``, musl ``EINVAL``): every answer would
    be "nothing there". One look at ``/``, which always exists, tells.
    """
    supported = os.access in os.supports_follow_symlinks and (
        os.access in os.supports_effective_ids
    )
    return supported and os.access(
        "/", os.F_OK, effective_ids=True, follow_symlinks=False
    )


_ACCESS_ANSWERS = _access_answers()


def is_absolute(path: str) -> bool:
    r"""Whether ``path`` names the same place from every working directory.

    On Windows that needs a drive (or a UNC share) and a root: ``\locks``
    depends on the current drive (``os.path.isabs`` takes it before 3.13).
    """
    if IS_WINDOWS:  # pragma: no cover - Windows is correct by design
        return PureWindowsPath(path).is_absolute()
    return os.path.isabs(path)


def refused_symlink(exc: OSError) -> bool:
    """Whether an ``O_NOFOLLOW`` open failed because the path is a symlink.

    Linux and macOS say ``ELOOP``; FreeBSD says ``EMLINK``.
    """
    return exc.errno in {errno.ELOOP, errno.EMLINK}


def at_fork(
    *,
    before: Callable[[], object] | None = None,
    after_in_parent: Callable[[], object] | None = None,
    after_in_child: Callable[[], object],
) -> None:
    """Register fork hooks, as :func:`os.register_at_fork` (POSIX only)."""
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - Windows has no fork
        return
    if before is not None and after_in_parent is not None:
        os.register_at_fork(before=before, after_in_parent=after_in_parent)
    os.register_at_fork(after_in_child=after_in_child)


def thread_count() -> int:
    """Threads of this process, those started by C code included where known."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: only the threads Python knows about
        import threading  # noqa: PLC0415

        return threading.active_count()


def sigterm_self() -> None:
    """SIGTERM to this process from any thread, as if sent by another process."""
    if IS_WINDOWS:  # os.kill would terminate it on the spot
        signal.raise_signal(signal.SIGTERM)
    else:  # to the main thread: sent to the process, another thread may get it
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread meanwhile; a child started now inherits the mask.

    A worker unblocks it (see :func:`unblock_sigint`) after ignoring SIGINT,
    so a Ctrl-C during its start-up is neither a traceback nor a death.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock_sigint() -> None:
    """Undo an inherited :func:`sigint_blocked` (in a worker, SIGINT ignored)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def process_group(pid: int) -> int | None:
    """The process group of ``pid``, or ``None`` (gone, or no groups: Windows)."""
    if IS_WINDOWS:  # pragma: no cover - Windows has no process groups
        return None
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def current_uid() -> int | None:
    """The effective user id, or ``None`` where there is no such thing."""
    if IS_WINDOWS:  # pragma: no cover - Windows is correct by design
        return None
    return os.geteuid()


def cache_home() -> Path | None:
    """The per-user cache directory that every session of the user shares.

    ``~`` is resolved as :func:`os.path.expanduser` does (``$HOME``, else the
    password database), never from session variables such as
    ``$XDG_RUNTIME_DIR`` or ``$TMPDIR``, which cron and systemd do not set.

    Returns:
        The directory, or ``None`` when the home is unusable: an empty or
        relative ``$HOME``, no password entry, or ``/`` (service users).
    """
    if IS_WINDOWS:  # pragma: no cover - Windows is correct by design
        local = os.environ.get("LOCALAPPDATA")
        return Path(local) if local else Path.home() / "AppData" / "Local"
    if os.environ.get("HOME") == "":
        return None  # expanduser would make "/" of it
    home = Path(os.path.expanduser("~"))
    if not home.is_absolute() or home == Path(home.anchor):
        return None
    if IS_MACOS:  # pragma: no cover - macOS is correct by design
        return home / "Library" / "Caches"
    return home / ".cache"


def fallback_directory() -> Path:
    """Where the private directory goes when the home directory cannot hold it.

    For service users and containers. ``/tmp`` literally (not ``$TMPDIR``,
    which differs between sessions), with the uid in the name: one per user.
    """
    if IS_WINDOWS:  # pragma: no cover - Windows is correct by design
        import getpass  # noqa: PLC0415  (Windows only)
        import tempfile  # noqa: PLC0415

        return Path(tempfile.gettempdir()) / f"singleton_proc-{getpass.getuser()}"
    return Path(f"/tmp/singleton_proc-{os.geteuid()}")  # noqa: S108


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding ``path`` (``"ext4"``, ``"nfs4"``, ...).

    From psutil's mount table (every platform); ``"remote"`` appended for a
    Windows network drive.
    """
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
    return f"{best.fstype} remote" if "remote" in best.opts else best.fstype


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PR_SET_CHILD_SUBREAPER = 36


def set_parent_death_signal() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux).

    For a child between fork and exec (``preexec_fn``): a command must not
    outlive the ``singleton-proc run`` wrapper holding its name. It survives
    ``exec`` (not of set-user-ID programs), fires when the *thread* that forked
    us exits, misses a parent dead before it (check ``os.getppid()`` after).

    Raises:
        OSError: ``prctl`` refused.
    """
    if not sys.platform.startswith("linux"):  # pragma: no cover - Linux only
        return
    _prctl("PR_SET_PDEATHSIG", _PR_SET_PDEATHSIG, signal.SIGKILL)


def adopt_orphans() -> bool:
    """Become a child subreaper (Linux): our orphaned descendants become our children.

    A daemon that double-forks is then re-parented to us, not to init, and stays
    in our tree; our children do not inherit it. Elsewhere a no-op.

    Returns:
        Whether this process adopts orphans now (the caller must reap them).
    """
    if not sys.platform.startswith("linux"):  # pragma: no cover - Linux only
        return False
    try:
        _prctl("PR_SET_CHILD_SUBREAPER", _PR_SET_CHILD_SUBREAPER, 1)
    except OSError:  # pragma: no cover - a kernel older than 3.4
        return False
    return True


def map_named_memory(name: str) -> mmap.mmap | None:
    """Map a page of memory named ``name`` (Linux: a memory file), or ``None``.

    While the result is kept, ``/proc/<pid>/maps`` names it here and in what
    we fork without ``exec``. ``None`` without memory files (macOS, Windows).
    """
    create = getattr(os, "memfd_create", None)
    if create is None:  # pragma: no cover - Linux only
        return None
    try:
        fd = create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, mmap.PAGESIZE)
            return mmap.mmap(fd, mmap.PAGESIZE, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - refused by a sandbox
        return None


def _prctl(what: str, option: int, value: int) -> None:
    """``prctl(option, value)`` (Linux); ``what`` names it in the error."""
    import ctypes  # noqa: PLC0415  (only where it is used, never on import)

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({what}): {os.strerror(code)}")
