"""Benchmark one call in a fresh process: its start, and how fast failures are handled.

Run ``python bench/process.py`` after the README install; ``--quick`` runs a
few of each (CI runs it so this script cannot rot; it asserts nothing about
speed). For every start method it prints medians of:

* one call in a fresh process, start to result: ``run_process`` beside
  ``multiprocessing.Process`` (start and join, no result) and a fresh
  one-worker ``ProcessPoolExecutor``, with their ratios;
* the latency from SIGKILL of a worker to ``WorkerDiedError`` in the parent;
* Ctrl-C: from SIGINT to the parent's exit, and to its worker being gone;
* the parent SIGKILLed: until its orphaned worker has exited by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil

from singleton_proc import WorkerDiedError, run_process, start_process

DEADLINE = 30.0


def block(ready: str) -> None:
    """The work: say ready (our pid in a file), then block for ever."""
    Path(ready + ".tmp").write_text(str(os.getpid()))
    os.replace(ready + ".tmp", ready)
    threading.Event().wait()


def wait_for_file(path: Path) -> int:
    """The pid written to ``path`` once it appears (a safety deadline)."""
    deadline = time.monotonic() + DEADLINE
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.001)
    return int(path.read_text())


def gone(proc: psutil.Process) -> bool:
    """Whether ``proc`` has exited (a zombie has)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(proc: psutil.Process) -> None:
    """Poll until ``proc`` has exited."""
    deadline = time.monotonic() + DEADLINE
    while not gone(proc):
        if time.monotonic() > deadline:
            raise TimeoutError(f"pid {proc.pid} is still running")
        time.sleep(0.0005)


def start_latency(method: str, runs: int) -> dict[str, list[float]]:
    """Milliseconds for one call in a fresh process, ours and the stdlib's."""
    context = multiprocessing.get_context(method)

    def stdlib_process() -> None:
        process = context.Process(target=os.getpid)  # type: ignore[attr-defined]
        process.start()
        process.join()

    def stdlib_executor() -> None:
        with ProcessPoolExecutor(1, mp_context=context) as executor:
            executor.submit(os.getpid).result()

    ways = {
        "run_process": lambda: run_process(os.getpid, start_method=method),
        "Process": stdlib_process,
        "ProcessPoolExecutor": stdlib_executor,
    }
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(runs):
        for name, way in ways.items():  # interleaved: the same noise for each
            start = time.perf_counter()
            way()
            samples[name].append((time.perf_counter() - start) * 1000)
    return samples


def death_latency(method: str, runs: int) -> list[float]:
    """Milliseconds from SIGKILL of a worker to WorkerDiedError in the parent."""
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            ready = Path(tmp) / f"ready-{run}"
            handle = start_process(block, str(ready), start_method=method)
            wait_for_file(ready)
            start = time.perf_counter()
            os.kill(handle.pid, signal.SIGKILL)
            try:
                handle.result(DEADLINE)
            except WorkerDiedError:
                samples.append((time.perf_counter() - start) * 1000)
    return samples


def _parent(method: str, ready: Path) -> subprocess.Popen[bytes]:
    """A parent program running one blocking worker; returns once it is ready."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--parent", method, str(ready)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_file(ready)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _wait_or_kill(
    parent: subprocess.Popen[bytes], others: list[psutil.Process]
) -> None:
    """Wait for ``parent``; if it hangs, kill it and ``others`` (by pid) and fail."""
    try:
        parent.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        for proc in others:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        parent.kill()
        parent.wait()
        raise


def ctrl_c(method: str, runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds from Ctrl-C to the parent's exit, and to the worker being gone."""
    exits, cleaned = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            ready = Path(tmp) / f"ready-{run}"
            parent = _parent(method, ready)
            worker = psutil.Process(int(ready.read_text()))
            group = [psutil.Process(parent.pid), *psutil.Process(parent.pid).children()]
            start = time.perf_counter()
            for proc in group:  # a terminal sends SIGINT to the whole foreground group
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGINT)
            _wait_or_kill(parent, [worker])
            exits.append((time.perf_counter() - start) * 1000)
            wait_gone(worker)
            cleaned.append((time.perf_counter() - start) * 1000)
    return exits, cleaned


def parent_killed(method: str, runs: int) -> list[float]:
    """Milliseconds from SIGKILL of the parent until its orphaned worker exited."""
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            ready = Path(tmp) / f"ready-{run}"
            parent = _parent(method, ready)
            worker = psutil.Process(int(ready.read_text()))
            start = time.perf_counter()
            parent.kill()
            parent.wait(DEADLINE)
            wait_gone(worker)
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def _summary(samples: list[float]) -> str:
    """Median and maximum in milliseconds."""
    return f"{statistics.median(samples):7.1f} ms (max {max(samples):6.1f})"


def main() -> None:
    """Measure each start method and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few runs, for CI")
    parser.add_argument(
        "--parent", nargs=2, metavar=("METHOD", "READY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.parent:  # the parent program of ctrl_c() and parent_killed()
        # Started by a script run in the background (CI), we would inherit
        # SIGINT ignored: take Ctrl-C as an interactive program does.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        method, ready = args.parent
        run_process(block, ready, start_method=method)
        return
    runs = 3 if args.quick else 20
    version = sys.version.split()[0]
    print(f"Python {version}, {os.cpu_count()} CPUs; medians of {runs} runs")
    print("\nOne call in a fresh process, start to result (ratio: theirs / ours)")
    for method in ("fork", "spawn", "forkserver"):
        medians = {
            name: statistics.median(times)
            for name, times in start_latency(method, runs).items()
        }
        ours = medians.pop("run_process")
        theirs = "".join(
            f"  {name} {ms:6.1f} ms ({ms / ours:4.2f}x)" for name, ms in medians.items()
        )
        print(f"{method:12}run_process {ours:6.1f} ms{theirs}")
    print("\nFailures")
    print(
        f"{'':12}{'death -> WorkerDiedError':>28}{'Ctrl-C -> parent exits':>28}"
        f"{'Ctrl-C -> worker gone':>28}{'parent SIGKILLed -> worker gone':>34}"
    )
    for method in ("fork", "spawn", "forkserver"):
        died = death_latency(method, runs)
        exits, cleaned = ctrl_c(method, max(3, runs // 3))
        orphaned = parent_killed(method, max(3, runs // 3))
        print(
            f"{method:12}{_summary(died):>28}{_summary(exits):>28}"
            f"{_summary(cleaned):>28}{_summary(orphaned):>34}"
        )


if __name__ == "__main__":
    main()
