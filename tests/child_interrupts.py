"""A child program for the tests: acquire and release, interrupted at random points.

Usage: python child_interrupts.py DIRECTORY TRIES SIGNAL

Each try arms a real-time timer for a random moment within about one
acquire-and-release (measured first), then acquires and releases a name;
the timer's SIGALRM handler raises SIGNAL (``INT``: Ctrl-C as
``KeyboardInterrupt``; ``TERM``: SIGTERM, which the program's own handler
turns into ``SystemExit``, the library's standing aside for it;
``LIBTERM``: SIGTERM left to the library, raised only while it has SIGTERM
in hand, from the start of the acquire to the end of the release, where it
must be ``SystemExit`` and never the default action, death; ``FLAG``:
SIGTERM to a graceful handler that notes it and returns, which must see each
one by the end of its try, once). After
every try, interrupted or not, it checks what a user could see: the object
is held exactly when this process has the lock file open and locked,
``is_running`` agrees, a fresh object can take a name that is free, and the
handlers of SIGINT and SIGTERM are the program's again. Prints one JSON
object: the number of tries, of tries interrupted before they finished,
and the inconsistencies found (none, if all is well).
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import statistics
import sys
import time
from pathlib import Path

from singleton_proc import SingleInstance, is_running

NAME = "interrupted"


def _program_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001
    """The program's own SIGTERM handler, outside the library's hold."""
    raise SystemExit(143)


#: FLAG mode: SIGTERMs raised by the timer, and seen by the program's handler.
_counts = {"raised": 0, "seen": 0}


def _raise_counted(signum: int, frame: object) -> None:  # noqa: ARG001
    """SIGALRM: a SIGTERM, counted."""
    _counts["raised"] += 1
    signal.raise_signal(signal.SIGTERM)


def _count_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001
    """The program's graceful SIGTERM handler: it notes the request, no more."""
    _counts["seen"] += 1


def _sigterm_if_handled(signum: int, frame: object) -> None:  # noqa: ARG001
    """SIGALRM: SIGTERM, when the library has SIGTERM in hand (else it would kill)."""
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        signal.raise_signal(signal.SIGTERM)


def _lock_fds(lock_file: Path) -> int:
    """How many descriptors of this process point at ``lock_file``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(lock_file):
                count += 1
        except OSError:
            continue
    return count


def _cycle(instance: SingleInstance) -> None:
    """One acquire and release, as a program's retry loop would do them."""
    instance.acquire()
    instance.release()


def _check(instance: SingleInstance, directory: Path, sigterm: object) -> str:
    """What is inconsistent after a try, or ``""``."""
    problems = []
    held = instance.held
    fds = _lock_fds(directory / f"{NAME}.lock")
    if fds != int(held):
        problems.append(f"held={held} with {fds} lock descriptor(s) open")
    if is_running(NAME, directory) != held:
        problems.append(f"held={held} but is_running says {not held}")
    if held:
        instance.release()
    else:
        probe = SingleInstance(NAME, directory=directory)
        try:
            probe.acquire()
        except Exception as exc:  # noqa: BLE001  (any failure is the finding)
            problems.append(f"not held, yet a fresh object cannot take it: {exc!r}")
        else:
            probe.release()
    # Nothing held now: the handlers must be the program's again.
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        problems.append(f"SIGINT handler left as {signal.getsignal(signal.SIGINT)}")
    if signal.getsignal(signal.SIGTERM) is not sigterm:
        problems.append(f"SIGTERM handler left as {signal.getsignal(signal.SIGTERM)}")
    return "; ".join(problems)


def main() -> int:
    """Run the tries and print the findings."""
    directory, tries, which = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    raised = signal.SIGINT if which == "INT" else signal.SIGTERM
    sigterm: object = signal.SIG_DFL
    if which == "LIBTERM":
        signal.signal(signal.SIGALRM, _sigterm_if_handled)
    elif which == "FLAG":
        sigterm = _count_sigterm
        signal.signal(signal.SIGTERM, _count_sigterm)
        signal.signal(signal.SIGALRM, _raise_counted)
    else:
        sigterm = _program_sigterm
        signal.signal(signal.SIGTERM, _program_sigterm)
        signal.signal(signal.SIGALRM, lambda *_: signal.raise_signal(raised))
    instance = SingleInstance(NAME, directory=directory)
    # A cycle's length, from the last 50 uninterrupted ones: under load it
    # changes, and a span measured once would then miss the cycles.
    spans: collections.deque[float] = collections.deque(maxlen=50)
    for _ in range(50):
        start = time.perf_counter()
        _cycle(instance)
        spans.append(time.perf_counter() - start)
    interrupted = 0
    problems: list[str] = []
    for _ in range(tries):
        done = False
        raised_before = _counts["raised"]
        span = statistics.median(spans) * 1.2
        try:
            signal.setitimer(signal.ITIMER_REAL, random.uniform(1e-6, span))  # noqa: S311
            try:
                start = time.perf_counter()
                _cycle(instance)
                spans.append(time.perf_counter() - start)
                done = True
                interrupted += _counts["raised"] > raised_before  # FLAG: it returned
                # Let it fire here, between tries, if not yet: inside a call,
                # so that its exception surely comes out within this try.
                time.sleep(signal.getitimer(signal.ITIMER_REAL)[0] * 2)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except (KeyboardInterrupt, SystemExit):
            interrupted += not done
        except Exception as exc:  # noqa: BLE001  (any failure is the finding)
            problems.append(f"the try failed: {exc!r}")
            break  # the state is broken: the next tries would only repeat it
        problem = _check(instance, directory, sigterm)
        if _counts["seen"] != _counts["raised"]:
            problem += f"; {_counts['raised']} SIGTERMs raised, {_counts['seen']} seen"
            _counts["seen"] = _counts["raised"]
        if problem:
            problems.append(problem)
    report = {"tries": tries, "interrupted": interrupted, "problems": problems}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
