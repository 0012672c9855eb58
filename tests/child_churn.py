"""A child program for the churn test: acquire and release thousands of times.

Usage: python child_churn.py NAME DIRECTORY COUNTER MARKER CYCLES

Inside the lock it increments COUNTER (read, then write: not atomic) and
creates then removes MARKER with O_EXCL, which fails if another process is
inside at the same moment. It checks that the record names itself every
time. Exits 0, or prints what went wrong and exits 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from singleton_proc import SingleInstance, holder


def main() -> int:
    """Churn; report the first violation."""
    name, directory = sys.argv[1], Path(sys.argv[2])
    counter, marker, cycles = Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    instance = SingleInstance(
        name, directory=directory, on_conflict="wait", timeout=120
    )
    print("ready", flush=True)
    sys.stdin.readline()  # the start signal
    for cycle in range(cycles):
        with instance:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                print(f"collision at cycle {cycle}", flush=True)
                return 2
            os.close(fd)
            counter.write_text(str(int(counter.read_text()) + 1))
            found = holder(name, directory)
            if found is None or found.pid != os.getpid():
                print(f"record does not name us at cycle {cycle}: {found}", flush=True)
                return 2
            os.unlink(marker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
