"""A real ``redis-server`` for the cluster tests: on a free loopback port, by pid.

Persistence is off (a restart comes back empty). The server is started and
stopped by its pid; paused and resumed with SIGSTOP and SIGCONT. Where
``redis-server`` or redis-py is missing the tests skip, saying how to
install them, unless ``SINGLETON_PROC_REQUIRE_SERVERS=1`` (set by
``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

REQUIRE = "SINGLETON_PROC_REQUIRE_SERVERS"
_READY = "Ready to accept connections"
_START_BOUND = 30.0


def require(what: str, how: str) -> None:
    """``what`` is missing: skip, or fail with ``SINGLETON_PROC_REQUIRE_SERVERS=1``."""
    message = f"{what} is not installed ({how})"
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{message}; {REQUIRE}=1 makes this a failure")
    pytest.skip(f"{message}; the cluster tests need it")


def free_port() -> int:
    """A loopback port free at this moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process of the test's, on loopback."""

    def __init__(
        self,
        workdir: Path,
        *extra: str,
        port: int | None = None,
        program: str = "redis-server",
        config: Path | None = None,
        ready: str = _READY,
    ) -> None:
        """Start ``program`` (with its ``config`` file) and wait until it is ready."""
        self.workdir = workdir
        self.extra = extra
        self.port = free_port() if port is None else port
        self.program = program
        self.config = config
        self.ready = ready
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's pid."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start (again, empty) on the same port; return once it accepts."""
        self.proc = subprocess.Popen(
            [
                self.program,
                *([] if self.config is None else [str(self.config)]),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                "",
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.append(line)
                if self.ready in line:
                    ready.set()
            ready.set()  # ended: the wait below sees the exit

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(_START_BOUND) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"redis-server did not start: {''.join(lines)[-2000:]}")

    def client(self, **options: Any) -> Any:
        """A redis-py client of the test's own."""
        import redis  # noqa: PLC0415

        return redis.Redis(port=self.port, socket_timeout=10, **options)

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT it."""
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop it by pid and reap it (resumed first if paused)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(_START_BOUND)
        if proc.stdout is not None:
            proc.stdout.close()

    def restart_empty(self) -> None:
        """Kill it and start it again on the same port, with no data."""
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(workdir: Path, *extra: str) -> Iterator[RedisServer]:
    """A server for the block, or skip/fail when redis-server or redis-py is missing."""
    if shutil.which("redis-server") is None:
        require("redis-server", "Debian/Ubuntu: apt-get install redis-server")
    try:
        import redis  # noqa: F401, PLC0415
    except ImportError:
        require("redis-py", "pip install -e '.[redis]'")
    server = RedisServer(workdir, *extra)
    try:
        yield server
    finally:
        server.stop()
