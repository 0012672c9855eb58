"""Benchmark singleton_proc's lock beside the packages people use instead.

Run ``python bench/lock.py`` after ``pip install -e ".[bench]"``; ``--quick``
runs every measurement a few times only (CI runs it so this script cannot
rot; it asserts nothing about speed). Everything is measured in one run, on
this machine, and printed as medians: microseconds per uncontended
acquire+release (and the ratio to a bare ``portalocker.Lock`` of the same
file), import times in fresh interpreters, and the latencies of a "wait"
hand-over, a "replace" and a takeover after SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, cast

import portalocker

import singleton_proc
from singleton_proc import SingleInstance

Cycle = Callable[[], None]
BASELINE = "portalocker.Lock (baseline)"


class Figure(NamedTuple):
    """One contender's acquire+release figure in one directory."""

    us: float  #: median µs per cycle
    ratio: float  #: median, over the rounds, of its time / the baseline's


HOLDER = """
import signal, sys, time
from singleton_proc import SingleInstance
if sys.argv[3] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
instance = SingleInstance(sys.argv[2], directory=sys.argv[1]).acquire()
print("ready", flush=True)
sys.stdin.readline()
instance.release()
print(time.monotonic(), flush=True)
sys.stdin.readline()
"""


def batch_us(cycle: Cycle, batch: int) -> float:
    """The time per call over one batch of ``batch`` calls, in microseconds."""
    start = time.perf_counter()
    for _ in range(batch):
        cycle()
    return (time.perf_counter() - start) / batch * 1e6


# --- uncontended acquire + release -------------------------------------------


