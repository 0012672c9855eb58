"""A child program for the tests: start a daemon the way daemons start.

Usage: python child_daemon.py KIND

Forks; the child forks again and exits, so the grandchild (the daemon) is
left to init, out of the tree of whoever ran us. Prints the daemon's pid,
then exits 0. :func:`start` does the same in the calling process, without
``exec``, as ``python-daemon`` does (the ``forked`` kind of the tests).
KIND is how the daemon leaves:

* ``double-fork``: nothing more (same session and process group);
* ``setsid``: the middle process calls ``setsid()`` first (a new session
  and process group);
* ``detached``: ``setsid()``, then the daemon changes to ``/``, sets its
  umask and closes every descriptor it has, as the textbook daemon does.

The daemon keeps the default action of SIGTERM and sleeps until it gets a
signal; every daemon has ``stdin``, ``stdout`` and ``stderr`` on
``/dev/null`` once it has reported its pid.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings


def main() -> int:
    """Start the daemon, print its pid once it is ready, return."""
    print(start(sys.argv[1]), flush=True)
    return 0


def start(kind: str) -> int:
    """Fork the daemon off this very process; return its pid once it is ready."""
    read_end, write_end = os.pipe()
    # The copies must not run this process's SIGTERM handler (a holder that
    # starts a daemon on SIGTERM would start one per copy): SIGTERM is held
    # off across the forks, and the copies take its default action first.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    with warnings.catch_warnings():
        # Python 3.12+ warns of a fork with threads running (a worker's, a
        # pool's in the tests): the copies only make system calls.
        warnings.simplefilter("ignore", DeprecationWarning)
        middle = os.fork()
    if middle == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(read_end)
        if kind in ("setsid", "detached"):
            os.setsid()
        if os.fork() == 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            _become_daemon(kind, write_end)
        os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    os.close(write_end)
    os.waitpid(middle, 0)
    with os.fdopen(read_end) as pipe:
        return int(pipe.readline())


def _become_daemon(kind: str, report: int) -> None:
    """The grandchild: report the pid, let go of everything, sleep for ever."""
    os.write(report, f"{os.getpid()}\n".encode())
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if kind == "detached":
        os.chdir("/")
        os.umask(0)
        os.closerange(3, 65536)  # the pipe and /dev/null included
    else:
        os.close(report)
        os.close(null)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
