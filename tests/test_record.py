"""The holder's record: complete, atomic, and never trusted blindly."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import socket
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import psutil
import pytest

from singleton_proc import (
    AlreadyRunningError,
    InsecureLockPathError,
    SingleInstance,
    holder,
    is_running,
)
from singleton_proc._lock.identity import current_identity
from singleton_proc._lock.record import decode_record, encode_own_record, encode_record

from helpers import (
    DEADLINE,
    as_user,
    holding,
    linux_only,
    needs_root,
    posix_only,
    reap,
    record_of,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = posix_only("POSIX file modes and symlinks, other users")

GOOD = {
    "version": 1,
    "name": "bot",
    "pid": 12,
    "create_time": 1.5,
    "started_at": "2026-11-27T13:45:00+00:00",
    "cmdline": ["python", "bot.py"],
    "user": "alice",
    "host": "box",
}


def _variant(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_a_good_record_decodes() -> None:
    found = decode_record(_variant(), "bot")
    assert found is not None
    assert found.pid == 12
    assert found.cmdline == ("python", "bot.py")
    assert found.started_at == datetime(2026, 11, 27, 13, 45, tzinfo=timezone.utc)
    assert decode_record(encode_record(found), "bot") == found


def _own_record_now() -> tuple[bytes, datetime, datetime]:
    before = datetime.now(timezone.utc)
    data = encode_own_record(current_identity(), "bot")
    return data, before, datetime.now(timezone.utc)


def test_our_own_record_says_who_we_are_and_since_when() -> None:
    data, before, after = _own_record_now()
    found = decode_record(data, "bot")
    assert found is not None
    me = current_identity()
    assert (found.pid, found.create_time, found.cmdline) == (
        me.pid,
        me.create_time,
        me.cmdline,
    )
    assert (found.user, found.host) == (me.user, me.host)
    assert before - timedelta(microseconds=1) <= found.started_at <= after
    # One layout, whichever way it is written (isoformat leaves out zero
    # microseconds, which our stamp always writes: both read back alike).
    assert json.loads(encode_record(found)) == {
        **json.loads(data),
        "started_at": found.started_at.isoformat(),
    }
    stamp = json.loads(data)["started_at"]
    assert len(stamp) == len("2026-11-27T13:45:00.000000+00:00"), stamp


def test_the_time_in_our_record_moves_on_to_the_next_second() -> None:
    """The date and time of day are formatted once a second, and not longer."""
    _own_record_now()
    time.sleep(1.05 - time.time() % 1)  # into the next second: a clock condition
    data, before, after = _own_record_now()
    found = decode_record(data, "bot")
    assert found is not None
    assert before - timedelta(microseconds=1) <= found.started_at <= after


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        _variant()[:-5],
        b"\x00\xff\xfe binary \x80",
        b"[" * 100_000 + b"]" * 100_000,
        b" " * (1024 * 1024),
        b"12345",
        b'"a string"',
        b"null",
        b"[]",
        _variant(version=2),
        _variant(version="1"),
        _variant(name="other"),
        _variant(pid="12"),
        _variant(pid=True),
        _variant(pid=-1),
        _variant(pid=0),
        _variant(create_time="1.5"),
        _variant(create_time=None),
        b'{"version": 1, "pid": 12, "create_time": NaN}',
        _variant(started_at="yesterday"),
        _variant(started_at="2026-11-27T13:45:00"),
        _variant(started_at="9999-12-31T23:00:00-05:00"),
        _variant(started_at="0001-01-01T00:00:00+05:00"),
        _variant(create_time=1e308),
        _variant(create_time=-1e12),
        _variant(version=True),
        _variant(version=1.0),
        _variant(started_at=5),
        _variant(cmdline="python bot.py"),
        _variant(cmdline=["python", 3]),
        _variant(user=None),
        _variant(host=["box"]),
        json.dumps({k: v for k, v in GOOD.items() if k != "user"}).encode(),
    ],
)
def test_a_bad_record_reads_as_unknown(data: bytes) -> None:
    assert decode_record(data, "bot") is None


@pytest.mark.parametrize("data", [b"", b"\x00" * 10, b"{not json", b"9" * 200_000])
def test_a_bad_record_on_disk_never_crashes_nor_misleads(
    lock_dir: Path, data: bytes
) -> None:
    with holding("bot", lock_dir):
        (lock_dir / "bot.pid").write_bytes(data)
        assert is_running("bot", lock_dir)
        assert holder("bot", lock_dir) is None
        with pytest.raises(
            AlreadyRunningError, match="record is missing or unreadable"
        ) as info:
            SingleInstance("bot", directory=lock_dir).acquire()
        assert info.value.holder is None
    with SingleInstance("bot", directory=lock_dir):  # then it is simply overwritten
        assert record_of(lock_dir, "bot") is not None


def test_record_is_complete_and_removed_on_release(lock_dir: Path) -> None:
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    me = psutil.Process()
    with SingleInstance("bot", directory=lock_dir):
        raw = json.loads((lock_dir / "bot.pid").read_text())
        assert set(raw) == {
            "version",
            "name",
            "pid",
            "create_time",
            "started_at",
            "cmdline",
            "user",
            "host",
        }
        found = record_of(lock_dir, "bot")
        assert found is not None
        assert found.name == "bot"
        assert found.pid == os.getpid()
        assert found.create_time == me.create_time()
        assert found.cmdline == tuple(me.cmdline())
        assert found.user == me.username()
        assert found.host == socket.gethostname()
        assert before < found.started_at <= datetime.now(timezone.utc)
    assert not (lock_dir / "bot.pid").exists()
    assert (lock_dir / "bot.lock").exists(), "the lock file is never deleted"


def test_files_are_0644_whatever_the_umask(lock_dir: Path) -> None:
    old = os.umask(0o077)
    try:
        with SingleInstance("bot", directory=lock_dir):
            for name in ("bot.lock", "bot.pid"):
                assert stat.S_IMODE((lock_dir / name).stat().st_mode) == 0o644, name
    finally:
        os.umask(old)


CHURN = """
import sys
from singleton_proc import SingleInstance
instance = SingleInstance("bot", directory=sys.argv[1])
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    with instance:
        pass
