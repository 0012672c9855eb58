"""singleton_proc in one minute: one copy holds a name and fans work out to workers.

Run it with ``python examples/demo.py``. It holds the name
``singleton-proc-demo``, starts a second copy of itself (which is refused and
names this one), counts primes in eight ranges with ``run_in_pool`` while it
holds the name (the workers' log records show here, and a progress bar once
the ``progress`` extra is installed: ``pip install -e ".[progress]"``), lets
go, and shows that a third copy now gets in.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys

from singleton_proc import SingleInstance, holder, is_running, run_in_pool

NAME = "singleton-proc-demo"
RANGES = [(start, start + 25_000) for start in range(0, 200_000, 25_000)]

log = logging.getLogger("demo")


def count_primes(bounds: tuple[int, int]) -> int:
    """The primes in ``[start, stop)``, counted the slow way: real work for a worker."""
    start, stop = bounds
    count = sum(
        1
        for n in range(max(start, 2), stop)
        if all(n % d for d in range(2, int(n**0.5) + 1))
    )
    log.info("worker %d: %d primes in [%d, %d)", os.getpid(), count, start, stop)
    return count


def second_copy() -> None:
    """What the second and third copies run: hold the name or leave."""
    with SingleInstance(NAME, on_conflict="exit"):
        print(f"  [copy] I hold {NAME!r} now; doing the job and exiting", flush=True)


def start_copy() -> int:
    """Run a copy of this script as a separate process; return its exit status."""
    return subprocess.run([sys.executable, __file__, "--copy"], check=False).returncode


def main() -> None:
    """Hold the name, see a copy refused, fan work out, release, see a copy get in."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="   [log] %(message)s"
    )
    with SingleInstance(NAME):
        print(f"1. This process ({os.getpid()}) holds {NAME!r}: {holder(NAME)}")
        print("2. Starting a second copy while we hold it:", flush=True)
        status = start_copy()
        print(f"   ...the second copy exited with status {status}")
        print("3. Counting primes in 8 ranges with run_in_pool(n=2):", flush=True)
        bar = importlib.util.find_spec("tqdm") is not None  # the progress extra
        counts = run_in_pool(count_primes, RANGES, n=2, progress=bar)
        print(f"   ...{sum(counts)} primes below 200,000, in input order: {counts}")
    print(f"4. Released; is_running({NAME!r}) = {is_running(NAME)}")
    print("5. Starting a copy again:", flush=True)
    status = start_copy()
    print(f"   ...it exited with status {status}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--copy"]:
        second_copy()
    else:
        main()
