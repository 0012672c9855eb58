"""A child program for the fork tests.

Usage: python child_fork.py NAME DIRECTORY HOW

It holds NAME, then makes a child by fork and reports as JSON lines:

* HOW in ``exit``, ``sys.exit``, ``atexit``, ``release``, ``mp-fork``: the
  forked child ends that way (returning from main, ``sys.exit``, an atexit
  handler that releases, an explicit ``release()`` then exit, a
  ``multiprocessing`` fork-method process); the parent then reports whether
  it still holds the name and its record.
* HOW = ``parent-exits``: the forked child reports its pid and blocks on
  standard input; the parent ends at once with ``os._exit`` (no release, no
  atexit), so only the OS can free the lock, and only if the child does not
  keep it alive.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from singleton_proc import SingleInstance, is_running
from singleton_proc._base import procfs
from singleton_proc._lock.directory import NameFiles
from singleton_proc._lock.record import read_record


def report(**facts: object) -> None:
    """One JSON line on stdout."""
    print(json.dumps(facts), flush=True)


def child(instance: SingleInstance, how: str) -> None:
    """What the forked child does before it ends."""
    report(
        child_pid=os.getpid(),
        child_sees_held=instance.held,
        child_sigterm_default=signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
    )
    if how == "sys.exit":
        sys.exit(0)
    if how == "atexit":
        atexit.register(instance.release)
    if how == "release":
        instance.release()


def parent_state(instance: SingleInstance, directory: Path, name: str) -> None:
    """Report what the parent still holds after its child ended."""
    files = NameFiles.of(directory, name)
    record = read_record(files)
    st = os.stat(files.lock)
    report(
        parent_held=instance.held,
        record_pid=record.pid if record else None,
        lock_pids=sorted(procfs.flock_holders(files.directory, st) or ()),
        running=is_running(name, directory),
    )


def main() -> None:
    """Hold the name, fork, and report."""
    name, how = sys.argv[1], sys.argv[3]
    directory = Path(sys.argv[2])
    instance = SingleInstance(name, directory=directory).acquire()
    report(parent_pid=os.getpid())
    if how == "mp-fork":
        process = multiprocessing.get_context("fork").Process(
            target=child, args=(instance, "exit")
        )
        process.start()
        process.join()
        parent_state(instance, directory, name)
        return
    pid = os.fork()
    if pid == 0:
        if how == "parent-exits":
            report(child_pid=os.getpid())
            sys.stdin.read()  # until the test closes our stdin
            os._exit(0)
        child(instance, how)
        return  # "exit": the child returns from main and ends normally
    if how == "parent-exits":
        os._exit(0)  # no release, no atexit: only the OS lets go of the lock
    _, status = os.waitpid(pid, 0)
    report(child_status=os.waitstatus_to_exitcode(status))
    parent_state(instance, directory, name)


if __name__ == "__main__":
    main()