"""


def test_readers_never_see_a_partial_record(lock_dir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHURN, str(lock_dir), "3000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = 0
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        path = lock_dir / "bot.pid"
        while proc.poll() is None:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            assert decode_record(data, "bot") is not None, data
            seen += 1
        assert proc.wait(DEADLINE) == 0
    finally:
        reap(proc)
    assert seen > 0, "the reader never overlapped a write; the test proved nothing"
    assert sorted(p.name for p in lock_dir.iterdir()) == ["bot.lock"]


LOOP = """
import sys
from singleton_proc import SingleInstance
instance = SingleInstance("bot", directory=sys.argv[1], on_conflict="wait")
print("ready", flush=True)
while True:
    with instance:
        pass
"""
#: Files that look like temporaries but belong to other names: never touched.
OTHERS = (".other.pid.tmp", ".bot.pid.x.pid.tmp", ".bot.pid.0123456789abcdef.tmpx")


def _kill_until_a_temporary_is_left(lock_dir: Path) -> set[str]:
    """SIGKILL acquire/release loops at random moments until one leaves a file.

    Returns what is in the directory besides the lock, the record and
    :data:`OTHERS` right after that kill.
    """
    for _ in range(300):
        proc = subprocess.Popen(
            [sys.executable, "-c", LOOP, str(lock_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            time.sleep(random.uniform(0, 0.003))  # noqa: S311  (a random moment, not a wait)
            proc.kill()
            proc.wait(DEADLINE)
        finally:
            reap(proc)
        left = {p.name for p in lock_dir.iterdir()} - {"bot.lock", "bot.pid", *OTHERS}
        if left:
            return left
    pytest.fail("no kill landed between writing and renaming: this proved nothing")


def test_a_killed_writer_leaves_no_temporary_file_after_the_next_acquire(
    lock_dir: Path,
) -> None:
    for other in OTHERS:
        (lock_dir / other).write_text("{")
    left = _kill_until_a_temporary_is_left(lock_dir)
    assert all(name.startswith(".bot.pid.") for name in left), left
    with SingleInstance("bot", directory=lock_dir):
        found = record_of(lock_dir, "bot")
        assert found is not None
        assert found.pid == os.getpid()
    assert sorted(p.name for p in lock_dir.iterdir()) == sorted(["bot.lock", *OTHERS])
    assert all((lock_dir / other).read_text() == "{" for other in OTHERS)


def test_a_symlink_at_the_temporary_name_is_removed_not_followed(
    lock_dir: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    precious.chmod(0o600)
    (lock_dir / ".bot.pid.tmp").symlink_to(precious)
    with SingleInstance("bot", directory=lock_dir):
        found = record_of(lock_dir, "bot")
        assert found is not None
        assert found.pid == os.getpid()
        assert sorted(p.name for p in lock_dir.iterdir()) == ["bot.lock", "bot.pid"]
    assert precious.read_text() == "keep me"
    assert stat.S_IMODE(precious.stat().st_mode) == 0o600


def test_symlink_at_the_record_path_is_refused_and_its_target_untouched(
    lock_dir: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (lock_dir / "bot.pid").symlink_to(precious)
    with pytest.raises(InsecureLockPathError, match="symlink"):
        SingleInstance("bot", directory=lock_dir).acquire()
    assert precious.read_text() == "keep me"
    assert (lock_dir / "bot.pid").is_symlink()
    assert not is_running("bot", lock_dir), "a refused acquire must not keep the lock"
    assert [p.name for p in lock_dir.iterdir() if p.name.endswith(".tmp")] == []


LOOK_FROM_A_CHILD = r"""
import ctypes, os, struct, sys
situation, directory = sys.argv[1], sys.argv[2]
if situation == "no faccessat2":  # as under older container runtimes' seccomp
    libc = ctypes.CDLL(None, use_errno=True)
    program = [  # (code, jt, jf, k): syscall 439 fails with EPERM, the rest runs
        (0x20, 0, 0, 0),
        (0x15, 0, 1, 439),
        (0x06, 0, 0, 0x00050000 | 1),
        (0x06, 0, 0, 0x7FFF0000),
    ]
    packed = b"".join(struct.pack("HBBI", *step) for step in program)
    code = ctypes.create_string_buffer(packed)

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    fprog = Program(len(program), ctypes.cast(code, ctypes.c_void_p))
    assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # SECCOMP_MODE_FILTER
