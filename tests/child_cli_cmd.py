"""A command for ``singleton-proc run`` in the tests: say ready, then wait.

Usage: python child_cli_cmd.py [--trap | --ignore-term]

Prints ``ready <pid> <ppid>``, then reads its standard input until that
closes, and exits 0. SIGINT, SIGTERM and SIGHUP keep their default actions,
unless ``--trap`` is given: then each prints ``signal <N>`` and exits with
status 40 + N, so the tests can tell "CMD's own status" from "died by signal".
``--ignore-term`` ignores SIGTERM: only SIGKILL stops it.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

TRAPPED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _report(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    """Say which signal came, and leave with a status that names it."""
    print(f"signal {signum}", flush=True)
    os._exit(40 + signum)


def main() -> int:
    """Say ready, wait for stdin to close."""
    if "--trap" in sys.argv[1:]:
        for signum in TRAPPED:
            signal.signal(signum, _report)
    if "--ignore-term" in sys.argv[1:]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"ready {os.getpid()} {os.getppid()}", flush=True)
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
