"""The holder's record: the ``<name>.pid`` JSON file.

The record is advisory. It is written atomically by the process that holds
the lock, right after locking, and removed by that process on release while
the lock is still held. Readers never trust it on its own: anything that is
not a complete, well-typed record of the expected name reads as "unknown".
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import stat
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from singleton_proc._base import platform as _platform
from singleton_proc._base.holder import Holder
from singleton_proc._errors import InsecureLockPathError

from .directory import FILE_MODE, NameFiles, open_no_follow

if TYPE_CHECKING:
    from .identity import Identity

__all__ = [
    "RECORD_VERSION",
    "decode_record",
    "encode_own_record",
    "encode_record",
    "load_record",
    "read_record",
    "remove_record",
    "write_record",
]

#: Bumped whenever the JSON layout changes incompatibly.
RECORD_VERSION = 1
#: A record is a few hundred bytes; anything much larger is not one of ours.
_MAX_RECORD_BYTES = 64 * 1024
#: Plausible bounds for the times in a record: anything outside is not ours.
_LATEST_EPOCH = 1e11  # year 5138
_EARLIEST_YEAR, _LATEST_YEAR = 1970, 9000

_log = logging.getLogger("singleton_proc")
_STARTED_MARK = "\x00started_at\x00"  # cannot occur in any other field's JSON


def encode_record(holder: Holder) -> bytes:
    """Serialize ``holder`` as the JSON record."""
    fields = (
        holder.name,
        holder.pid,
        holder.create_time,
        holder.cmdline,
        holder.user,
        holder.host,
    )
    head, tail = _template(fields)
    return b"%s%s%s" % (head, holder.started_at.isoformat().encode(), tail)


def encode_own_record(identity: Identity, name: str) -> bytes:
    """The record this process writes as it takes ``name``, stamped now.

    What :func:`encode_record` writes for a ``Holder`` built from
    ``identity``, without building one (nor a ``datetime``): this runs at
    every acquire.
    """
    fields = (
        name,
        identity.pid,
        identity.create_time,
        identity.cmdline,
        identity.user,
        identity.host,
    )
    head, tail = _template(fields)
    return b"%s%s%s" % (head, _utc_now_iso(), tail)


#: The last whole second :func:`_utc_now_iso` wrote, and its date and time.
_last_second: tuple[int, bytes] = (0, b"")


def _utc_now_iso() -> bytes:
    """The time now, as ``datetime.now(timezone.utc).isoformat()`` writes it.

    Always with microseconds (which ``isoformat`` leaves out when they are
    zero; both read back alike). The date and time of day change once a
    second, so they are formatted once a second.
    """
    global _last_second  # noqa: PLW0603  (a cache; a tuple is swapped whole)
    now = time.time()
    second = int(now)
    cached, text = _last_second
    if second != cached:
        when = datetime.fromtimestamp(second, timezone.utc)
        text = when.strftime("%Y-%m-%dT%H:%M:%S").encode()
        _last_second = (second, text)
    return b"%s.%06d+00:00" % (text, int((now - second) * 1_000_000))


@functools.lru_cache(maxsize=64)
def _template(
    fields: tuple[str, int, float, tuple[str, ...], str, str],
) -> tuple[bytes, bytes]:
    """The JSON record around the text of its ``started_at``: ``(before, after)``.

    Everything but ``started_at`` is the same at every acquire of a name in
    a process, so it is encoded once; the timestamp (ISO 8601, which needs
    no JSON escaping) goes between the two halves.
    """
    name, pid, create_time, cmdline, user, host = fields
    text = json.dumps(
        {
            "version": RECORD_VERSION,
            "name": name,
            "pid": pid,
            "create_time": create_time,
            "started_at": _STARTED_MARK,
            "cmdline": list(cmdline),
            "user": user,
            "host": host,
        },
        separators=(", ", ": "),
    )
    head, _, tail = text.partition(json.dumps(_STARTED_MARK))
    return f'{head}"'.encode(), f'"{tail}'.encode()


def decode_record(data: bytes, name: str) -> Holder | None:
    """Parse a record of ``name``; ``None`` for anything that is not one.

    Empty, truncated, binary, oversized, non-JSON, wrongly typed, of another
    version or of another name: all read as "unknown", never as an error.
    """
    if len(data) > _MAX_RECORD_BYTES:
        return None
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    version = raw.get("version")
    if type(version) is not int or version != RECORD_VERSION:
        return None
    try:
        return _holder_from(raw, name)
    except (TypeError, ValueError, OverflowError):
        return None


def _holder_from(raw: dict[str, Any], name: str) -> Holder | None:
    """Build a ``Holder`` from a decoded record, checking every field's type."""
    pid, create_time = raw.get("pid"), raw.get("create_time")
    cmdline, started = raw.get("cmdline"), raw.get("started_at")
    user, host = raw.get("user"), raw.get("host")
    if (
        raw.get("name") != name
        or type(pid) is not int
        or pid <= 0
        or not isinstance(create_time, (int, float))
        or isinstance(create_time, bool)
        or not math.isfinite(create_time)
        or not 0 < create_time < _LATEST_EPOCH
        or not isinstance(started, str)
        or not isinstance(cmdline, list)
        or not all(isinstance(arg, str) for arg in cmdline)
        or not isinstance(user, str)
        or not isinstance(host, str)
    ):
        return None
    started_at = datetime.fromisoformat(started)
    if started_at.tzinfo is None or not _EARLIEST_YEAR < started_at.year < _LATEST_YEAR:
        return None  # naive, or so far off that local-time arithmetic could overflow
    return Holder(
        name=name,
        pid=pid,
        create_time=float(create_time),
        started_at=started_at.astimezone(timezone.utc),
        cmdline=tuple(cmdline),
        user=user,
        host=host,
    )