def contenders(directory: Path) -> dict[str, Cycle | str]:
    """One acquire+release of each package, on files in ``directory``.

    A value that is a string says why that contender is missing.
    """
    found: dict[str, Cycle | str] = {}

    def raw_flock() -> None:
        fd = os.open(directory / "raw.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    found["raw flock (the floor)"] = raw_flock

    flags = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING

    def bare_portalocker() -> None:
        lock = portalocker.Lock(directory / "pl.lock", mode="a", timeout=0, flags=flags)
        lock.acquire()
        lock.release()

    found[BASELINE] = bare_portalocker

    reused = SingleInstance("bench-reused", directory=directory)

    def single_instance_reused() -> None:
        reused.acquire()
        reused.release()

    def single_instance_new() -> None:
        with SingleInstance("bench-new", directory=directory):
            pass

    found["SingleInstance (one object)"] = single_instance_reused
    found["SingleInstance (new each time)"] = single_instance_new

    def pid_file_lock() -> None:
        lock = portalocker.PidFileLock(str(directory / "plpid.pid"))
        lock.acquire()
        lock.release()

    found["portalocker.PidFileLock"] = pid_file_lock
    found.update(_optional_contenders(directory))
    return found


def _optional_contenders(directory: Path) -> dict[str, Cycle | str]:
    """Contenders from the ``bench`` extra; missing ones say so."""
    found: dict[str, Cycle | str] = {}
    try:
        import filelock  # noqa: PLC0415

        def file_lock() -> None:
            lock = filelock.FileLock(directory / "fl.lock")
            lock.acquire(timeout=0)
            lock.release()

        found["filelock.FileLock"] = file_lock
    except ImportError:
        found["filelock.FileLock"] = "not installed"
    try:
        import fasteners  # noqa: PLC0415

        def fasteners_lock() -> None:
            lock = fasteners.InterProcessLock(directory / "fa.lock")
            lock.acquire(blocking=False)
            lock.release()

        found["fasteners.InterProcessLock"] = fasteners_lock
    except ImportError:
        found["fasteners.InterProcessLock"] = "not installed"
    try:
        import pid  # noqa: PLC0415

        def pid_file() -> None:
            pidfile = pid.PidFile(pidname="pidpkg", piddir=str(directory))
            pidfile.create()
            pidfile.close()

        found["pid.PidFile"] = pid_file
    except ImportError:
        found["pid.PidFile"] = "not installed"
    try:
        from tendo import singleton  # noqa: PLC0415

        def tendo_single() -> None:
            path = str(directory / "tendo.lock")
            instance = singleton.SingleInstance(lockfile=path)  # type: ignore[no-untyped-call]
            instance.__del__()  # type: ignore[no-untyped-call]  # its release
            instance.initialized = False

        found["tendo.singleton"] = tendo_single
    except ImportError:
        found["tendo.singleton"] = "not installed"
    return found


def bench_acquire(directory: Path, batch: int, repeats: int) -> dict[str, Figure | str]:
    """The acquire+release figure of every contender in ``directory``.

    The contenders take turns, one batch each per round, and each ratio is
    the median of the ratios within a round: a noisy moment of the machine
    (2 shared cores) falls on the contender and the baseline alike.
    """
    found = contenders(directory)
    runnable = {name: c for name, c in found.items() if not isinstance(c, str)}
    samples: dict[str, list[float]] = {name: [] for name in runnable}
    for cycle in runnable.values():
        cycle()  # warm up: first-time imports, caches, file creation
    for _ in range(repeats):
        for name, cycle in runnable.items():
            samples[name].append(batch_us(cycle, batch))
    base = samples[BASELINE]
    return {
        name: cycle
        if isinstance(cycle, str)
        else Figure(
            statistics.median(samples[name]),
            statistics.median(x / b for x, b in zip(samples[name], base, strict=True)),
        )
        for name, cycle in found.items()
    }


# --- import time ---------------------------------------------------------------

IMPORTS = {
    "singleton_proc": "import singleton_proc",
    "psutil + portalocker": "import psutil, portalocker",
    "tendo.singleton": "import tendo.singleton",
    "pid": "import pid",
    "filelock": "import filelock",
}


def bench_imports(runs: int) -> dict[str, float | str]:
    """Median milliseconds to import each module set, in fresh interpreters."""
    results: dict[str, float | str] = {}
    for label, statement in IMPORTS.items():
        probe = (
            "import time\nstart = time.perf_counter()\n"
            f"{statement}\nprint((time.perf_counter() - start) * 1000)"
        )
        samples = []
        for _ in range(runs):
            done = subprocess.run(
                [sys.executable, "-c", probe],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if done.returncode != 0:
                break
            samples.append(float(done.stdout))
        results[label] = statistics.median(samples) if samples else "not installed"
    return results


# --- latencies with a holder in another process --------------------------------


@contextlib.contextmanager
def holder_process(
    directory: Path, name: str, sigterm: str = ""
) -> Iterator[subprocess.Popen[str]]:
    """A process holding ``name``; always reaped on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), name, sigterm],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the holder did not start")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def bench_handover(directory: Path, runs: int) -> list[float]:
    """Milliseconds from a holder's release (another process) to a waiter holding."""
    samples = []
    for _ in range(runs):
        waiter = SingleInstance(
            "handover", directory=directory, on_conflict="wait", timeout=30
        )
        with holder_process(directory, "handover") as proc:
            assert proc.stdin is not None
            assert proc.stdout is not None
            acquired: list[float] = []
            thread = threading.Thread(target=_acquire_and_note, args=(waiter, acquired))
            thread.start()
            time.sleep(0.05)  # let the waiter settle into its slowest poll
            proc.stdin.write("\n")
            proc.stdin.flush()
            released = float(proc.stdout.readline())
            thread.join(30)
            samples.append((acquired[0] - released) * 1000)
            waiter.release()
            proc.stdin.write("\n")
            proc.stdin.flush()
    return samples


def _acquire_and_note(instance: SingleInstance, when: list[float]) -> None:
    """Acquire, then note the monotonic time it happened."""
    instance.acquire()
    when.append(time.monotonic())


def bench_replace(
    directory: Path, runs: int, sigterm: str, grace: float
) -> list[float]:
    """Milliseconds for ``on_conflict="replace"`` to stop a holder and take over."""
    samples = []
    for _ in range(runs):
        with holder_process(directory, "replace", sigterm):
            start = time.perf_counter()
            instance = SingleInstance(
                "replace", directory=directory, on_conflict="replace", grace=grace
            ).acquire()
            samples.append((time.perf_counter() - start) * 1000)
            instance.release()
    return samples


def bench_takeover(directory: Path, runs: int) -> list[float]:
    """Milliseconds to acquire right after the holder was SIGKILLed (and reaped)."""
    samples = []
    for _ in range(runs):
        with holder_process(directory, "takeover") as proc:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            start = time.perf_counter()
            instance = SingleInstance("takeover", directory=directory).acquire()
            samples.append((time.perf_counter() - start) * 1000)
            instance.release()
    return samples


# --- report --------------------------------------------------------------------


def _default_fs_dir() -> Path:
    """A fresh private directory on the default lock directory's filesystem."""
    from singleton_proc._lock.directory import resolve_directory  # noqa: PLC0415

    return Path(tempfile.mkdtemp(prefix="bench-", dir=resolve_directory(None)))


def _print_acquire(table: dict[str, dict[str, Figure | str]]) -> None:
    """The acquire+release table: µs and ratio to bare portalocker, per filesystem."""
    places = list(table)
    print("\nuncontended acquire + release")
    print(
        "(median µs per cycle; x = the median ratio to portalocker.Lock of the "
        "same file, batches taking turns)"
    )
    print(f"{'':34}" + "".join(f"{place:>24}" for place in places))
    for name in table[places[0]]:
        cells = []
        for place in places:
            value = table[place][name]
            if isinstance(value, str):
                cells.append(f"{value:>24}")
            else:
                cells.append(f"{value.us:>12.1f} µs {value.ratio:>6.2f}x")
        print(f"{name:34}" + "".join(cells))


def _summary(samples: list[float]) -> str:
    """Median, 90th percentile and count of latencies in milliseconds."""
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    median = statistics.median(ordered)
    return f"median {median:7.1f} ms   p90 {p90:7.1f} ms   n={len(ordered)}"


def _plot(table: dict[str, dict[str, Figure | str]], path: Path) -> None:
    """A horizontal bar chart of the acquire+release figures."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    places = list(table)
    names = [
        n
        for n in table[places[0]]
        if all(not isinstance(table[p][n], str) for p in places)
    ]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    height = 0.8 / len(places)
    for index, place in enumerate(places):
        values = [cast("Figure", table[place][n]).us for n in names]
        positions = [i + index * height for i in range(len(names))]
        ax.barh(positions, values, height=height, label=place)
    ax.set_yticks([i + height * (len(places) - 1) / 2 for i in range(len(names))])
    ax.set_yticklabels([n.strip() for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("µs per uncontended acquire + release (median, lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    """Measure everything, print the tables, optionally save JSON and a plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, help="a directory on a filesystem to compare with tmpfs"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few runs of each, for CI"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--plot", type=Path, help="draw the acquire+release figures (PNG)"
    )
    args = parser.parse_args()
    batch, repeats, runs = (200, 9, 3) if args.quick else (1000, 31, 30)

    system = os.uname()
    print(
        f"singleton_proc {singleton_proc.__version__}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"{system.sysname} {system.release}"
    )
    places: dict[str, Path] = {}
    made: list[Path] = []
    if Path("/dev/shm").is_dir():  # noqa: S108
        made.append(
            Path(tempfile.mkdtemp(prefix="singleton-proc-bench-", dir="/dev/shm"))
        )
        places["tmpfs (/dev/shm)"] = made[-1]
    if args.dir:
        places[str(args.dir)] = args.dir
    else:
        made.append(_default_fs_dir())
        places["default dir's filesystem"] = made[-1]
    for path in made:
        path.chmod(0o700)
    try:
        table = {
            label: bench_acquire(path, batch, repeats) for label, path in places.items()
        }
        _print_acquire(table)
        imports = bench_imports(3 if args.quick else 15)
        print("\nimport time in a fresh interpreter (median ms)")
        for label, value in imports.items():
            print(
                f"{label:34}{value if isinstance(value, str) else f'{value:8.1f} ms'}"
            )
        work = made[0] if made else next(iter(places.values()))
        latencies = {
            '"wait" hand-over (holder releases -> waiter holds)': bench_handover(
                work, runs
            ),
            '"replace", holder exits on SIGTERM': bench_replace(
                work, max(3, runs * 2 // 3), "", 5.0
            ),
            '"replace", holder ignores SIGTERM, grace=0.2': bench_replace(
                work, 3 if args.quick else 5, "ignore", 0.2
            ),
            "takeover after SIGKILL of the holder": bench_takeover(
                work, 3 if args.quick else 10
            ),
        }
        print("\nlatencies with the holder in another process")
        for label, samples in latencies.items():
            print(f"{label:52}{_summary(samples)}")
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "acquire_release": {
                        place: {
                            name: f if isinstance(f, str) else f._asdict()
                            for name, f in figures.items()
                        }
                        for place, figures in table.items()
                    },
                    "import_ms": imports,
                    "latency_ms": {
                        k: statistics.median(v) for k, v in latencies.items()
                    },
                },
                indent=2,
            )
        )
    if args.plot:
        _plot(table, args.plot)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()
