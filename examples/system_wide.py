"""One instance per machine, whichever user starts it: the lock in /run/lock.

By default the lock directory is private to each user, so alice and bob can
each run one copy. ``directory="/run/lock"`` (world-writable and sticky,
like ``/tmp``) makes the name machine-wide: a copy started by any user is
refused while another user's copy runs, and the refusal names the holder
(pid, start time, command). ``/run/lock`` is a tmpfs on most Linux systems: emptied at
boot, which is what a lock wants.
"""

from __future__ import annotations

import getpass
import os

from singleton_proc import SingleInstance


def main() -> None:
    """Hold the machine-wide name while the work runs."""
    with SingleInstance("backup-disk", directory="/run/lock", on_conflict="exit"):
        print(f"{getpass.getuser()} ({os.getpid()}) runs the machine's only backup")


if __name__ == "__main__":
    main()
