"""A child program for the tests: take a name, say so, hold it until told.

Usage: python child_holder.py NAME DIRECTORY [POLICY [EXIT_CODE]]

Prints ``ready`` once it holds the name, then holds it until its standard
input closes, releases, prints ``released <time.monotonic()>``, exits 0.
On a conflict, "raise" prints ``conflict <holder pid or None>`` and exits
3; "exit" behaves as the library says (one stderr line, the exit code).
"""

from __future__ import annotations

import sys
import time

from singleton_proc import AlreadyRunningError, SingleInstance


def main() -> int:
    """Hold the name given on the command line until stdin closes."""
    name, directory = sys.argv[1], sys.argv[2]
    policy = sys.argv[3] if len(sys.argv) > 3 else "raise"
    exit_code = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    instance = SingleInstance(
        name,
        directory=directory,
        on_conflict=policy,  # type: ignore[arg-type]
        exit_code=exit_code,
    )
    try:
        instance.acquire()
    except AlreadyRunningError as exc:
        print("conflict", exc.holder.pid if exc.holder else None, flush=True)
        return 3
    print("ready", flush=True)
    sys.stdin.read()
    instance.release()
    print("released", time.monotonic(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
