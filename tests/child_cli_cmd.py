"""A command for ``singleton-proc run`` in the tests: say ready, then wait.

Usage: python child_cli_cmd.py [--trap | --ignore-term]

Prints ``ready <pid> <ppid>``, then waits until its standard input closes,
and exits 0. SIGINT, SIGTERM and SIGHUP keep their default actions, unless
``--trap`` is given: then each prints ``signal <N>`` and exits with status
40 + N, so the tests can tell "CMD's own status" from "died by signal".
``--ignore-term`` ignores SIGTERM: only SIGKILL stops it.

The wait cannot miss a trapped signal. Python runs a handler between
bytecodes, or when a blocking call returns with ``EINTR``; a signal that
lands after the last check but before the call blocks (the moment a test
sends it, having just read ``ready``) would wait for the call to return,
here for stdin to close: the ``signal N`` line would never come. So the
wait is a ``select`` that also watches the wakeup pipe, into which the
C-level handler writes at once, whenever the signal lands.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

TRAPPED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _report(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    """Say which signal came, and leave with a status that names it.

    ``os.write``, not ``print``: CPython also runs handlers inside a
    ``print``'s flush (of ``ready``), where another ``print`` would be a
    reentrant call on the same buffer and raise.
    """
    os.write(sys.stdout.fileno(), f"signal {signum}\n".encode())
    os._exit(40 + signum)


def _wait_for_eof() -> None:
    """Return when stdin closes; run signal handlers as soon as signals land."""
    wakeup, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([stdin, wakeup], [], [])
        if wakeup in readable:
            os.read(wakeup, 64)  # the handler runs before the next bytecode
        if stdin in readable and not os.read(stdin, 4096):
            return


def main() -> int:
    """Say ready, wait for stdin to close."""
    if "--trap" in sys.argv[1:]:
        for signum in TRAPPED:
            signal.signal(signum, _report)
    if "--ignore-term" in sys.argv[1:]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"ready {os.getpid()} {os.getppid()}", flush=True)
    _wait_for_eof()
    return 0


if __name__ == "__main__":
    sys.exit(main())
