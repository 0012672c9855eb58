"""singleton_proc in one minute: one copy holds a name, a second is refused.

Run it with ``python examples/demo.py``. It holds the name
``singleton-proc-demo``, starts a second copy of itself (which is refused
and names this one), shows what introspection sees, lets go, and shows that
a third copy now gets in.
"""

from __future__ import annotations

import subprocess
import sys

from singleton_proc import SingleInstance, holder, is_running

NAME = "singleton-proc-demo"


def second_copy() -> None:
    """What the second and third copies run: hold the name or leave."""
    with SingleInstance(NAME, on_conflict="exit"):
        print(f"  [copy] I hold {NAME!r} now; doing the job and exiting", flush=True)


def start_copy() -> int:
    """Run a copy of this script as a separate process; return its exit status."""
    return subprocess.run([sys.executable, __file__, "--copy"], check=False).returncode


def main() -> None:
    """Hold the name, watch a copy get refused, release, watch a copy get in."""
    with SingleInstance(NAME):
        print(f"1. This process holds {NAME!r}: {holder(NAME)}", flush=True)
        print("2. Starting a second copy while we hold it:", flush=True)
        status = start_copy()
        print(f"   ...the second copy exited with status {status}", flush=True)
    print(f"3. Released; is_running({NAME!r}) = {is_running(NAME)}", flush=True)
    print("4. Starting a copy again:", flush=True)
    status = start_copy()
    print(f"   ...it exited with status {status}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--copy"]:
        second_copy()
    else:
        main()
