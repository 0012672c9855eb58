"""The holder's record: the ``<name>.pid`` JSON file.

The record is advisory. It is written atomically by the process that holds
the lock, right after locking, and removed by that process on release while
the lock is still held. Readers never trust it on its own: anything that is
not a complete, well-typed record of the expected name reads as "unknown".
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import string
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import _platform
from ._errors import InsecureLockPathError
from ._holder import Holder
from ._paths import FILE_MODE, open_no_follow, symlink_refused

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "RECORD_VERSION",
    "decode_record",
    "encode_record",
    "read_record",
    "record_path",
    "remove_record",
    "write_record",
]

#: Bumped whenever the JSON layout changes incompatibly.
RECORD_VERSION = 1
#: A record is a few hundred bytes; anything much larger is not one of ours.
_MAX_RECORD_BYTES = 64 * 1024
_TOKEN_HEX = 16
#: Plausible bounds for the times in a record: anything outside is not ours.
_LATEST_EPOCH = 1e11  # year 5138
_EARLIEST_YEAR, _LATEST_YEAR = 1970, 9000

_log = logging.getLogger("singleton_proc")
_TEMP_SUFFIX = ".tmp"


def record_path(directory: Path, name: str) -> Path:
    """Where the record of ``name`` lives."""
    return directory / f"{name}.pid"


def encode_record(holder: Holder) -> bytes:
    """Serialize ``holder`` as the JSON record."""
    return json.dumps(
        {
            "version": RECORD_VERSION,
            "name": holder.name,
            "pid": holder.pid,
            "create_time": holder.create_time,
            "started_at": holder.started_at.isoformat(),
            "cmdline": list(holder.cmdline),
            "user": holder.user,
            "host": holder.host,
        },
        separators=(", ", ": "),
    ).encode()


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


def read_record(directory: Path, name: str) -> Holder | None:
    """Read the record of ``name``; ``None`` when missing or unreadable.

    A symlink in place of the record is not followed and reads as missing.
    """
    try:
        fd = open_no_follow(record_path(directory, name), os.O_RDONLY)
    except OSError:  # missing, unreadable, a symlink, not a regular file
        return None
    try:
        data = os.read(fd, _MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return decode_record(data, name)


def write_record(directory: Path, holder: Holder) -> bool:
    """Atomically replace the record of ``holder.name`` with ``holder``.

    The data goes to a new, randomly named temporary file (``O_EXCL``, no
    symlink followed) that then replaces the record in one ``os.replace``.
    No fsync: the record describes a running process and means nothing
    after a reboot. Stale temporary files of this name, left by a holder
    that crashed mid-write, are swept afterwards.

    The record is advisory, so failing to write it (a full disk, another
    user's stale record in a sticky directory, a reader holding it open on
    Windows) does not fail the caller, who holds the lock: it is logged, and
    the holder reads as unknown.

    Returns:
        Whether the record was written.

    Raises:
        InsecureLockPathError: the record or temporary path is a symlink.
    """
    target = record_path(directory, holder.name)
    prefix = _temp_prefix(holder.name)
    temp = directory / f"{prefix}{os.urandom(_TOKEN_HEX // 2).hex()}{_TEMP_SUFFIX}"
    try:
        fd = open_no_follow(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            _platform.set_mode(fd, FILE_MODE)
            os.write(fd, encode_record(holder))
        finally:
            os.close(fd)
        try:
            # os.replace never follows a symlink at the target, but a symlink
            # there means someone is meddling: refuse rather than hide it.
            if target.is_symlink():
                raise symlink_refused(target)  # noqa: TRY301  (cleanup below)
            temp.replace(target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    except InsecureLockPathError:
        raise
    except OSError as exc:
        _log.warning(
            "could not write the record %s (%s); holding without it", target, exc
        )
        return False
    _sweep_temp_files(directory, prefix)
    return True


def remove_record(directory: Path, name: str) -> None:
    """Delete the record of ``name``; a failure is logged, never raised."""
    path = record_path(directory, name)
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        _log.warning("could not remove the record %s (%s)", path, exc)


def _temp_prefix(name: str) -> str:
    """The prefix of the temporary files of ``name``'s record."""
    return f".{name}.pid."


def _sweep_temp_files(directory: Path, prefix: str) -> None:
    """Remove temporary record files of one name left behind by crashes.

    Only the lock holder writes them, and the caller holds the lock, so any
    that exist besides the one just renamed are stale. The match is exact
    (prefix, 16 hex digits, ``.tmp``) so another name's files never match.
    """
    size = len(prefix) + _TOKEN_HEX + len(_TEMP_SUFFIX)
    try:
        with os.scandir(directory) as entries:
            stale = [
                entry.path
                for entry in entries
                if len(entry.name) == size
                and entry.name.startswith(prefix)
                and entry.name.endswith(_TEMP_SUFFIX)
                and all(
                    c in string.hexdigits
                    for c in entry.name[len(prefix) : len(prefix) + _TOKEN_HEX]
                )
            ]
    except OSError:  # a directory we may write but not list: nothing to sweep
        return
    for path in stale:
        with contextlib.suppress(OSError):  # another user's, in a sticky directory
            os.unlink(path)