if situation == "setuid":  # another real user, effective root
    os.setresuid(65534, 0, 0)
from singleton_proc import InsecureLockPathError, SingleInstance, holder
found = holder("bot", directory=directory)
print("holder:", found and found.pid)
os.symlink(os.devnull, os.path.join(directory, "other.pid"))
try:
    SingleInstance("other", directory=directory).acquire()
    print("symlinked record: taken")
except InsecureLockPathError:
    print("symlinked record: refused")
"""


@linux_only("seccomp and setresuid")
@pytest.mark.parametrize(
    "situation",
    [
        "plain",
        "no faccessat2",
        pytest.param("setuid", marks=needs_root),
    ],
)
def test_the_record_is_seen_wherever_the_process_can_open_it(
    situation: str, lock_dir: Path
) -> None:
    """Whether a record is there is asked of the OS the way an open would see it.

    A sandbox that refuses the system call behind the question, or a
    process whose real user cannot search the directory (setuid-style: the
    lock directory is root's, 0700), must not make every record read as
    missing: holders would go unseen, ``"replace"`` could not prove one,
    and a symlink would go unrefused.
    """
    with holding("bot", lock_dir) as holder_process:
        done = subprocess.run(
            [sys.executable, "-c", LOOK_FROM_A_CHILD, situation, str(lock_dir)],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"holder: {holder_process.pid}",
        "symlinked record: refused",
    ]


def test_a_live_process_named_by_a_record_without_the_lock_never_blocks(
    lock_dir: Path,
) -> None:
    """A leftover or forged record naming a real, live process is not believed."""
    with holding("decoy", lock_dir) as decoy:
        record = (lock_dir / "decoy.pid").read_text().replace('"decoy"', '"bot"')
        (lock_dir / "bot.pid").write_text(record)
        assert not is_running("bot", lock_dir)
        assert holder("bot", lock_dir) is None
        with SingleInstance("bot", directory=lock_dir):
            found = record_of(lock_dir, "bot")
            assert found is not None
            assert found.pid == os.getpid()
        assert decoy.poll() is None, "the process named by the record is untouched"


@pytest.mark.parametrize(
    "changes",
    [
        {"create_time": 1e308},
        {"create_time": -1e12},
        {"started_at": "9999-12-31T23:00:00-05:00"},
    ],
)
def test_absurd_times_in_a_record_never_crash(
    lock_dir: Path, changes: dict[str, object]
) -> None:
    me = psutil.Process()
    live = {**GOOD, "name": "bot", "pid": os.getpid(), "cmdline": me.cmdline()}
    (lock_dir / "bot.pid").write_text(json.dumps({**live, **changes}))
    assert holder("bot", lock_dir) is None
    assert not is_running("bot", lock_dir)
    with SingleInstance("bot", directory=lock_dir):
        pass


def test_a_record_that_cannot_be_written_is_logged_not_fatal(
    lock_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with (
        caplog.at_level(logging.WARNING, logger="singleton_proc"),
        SingleInstance("bot", directory=lock_dir) as instance,
    ):
        monkeypatch.undo()
        assert instance.held
        assert is_running("bot", lock_dir)
        assert holder("bot", lock_dir) is None, "held, holder unknown"
    assert "could not write the record" in caplog.text
    assert "No space left on device" in caplog.text
    assert sorted(p.name for p in lock_dir.iterdir()) == ["bot.lock"], "no temp left"


def test_something_else_at_the_record_path_is_refused(lock_dir: Path) -> None:
    (lock_dir / "bot.pid").mkdir()
    with pytest.raises(InsecureLockPathError, match="not a regular file"):
        SingleInstance("bot", directory=lock_dir).acquire()
    assert not is_running("bot", lock_dir)


@needs_root
def test_a_crashed_holder_of_another_user_does_not_lock_others_out(
    shared_dir: Path,
) -> None:
    shared = shared_dir

    def crash_while_holding() -> None:
        SingleInstance("bot", directory=shared).acquire()
        os._exit(0)  # no release: the record (owned by uid 65534) stays

    with pytest.raises(AssertionError, match="no reply"):
        as_user(65534, crash_while_holding)
    assert (shared / "bot.pid").stat().st_uid == 65534

    def take_it() -> list[object]:
        with SingleInstance("bot", directory=shared) as instance:
            return [instance.held, is_running("bot", shared), holder("bot", shared)]

    assert as_user(65533, take_it) == [True, True, None]
