"""A child program for the tests: a real signal at an exact point of a held step.

Usage: python child_holds.py CASE DIRECTORY

An audit hook (``sys.addaudithook``, which cannot be removed: hence a child
process) sends a real signal with ``os.kill`` when the library opens the lock
file or removes the record, that is inside a step that holds Ctrl-C and
SIGTERM off. Prints one line, ``ok ...`` or ``wrong ...``:

* ``handler``: the program's SIGUSR1 handler installs its own SIGINT handler
  during the acquire; it must still be installed afterwards.
* ``second-sigterm``: a first SIGTERM ends a ``with`` block (SystemExit,
  caught, the program goes on) and a second lands in its release; in the
  next ``with`` block a SIGTERM must be ``SystemExit`` again, not ignored.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from singleton_proc import SingleInstance

#: Safety net: a signal that is not acted on leaves the sleep unbroken.
STALL = 5.0

armed: dict[str, int] = {}


def _hook(event: str, args: tuple[object, ...]) -> None:
    """Send the armed signal when the armed event happens (once)."""
    if event == "open" and str(args[0]).endswith(".lock"):
        event = "lock"
    signum = armed.pop(event, None)
    if signum is not None:
        os.kill(os.getpid(), signum)


def _handler_set_during_acquire(directory: str) -> str:
    def mine(signum: int, frame: object) -> None:
        """The program's own Ctrl-C handler."""

    signal.signal(signal.SIGUSR1, lambda *_: signal.signal(signal.SIGINT, mine))
    armed["lock"] = signal.SIGUSR1
    with SingleInstance("x", directory=directory):
        pass
    now = signal.getsignal(signal.SIGINT)
    return "ok" if now is mine else f"wrong: SIGINT's handler is {now}"


def _second_sigterm_in_release(directory: str) -> str:
    instance = SingleInstance("x", directory=directory)
    try:
        with instance:
            armed["os.remove"] = signal.SIGTERM  # the record, in __exit__
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(STALL)
    except SystemExit:
        pass
    try:
        with instance:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(STALL)
    except SystemExit as exc:
        return f"ok: SystemExit({exc.code})"
    return "wrong: a SIGTERM while held was ignored"


CASES = {
    "handler": _handler_set_during_acquire,
    "second-sigterm": _second_sigterm_in_release,
}

if __name__ == "__main__":
    sys.addaudithook(_hook)
    print(CASES[sys.argv[1]](sys.argv[2]), flush=True)
