"""Faults of the filesystem and the OS, made real: full, read-only, out of files.

Each error reaches the user with its ``OSError`` class, ``errno`` and
``filename`` intact and a message that says what to do; the command line
prints it as one line and exits 2. The filesystems are small tmpfs mounts
made for the test (root only) and unmounted after it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from test_cli import CLI, CMD, cli, one_error_line

from singleton_proc import SingleInstance, holder, is_running

from helpers import finish, posix_only, read_line, reap

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = posix_only("tmpfs mounts, RLIMIT_NOFILE and POSIX commands (true)")

PAGE = os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``where`` for the test; skipped where mount is refused."""
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"mode=0755,{options}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs (needs root and mount rights): {done.stderr}"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _fill(directory: Path) -> None:
    """Use up every inode of ``directory``'s filesystem."""
    for count in range(100_000):
        try:
            (directory / f"filler{count}").touch()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return
    pytest.fail("the filesystem never filled up")


def _assert_explained(exc: OSError, number: int, path: Path, advice: str) -> None:
    """The original class, errno and filename, and a message with advice."""
    assert type(exc) is OSError, type(exc)
    assert exc.errno == number
    assert exc.filename == str(path)
    assert advice in str(exc), str(exc)


@pytest.mark.parametrize(
    ("options", "number", "advice"),
    [
        ("nr_inodes=4", errno.ENOSPC, "free some space or inodes"),
        ("ro", errno.EROFS, "use a lock directory on a writable filesystem"),
    ],
)
def test_a_full_or_read_only_filesystem_says_what_to_do(
    tmp_path: Path, options: str, number: int, advice: str
) -> None:
    with tmpfs(tmp_path / "fs", options) as fs:
        if number == errno.ENOSPC:
            _fill(fs)
        with pytest.raises(OSError) as caught:  # noqa: PT011  (its errno is checked)
            SingleInstance("bot", directory=fs).acquire()
        _assert_explained(caught.value, number, fs / "bot.lock", advice)
        status, _, err = cli("run", "--dir", str(fs), "bot", "--", "true")
        assert status == 2
        line = one_error_line(err)
        assert advice in line
        assert f"'{fs / 'bot.lock'}'" in line


def test_a_socket_at_the_lock_path_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "bot.lock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(OSError) as caught:  # noqa: PT011  (its errno is checked)
            SingleInstance("bot", directory=tmp_path).acquire()
        _assert_explained(caught.value, errno.ENXIO, path, "a socket or device file")
        status, _, err = cli("run", "--dir", str(tmp_path), "bot", "--", "true")
        assert status == 2
        assert "remove it, or use another name" in one_error_line(err)


OUT_OF_FILES = """
import json, os, resource, sys
from singleton_proc import SingleInstance
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
while True:
    try:
        os.open(os.devnull, os.O_RDONLY)
    except OSError:
        break
try:
    SingleInstance("bot", directory=sys.argv[1]).acquire()
except OSError as exc:
    print(json.dumps([type(exc).__name__, exc.errno, exc.filename, str(exc)]))
"""


def test_too_many_open_files_says_what_to_do(lock_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", OUT_OF_FILES, str(lock_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    kind, number, filename, message = json.loads(done.stdout)
    assert (kind, number, filename) == (
        "OSError",
        errno.EMFILE,
        str(lock_dir / "bot.lock"),
    )
    assert "raise this process's limit (ulimit -n)" in message


def test_a_record_cut_short_by_a_full_disk_is_never_published(tmp_path: Path) -> None:
    """A record longer than the one free page gets a short write: not renamed."""
    with tmpfs(tmp_path / "fs", f"size={16 * PAGE}") as fs:
        filler = fs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * PAGE)
        os.close(fd)
        os.truncate(filler, filler.stat().st_size - PAGE)  # one page free
        long_argument = "x" * (2 * PAGE)  # in the record: the wrapper's command
        wrapper = subprocess.Popen(
            [CLI, "run", "--dir", str(fs), "bot", "--", *CMD, long_argument],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert read_line(wrapper).startswith("ready ")
            assert is_running("bot", fs)
            assert holder("bot", fs) is None, "held, holder unknown"
            assert sorted(p.name for p in fs.iterdir()) == ["bot.lock", "filler"]
            status, _, err = finish(wrapper)
        finally:
            reap(wrapper)
        assert status == 0
        line = one_error_line(err)
        assert "could not write the record" in line
        assert "No space left on device" in line
