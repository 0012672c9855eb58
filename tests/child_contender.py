"""A child program for the exclusion tests: contend for a name in rounds.

Usage: python child_contender.py NAME DIRECTORY GO_FD

Each round: print ``armed``, read one byte from the shared start pipe
GO_FD (the barrier: the test writes one byte per contender at once), try to
take NAME under "raise", print ``win`` or ``lose``; a winner holds until it
reads ``release`` on stdin, then prints ``released``. Every contender then
waits for ``next`` (another round) or ``quit`` on stdin.
"""

from __future__ import annotations

import os
import sys

from singleton_proc import AlreadyRunningError, SingleInstance


def main() -> None:
    """Contend in rounds until told to quit."""
    name, directory, go_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    while True:
        print("armed", flush=True)
        os.read(go_fd, 1)
        try:
            instance = SingleInstance(name, directory=directory).acquire()
        except AlreadyRunningError:
            print("lose", flush=True)
        else:
            print("win", flush=True)
            assert sys.stdin.readline().strip() == "release"
            instance.release()
            print("released", flush=True)
        if sys.stdin.readline().strip() != "next":
            return


if __name__ == "__main__":
    main()
