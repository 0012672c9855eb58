"""The README's demo runs as the README says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


def test_demo_shows_a_refused_copy_a_pool_and_then_an_accepted_copy() -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "the second copy exited with status 1" in out
    assert "is_running('singleton-proc-demo') = False" in out
    assert "I hold 'singleton-proc-demo' now" in out
    assert out.rstrip().endswith("it exited with status 0")
    # The pool: 8 log records made in the workers, shown by this process's
    # logging, and the results in input order.
    holder_pid = int(re.search(r"This process \((\d+)\)", out).group(1))  # type: ignore[union-attr]
    workers = re.findall(r"\[log\] worker (\d+): \d+ primes in \[(\d+),", out)
    assert sorted(int(start) for _, start in workers) == list(range(0, 200_000, 25_000))
    assert holder_pid not in {int(pid) for pid, _ in workers}
    assert "17984 primes below 200,000, in input order: [2762, 2371," in out
    assert "8/8" in proc.stderr  # the progress bar
    refusal = [
        line for line in proc.stderr.splitlines() if line.startswith("singleton_proc:")
    ]
    assert len(refusal) == 1
    assert refusal[0].startswith(
        "singleton_proc: 'singleton-proc-demo' is already running (pid "
    )
    assert "demo.py" in refusal[0]