def load_record(files: NameFiles) -> Holder | None:
    """Look at ``<name>.pid`` as the next holder: what the last one recorded.

    Returns:
        The record a previous holder left (it crashed, or holds the name
        still), or ``None`` if there is none or it is unreadable.

    Raises:
        InsecureLockPathError: the record path is a symlink (or not a regular
            file): someone is meddling, and we will not write through it.
    """
    if not _platform.exists_no_follow(files.record):
        return None  # the common case: the last holder removed it
    try:
        fd, _ = open_no_follow(files.record, os.O_RDONLY)
    except FileNotFoundError:  # removed just now
        return None
    except InsecureLockPathError:
        raise
    except OSError:  # unreadable to us (another user's, a permission issue)
        return None
    try:
        data = os.read(fd, _MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return decode_record(data, files.name)


def read_record(files: NameFiles) -> Holder | None:
    """Read the record of a name, for looking; ``None`` when missing or unreadable.

    A symlink in place of the record is not followed and reads as missing.
    """
    try:
        return load_record(files)
    except InsecureLockPathError:
        return None


def write_record(files: NameFiles, record: bytes) -> bool:
    """Atomically replace the record of a name with ``record``.

    The data goes to the name's one temporary file, ``.<name>.pid.tmp``,
    which then replaces the record in one ``os.replace`` (which never
    follows a symlink at the target). Only the holder writes that file,
    under the lock, so one found there was left by a writer that died
    between creating and renaming it: it is replaced (see
    :func:`_create_temp`). A crashed writer's temporary file is thus gone
    after the next acquire of its name, with no random name, no directory
    listing and no extra system call in the common case. No fsync: the
    record describes a running process and means nothing after a reboot.

    The record is advisory, so failing to write it (a full disk, another
    user's stale file in a sticky directory, a reader holding it open on
    Windows) does not fail the caller, who holds the lock: it is logged, and
    the holder reads as unknown. A short write (a disk that fills up
    mid-record) counts as a failure: a partial record is never published.

    Args:
        files: The name's files.
        record: What to record (see :func:`encode_own_record`).

    Returns:
        Whether the record was written.
    """
    try:
        fd, st = _create_temp(files.temp)
    except OSError as exc:
        return _not_written(files, exc)
    try:
        try:
            if stat.S_IMODE(st.st_mode) != FILE_MODE:  # a umask took bits away
                _platform.set_mode(fd, FILE_MODE)
            _write_all(fd, record)
        finally:
            os.close(fd)
        os.replace(files.temp, files.record)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(files.temp)
        if isinstance(exc, OSError):
            return _not_written(files, exc)
        raise
    return True


def _create_temp(path: str) -> tuple[int, os.stat_result]:
    """Create the temporary file anew (``O_EXCL``); return it open, and its stat.

    One found there was left by a writer killed before its rename (or is a
    symlink someone planted): it is unlinked, which removes a symlink itself
    and never its target, and the file is created again. The common case
    costs no more than the create.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return open_no_follow(path, flags)
    except FileExistsError:
        os.unlink(path)
        return open_no_follow(path, flags)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: ``os.write`` may write less (a disk filling up).

    Writing the rest makes the OS say why it cannot (``ENOSPC``,
    ``EDQUOT``, ``EFBIG``), which is then the error reported.
    """
    done = os.write(fd, data)
    while done < len(data):
        written = os.write(fd, data[done:])
        if written == 0:  # never for a regular file; a loop for ever if it were
            raise OSError(errno.EIO, "the record could not be written in full")
        done += written


def _not_written(files: NameFiles, exc: OSError) -> bool:
    """Log that the record could not be written; the holder goes on without one."""
    _log.warning(
        "could not write the record %s (%s); holding without it", files.record, exc
    )
    return False


def remove_record(files: NameFiles) -> None:
    """Delete the record of a name; a failure is logged, never raised."""
    try:
        os.unlink(files.record)
    except FileNotFoundError:
        return
    except OSError as exc:
        _log.warning("could not remove the record %s (%s)", files.record, exc)
