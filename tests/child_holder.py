"""A child program for the tests: take a name, say so, hold it until told.

Usage: python child_holder.py NAME DIRECTORY [options]

Prints ``ready`` once it holds the name (after ``tree {...}`` with the pids
of its process tree when ``--tree`` is given), then holds it until its
standard input closes, releases, prints ``released <time.monotonic()>``,
exits 0. A ``finally`` block prints ``finally`` on the way out, however it
leaves (SIGTERM included). On a conflict, "raise" prints
``conflict <holder pid or None>`` and exits 3; "exit" behaves as the library
says (one stderr line, the exit code).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

from daemon_tasks import start_daemon

from singleton_proc import AlreadyRunningError, SingleInstance

#: A grandchild that ignores SIGTERM, under a child that does not.
GRANDCHILD = """
import signal, subprocess, sys
code = "import signal as s, sys; s.signal(s.SIGTERM, s.SIG_IGN); sys.stdin.read()"
grandchild = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
print(grandchild.pid, flush=True)
sys.stdin.read()
"""


def _square(value: int) -> int:
    """Work for the pool."""
    return value * value


def _daemon_child() -> int:
    """Double-fork a SIGTERM-deaf process; return its pid once it is ready.

    Its parent exits at once, so it is re-parented (out of our tree) but
    stays in our process group.
    """
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(write_end, f"{os.getpid()}\n".encode())
            while True:
                signal.pause()
        os._exit(0)
    os.waitpid(middle, 0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        return int(pipe.readline())


def _start_daemon_on_sigterm(kind: str) -> None:
    """On SIGTERM: start a daemon of ``kind``, print its pid, exit."""

    def respawn(signum: int, frame: object) -> None:  # noqa: ARG001
        print("daemon", start_daemon(kind), flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, respawn)


def main() -> int:
    """Hold the name given on the command line until stdin closes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("directory")
    parser.add_argument("--policy", default="raise")
    parser.add_argument("--exit-code", type=int, default=1)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--no-handle-sigterm", action="store_true")
    parser.add_argument("--tree", action="store_true")
    parser.add_argument(
        "--daemon-child",
        action="store_true",
        help="double-fork a SIGTERM-deaf process that leaves the tree, not the group",
    )
    parser.add_argument(
        "--daemon",
        metavar="KIND",
        help="start a daemon of this kind (see child_daemon.py) while holding",
    )
    parser.add_argument(
        "--daemon-on-term",
        metavar="KIND",
        help="on SIGTERM, start a daemon of this kind, print its pid, then exit",
    )
    parser.add_argument(
        "--thread", action="store_true", help="run a non-daemon thread that never ends"
    )
    parser.add_argument(
        "--no-release", action="store_true", help="on EOF, exit without release()"
    )
    parser.add_argument("--note", default="", help="ignored: shows in the command line")
    args = parser.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.daemon_on_term:
        _start_daemon_on_sigterm(args.daemon_on_term)
    instance = SingleInstance(
        args.name,
        directory=args.directory,
        on_conflict=args.policy,
        exit_code=args.exit_code,
        handle_sigterm=not args.no_handle_sigterm,
    )
    try:
        instance.acquire()
    except AlreadyRunningError as exc:
        print("conflict", exc.holder.pid if exc.holder else None, flush=True)
        return 3
    try:
        if args.tree:
            pool = multiprocessing.get_context("fork").Pool(2)
            assert pool.map(_square, range(4)) == [0, 1, 4, 9]
            child = subprocess.Popen(
                [sys.executable, "-c", GRANDCHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            tree = {
                "workers": [worker.pid for worker in pool._pool],  # type: ignore[attr-defined]  # noqa: SLF001
                "child": child.pid,
                "grandchild": int(child.stdout.readline()),
            }
            print("tree", json.dumps(tree), flush=True)
        if args.daemon_child:
            print("daemon", _daemon_child(), flush=True)
        if args.daemon:
            print("daemon", start_daemon(args.daemon), flush=True)
        if args.thread:
            threading.Thread(target=threading.Event().wait, daemon=False).start()
        print("ready", flush=True)
        sys.stdin.read()
        if args.no_release:
            return 0  # interpreter exit: the library's atexit hook releases
        instance.release()
        print("released", time.monotonic(), flush=True)
    finally:
        print("finally", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
