"""The README's demo runs as the README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


def test_demo_shows_a_refused_copy_then_an_accepted_one() -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "the second copy exited with status 1" in proc.stdout
    assert "is_running('singleton-proc-demo') = False" in proc.stdout
    assert "I hold 'singleton-proc-demo' now" in proc.stdout
    assert proc.stdout.rstrip().endswith("it exited with status 0")
    refusal = proc.stderr.strip().splitlines()
    assert len(refusal) == 1
    assert refusal[0].startswith(
        "singleton_proc: 'singleton-proc-demo' is already running (pid "
    )
    assert "demo.py" in refusal[0]
