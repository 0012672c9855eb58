"""What Linux's ``/proc`` tells without taking a lock: holders, mounts, namespaces.

Who holds a ``flock`` (``/proc/locks``), which lock files a process has open
(``/proc/<pid>/fd``), which PID namespace a process sees, which
processes were started with a given environment variable, and which
memory files a process maps. Where there is
no ``/proc`` (macOS, Windows) every answer is "cannot tell" (``None``, ``()``
or ``False``), and callers fall back to trying the lock for an instant.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = [
    "StartEnvironment",
    "flock_holders",
    "in_child_pid_namespace",
    "mapped_memory_names",
    "namespace_pids",
    "open_lock_files",
    "start_digest",
    "start_environments",
]

_PROC = Path("/proc")
#: What :func:`start_environments` tells of one process: words and digest.
StartEnvironment = tuple[frozenset[str], int]
_PROC_LOCKS = _PROC / "locks"
_MOUNTINFO = _PROC / "self" / "mountinfo"


def flock_holders(directory: str, st: os.stat_result) -> frozenset[int] | None:
    """The pids holding a ``flock`` on a file in ``directory``, without locking.

    Linux lists every lock in ``/proc/locks`` by inode and by the device of
    the filesystem's superblock (hexadecimal ``major:minor``). That device
    is the one ``stat`` reports on most filesystems, but not on overlayfs
    (containers) or btrfs subvolumes, where ``/proc/self/mountinfo`` has it;
    both are accepted. Lines marked ``->`` are waiters, not holders.

    In a PID namespace below the initial one (a container, ``unshare
    --pid``), ``/proc/locks`` leaves out the locks of processes outside it
    (older kernels list them with pid 0): there, no visible holder proves
    nothing.

    Returns:
        The holders' pids (empty when the file is not locked), or ``None``
        when the platform cannot tell without taking the lock: no
        ``/proc/locks``, a holder this namespace cannot see, or no holder
        listed from inside a PID namespace of our own.
    """
    try:
        text = _PROC_LOCKS.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    wanted = {f"{_device(st.st_dev)}:{st.st_ino}"}
    mount_device = _mount_device(directory)
    if mount_device:
        wanted.add(f"{mount_device}:{st.st_ino}")
    pids: set[int] = set()
    for line in text.splitlines():
        fields = line.split()
        # Fields: ordinal, FLOCK, ADVISORY, WRITE, pid, major:minor:inode, ...
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] in wanted:  # noqa: PLR2004
            with contextlib.suppress(ValueError):
                pids.add(int(fields[4]))
    if any(pid <= 0 for pid in pids) or (not pids and in_child_pid_namespace()):
        return None
    return frozenset(pids)


#: ``PROC_PID_INIT_INO``: the inode of the initial PID namespace in ``ns/pid``.
_INIT_PID_NAMESPACE = 0xEFFFFFFC


def in_child_pid_namespace() -> bool:
    """Whether this process runs in a PID namespace below the initial one.

    Inside one (a container), ``/proc`` shows only the processes of that
    namespace, and ``/proc/locks`` only their locks. ``False`` where there
    are no PID namespaces.
    """
    try:
        return os.stat(_PROC / "self" / "ns" / "pid").st_ino != _INIT_PID_NAMESPACE
    except OSError:
        return False


def namespace_pids(pid: int) -> tuple[int, ...]:
    """``pid``'s numbers from this PID namespace down to its own (``NSpid``).

    ``(4242, 1)`` for the first process of a container seen from the host;
    one number for a process of this namespace; ``()`` when unknown (gone,
    or not Linux).
    """
    try:
        status = (_PROC / str(pid) / "status").read_bytes().decode("ascii", "replace")
    except OSError:
        return ()
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            with contextlib.suppress(ValueError):
                return tuple(int(field) for field in line.split()[1:])
    return ()


def _device(dev: int) -> str:
    """``st_dev`` as ``/proc/locks`` writes devices: hexadecimal ``major:minor``."""
    return f"{os.major(dev):02x}:{os.minor(dev):02x}"


_mount_devices: dict[str, str] = {}


def _mount_device(directory: str) -> str:
    """The superblock device of the mount holding ``directory``, or ``""``.

    Read from ``/proc/self/mountinfo`` (decimal ``major:minor``, mount points
    octal-escaped) once per directory per process.
    """
    key = directory
    if key not in _mount_devices:
        real = os.path.realpath(directory)
        best, device = "", ""
        try:
            lines = _MOUNTINFO.read_text(
                encoding="utf-8", errors="replace"
            ).splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split()
            if len(fields) < 5:  # noqa: PLR2004
                continue
            mount = _unescape_mount(fields[4])
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best):
                major, _, minor = fields[2].partition(":")
                with contextlib.suppress(ValueError):
                    device = f"{int(major):02x}:{int(minor):02x}"
                    best = mount
        _mount_devices[key] = device
    return _mount_devices[key]


def _unescape_mount(field: str) -> str:
    r"""Undo mountinfo's octal escapes (``\040`` for a space, and so on)."""
    if "\\" not in field:
        return field
    return field.encode("latin-1", "backslashreplace").decode("unicode_escape")


