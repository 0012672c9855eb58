"""One instance across hosts: the same script on every host, one runs at a time.

Every host (container, VM) runs this script with the same Redis server in
``$SINGLETON_PROC_BACKEND``, for example
``redis://:password@redis.internal:6379/0`` (the ``redis`` extra:
``pip install -e ".[redis]"`` in a clone). One copy holds the name and
works; the others wait and take over within the lease's TTL when it ends,
crashes or loses its host. Without the variable the script still runs, as
one instance per machine.

Each write carries the lease's fence, a number that grows with every grant
of the name, so that storage which remembers the highest fence it has seen
can refuse a late write from a holder that was paused past its lease.
"""

from __future__ import annotations

import os
import socket

from singleton_proc import SingleInstance


def write(fence: int | None, step: int) -> None:
    """Stand-in for a write to storage that checks the fence."""
    print(f"{socket.gethostname()} ({os.getpid()}): step {step}, fence {fence}")


def main() -> None:
    """Wait for the name (backend from the environment), then do three steps."""
    with SingleInstance("report-scheduler", on_conflict="wait", ttl=15) as job:
        for step in range(3):
            job.check()  # LeaseLostError if the lease is known to be lost
            write(job.fence, step)


if __name__ == "__main__":
    main()