def open_lock_files(pid: int, path: str) -> frozenset[tuple[int, int]] | None:
    """``(st_dev, st_ino)`` of the files named ``path`` that ``pid`` has open.

    Includes a file deleted since it was opened (Linux shows it as
    ``"<path> (deleted)"``): the evidence that a live holder still holds a
    lock file someone removed or replaced under it.

    Returns:
        The open files' identities, or ``None`` when the platform cannot tell
        (not Linux, or not allowed to look at that process's descriptors).
    """
    fd_dir = _PROC / str(pid) / "fd"
    names = {path, f"{path} (deleted)"}
    found: set[tuple[int, int]] = set()
    try:
        entries = os.listdir(fd_dir)
    except OSError:
        return None
    for entry in entries:
        try:
            if os.readlink(fd_dir / entry) in names:
                st = os.stat(fd_dir / entry)  # follows the magic link to the open file
                found.add((st.st_dev, st.st_ino))
        except OSError:  # closed meanwhile
            continue
    return frozenset(found)


def start_environments(variable: str) -> dict[int, StartEnvironment] | None:
    """Each process's environment at start, as far as a mark needs it.

    ``/proc/<pid>/environ`` is the environment the process was started
    with: its children inherit it through ``exec``, and what it forks
    without ``exec`` shows the very same bytes. Only the processes we may
    look into are seen (our own user's, or all as root).

    Returns:
        ``{pid: (words, digest)}``: ``variable``'s value as words separated
        by spaces (none when unset), and a digest of the whole environment
        (equal for equal environments, within this process); ``None``
        where there is no ``/proc``.
    """
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return None
    prefix = f"{variable}=".encode()
    found: dict[int, StartEnvironment] = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            data = (_PROC / entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        words: frozenset[str] = frozenset()
        start = data.find(prefix)
        while start > 0 and data[start - 1] != 0:  # inside another setting
            start = data.find(prefix, start + 1)
        if start >= 0:
            end = data.find(b"\0", start)
            value = data[start + len(prefix) : end if end >= 0 else None]
            words = frozenset(value.decode(errors="replace").split())
        found[int(entry)] = (words, hash(data))
    return found


def start_digest(pid: int) -> int | None:
    """The digest :func:`start_environments` gives ``pid`` (``None``: unreadable)."""
    try:
        return hash((_PROC / str(pid) / "environ").read_bytes())
    except OSError:  # gone, or not ours to read
        return None


def mapped_memory_names(pid: int, prefix: str) -> frozenset[str] | None:
    """The names starting with ``prefix`` of the memory files ``pid`` maps.

    A memory file (``memfd_create``) shows in ``/proc/<pid>/maps`` as
    ``/memfd:<name> (deleted)``, in its creator and in every process that
    inherited the mapping by forking without ``exec``.

    Returns:
        The names, or ``None`` when we cannot tell (gone, not ours to read,
        or no ``/proc``).
    """
    try:
        text = (_PROC / str(pid) / "maps").read_bytes().decode(errors="replace")
    except OSError:
        return None
    wanted = f"/memfd:{prefix}"
    names = set()
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(wanted):  # noqa: PLR2004
            names.add(fields[5][len("/memfd:") :].removesuffix(" (deleted)"))
    return frozenset(names)
