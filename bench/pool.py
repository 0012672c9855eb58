"""Benchmark singleton_proc's worker pool beside the pools people use instead.

Run ``python bench/pool.py`` after ``pip install -e ".[bench]"``; ``--quick``
runs small sizes once (CI runs it so this script cannot rot; it asserts
nothing about speed). Everything is measured in one run, on this machine,
with one start method for every tool (``--start-method``; loky has its own
and the header says which), and printed as medians:

1. throughput: tasks/s of ``square`` over 200,000 ints with 2 workers, cold
   (pool start-up, map and tear-down timed together) and warm (the map
   only), as ratios to ``multiprocessing.Pool.map``: over ``range(200_000)``,
   which ours sends in slices of the range, and over a list of the same
   ints; and the round trip of one ``submit(...).result()`` on a warm
   executor;
2. streaming a 2,000,000-item generator: the parent's peak memory growth,
   and how many items were pulled from it while the consumer stalled 1 s;
3. a task SIGKILLs its own worker: from the kill to the exception in the
   parent, or a hang (cut off at a cap);
4. Ctrl-C (SIGINT to the pool's parent while every worker is busy): until
   the parent exits and until its workers are gone, or a hang (cut off);
5. on a ``dask.distributed`` ``LocalCluster`` of 2 worker processes (one
   thread each), warm: ``run_in_pool(executor=client.get_executor(pure=False))``
   beside ``client.map`` and ``dask.bag`` on the same ``square`` items.

The measuring is done in fresh ``python bench/pool.py --child ...``
processes, which print JSON: section 1 in one, the others one per run.
Whatever a child leaves running is killed by pid and reported (on Linux this
script adopts its children's orphans to find them). Pools are used the
idiomatic way, in ``with`` blocks, and torn down as those do it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import importlib
import importlib.util
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

import singleton_proc

Task = Callable[[int], int]
Mapper = Callable[[Task, Iterable[int]], list[int]]
Streamer = Callable[[Task, Iterable[int]], Iterator[int]]
Report = dict[str, Any]
Outcome = tuple[list[float | None], str, bool]  # ms (None: past the cap), note, capped

RUN_IN_POOL, POOL, EXECUTOR = "singleton_proc", "multiprocessing", "concurrent.futures"
PROCESS_POOL, WARM = "process_pool", "warm run_in_pool"
MPIRE, PEBBLE, LOKY = "mpire", "pebble", "loky"
TOOLS = {  # tool -> (module, the name used, how its map reads)
    RUN_IN_POOL: ("singleton_proc", "run_in_pool", "singleton_proc.run_in_pool"),
    PROCESS_POOL: ("singleton_proc", "process_pool", "singleton_proc process_pool"),
    WARM: ("singleton_proc", "process_pool", "run_in_pool on a process_pool"),
    POOL: ("multiprocessing", "Pool", "multiprocessing Pool.map"),
    EXECUTOR: ("concurrent.futures", "ProcessPoolExecutor", "ProcessPoolExecutor.map"),
    MPIRE: ("mpire", "WorkerPool", "mpire WorkerPool.map"),
    PEBBLE: ("pebble", "ProcessPool", "pebble ProcessPool.map"),
    LOKY: ("loky", "ProcessPoolExecutor", "loky ProcessPoolExecutor.map"),
}
BASELINE = "multiprocessing Pool.map"
LIST_BASELINE = "  over a list: multiprocessing Pool.map"
SLOW = 20  # ProcessPoolExecutor.map at its default chunksize runs on N / SLOW
#: A throughput row: the tool, its chunksize (None: the tool's own), the
#: divisor of N, and whether the items are a list (else a range).
Row = tuple[str, int | None, int, bool]
THROUGHPUT: dict[str, Row] = {
    BASELINE: (POOL, None, 1, False),
    "singleton_proc.run_in_pool": (RUN_IN_POOL, None, 1, False),
    "singleton_proc process_pool().map": (PROCESS_POOL, None, 1, False),
    "run_in_pool(executor=process_pool())": (WARM, None, 1, False),
    "ProcessPoolExecutor.map *": (EXECUTOR, None, SLOW, False),
    "ProcessPoolExecutor.map(chunksize=1000)": (EXECUTOR, 1000, 1, False),
    "mpire WorkerPool.map": (MPIRE, None, 1, False),
    "pebble ProcessPool.map(chunksize=1000)": (PEBBLE, 1000, 1, False),
    "loky ProcessPoolExecutor.map(chunksize=1000)": (LOKY, 1000, 1, False),
    LIST_BASELINE: (POOL, None, 1, True),
    "  over a list: singleton_proc.run_in_pool": (RUN_IN_POOL, None, 1, True),
    "  over a list: process_pool().map": (PROCESS_POOL, None, 1, True),
}
ROUND_TRIP_TOOLS = {
    EXECUTOR: "ProcessPoolExecutor.submit().result()",
    PROCESS_POOL: "singleton_proc process_pool().submit().result()",
    LOKY: "loky ProcessPoolExecutor.submit().result()",
}
ROUND_TRIPS = 200  # submit-result round trips per run, after as many to warm up
LABELS = {tool: label for tool, (_, _, label) in TOOLS.items()}
DASK_ROWS = ("client.map + gather", "dask.bag map", "run_in_pool(executor=dask)")
STREAM_TOOLS = {
    RUN_IN_POOL: "singleton_proc.iter_in_pool",
    POOL: "multiprocessing Pool.imap(chunksize=1000)",
    EXECUTOR: "ProcessPoolExecutor.map(chunksize=1000)",
}
WARM_UP = 1000  # items mapped before a warm measurement starts
STALL = 1.0  # seconds the streaming consumer stops consuming
DIE_TASKS, VICTIM = 40, 5  # the map where item VICTIM kills its worker
POLL = 0.001  # seconds between two looks at a process or a file
GRACE = 2.0  # seconds a child's processes get to exit after it did
LEFTOVERS: list[str] = []  # processes a child left running (killed by pid)


def square(x: int) -> int:
    """The tiny task."""
    return x * x


def die_or_nap(stamp: str, x: int) -> int:
    """Nap 10 ms; item VICTIM writes the time to ``stamp`` and SIGKILLs its worker."""
    if x == VICTIM:
        Path(stamp + ".tmp").write_text(repr(time.time()))
        os.replace(stamp + ".tmp", stamp)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return x


def block(ready: str, _x: int) -> int:
    """Say ready (a file named by our pid in ``ready``), then sleep for ever."""
    Path(ready, str(os.getpid())).touch()
    while True:
        time.sleep(60)


def unavailable(tool: str) -> str | None:
    """Why ``tool`` cannot run here, or None; loads what it needs."""
    module, name, _ = TOOLS[tool]
    try:
        getattr(importlib.import_module(module), name)
    except ImportError:
        return "not installed"
    except AttributeError:
        return f"no {module}.{name}"
    return None


@contextlib.contextmanager
def open_pool(
    tool: str, method: str, workers: int, chunksize: int | None = None
) -> Iterator[Mapper]:
    """A started pool of ``tool`` and its ordered map; torn down by ``with``."""
    ctx = multiprocessing.get_context(method)
    size = chunksize or 1  # the executors' default
    if tool == RUN_IN_POOL:
        from singleton_proc import run_in_pool  # noqa: PLC0415

        yield lambda fn, items: run_in_pool(
            fn, items, n=workers, chunksize=chunksize, start_method=method
        )
    elif tool in {PROCESS_POOL, WARM}:
        from singleton_proc import process_pool, run_in_pool  # noqa: PLC0415

        with process_pool(workers, start_method=method) as ours:
            if tool == WARM:
                yield lambda fn, items: run_in_pool(
                    fn, items, chunksize=chunksize, executor=ours
                )
            else:
                yield lambda fn, items: list(ours.map(fn, items, chunksize=chunksize))
    elif tool == POOL:
        with ctx.Pool(workers) as pool:
            yield lambda fn, items: pool.map(fn, items, chunksize)
    elif tool == EXECUTOR:
        with ProcessPoolExecutor(workers, mp_context=ctx) as executor:
            yield lambda fn, items: list(executor.map(fn, items, chunksize=size))
    elif tool == MPIRE:
        from mpire.pool import WorkerPool  # noqa: PLC0415

        # keep_alive: else every map call starts new workers
        with WorkerPool(workers, start_method=method, keep_alive=True) as mpool:
            yield lambda fn, items: list(mpool.map(fn, items, chunk_size=chunksize))
    elif tool == PEBBLE:
        from pebble import ProcessPool  # noqa: PLC0415

        with ProcessPool(max_workers=workers, context=ctx) as ppool:
            yield lambda fn, items: list(ppool.map(fn, items, chunksize=size).result())
    else:
        loky = importlib.import_module("loky")  # no type hints: the module is Any
        with loky.ProcessPoolExecutor(workers) as lpool:
            yield lambda fn, items: list(lpool.map(fn, items, chunksize=size))


@contextlib.contextmanager
def open_stream(tool: str, method: str, workers: int) -> Iterator[Streamer]:
    """A started pool of ``tool`` and its map over a stream (lazy where it can)."""
    ctx = multiprocessing.get_context(method)
    if tool == RUN_IN_POOL:
        from singleton_proc import iter_in_pool  # noqa: PLC0415

        yield lambda fn, items: iter_in_pool(fn, items, n=workers, start_method=method)
    elif tool == POOL:
        with ctx.Pool(workers) as pool:
            yield lambda fn, items: pool.imap(fn, items, 1000)
    else:
        with ProcessPoolExecutor(workers, mp_context=ctx) as executor:
            yield lambda fn, items: executor.map(fn, items, chunksize=1000)


@contextlib.contextmanager
def open_executor(tool: str, method: str, workers: int) -> Iterator[Executor]:
    """A started ``concurrent.futures`` executor of ``tool``; shut down by ``with``."""
    if tool == PROCESS_POOL:
        from singleton_proc import process_pool  # noqa: PLC0415

        with process_pool(workers, start_method=method) as ours:
            yield ours
    elif tool == EXECUTOR:
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(workers, mp_context=ctx) as executor:
            yield executor
    else:
        loky = importlib.import_module("loky")
        with loky.ProcessPoolExecutor(workers) as lpool:
            yield lpool


# --- in a child process: one measurement, printed as JSON ----------------------


def emit(report: Report) -> None:
    """Hand ``report`` to the parent at once (before any tear-down can hang)."""
    print(json.dumps(report), flush=True)


def rate(args: argparse.Namespace, row: Row, n: int, *, warm: bool) -> float:
    """Tasks per second of one map of ``square`` over ``range(n)`` (or its list)."""
    tool, chunk, _, listed = row
    items = list(range(n)) if listed else range(n)
    start = time.perf_counter()
    with open_pool(tool, args.start_method, args.workers, chunk) as pool_map:
        if warm:
            pool_map(square, range(WARM_UP))
            start = time.perf_counter()
        results = pool_map(square, items)
        mapped = time.perf_counter()
    end = mapped if warm else time.perf_counter()
    assert results[-1] == square(n - 1)
    return n / (end - start)


def throughput_child(args: argparse.Namespace, _tool: str, size: str) -> None:
    """Tasks/s of every row, cold and warm; round-robin, so noise hits all alike."""
    n = int(size)
    rates: dict[str, list[list[float]]] = {name: [[], []] for name in THROUGHPUT}
    failed = {k: why for k, v in THROUGHPUT.items() if (why := unavailable(v[0]))}
    for _ in range(args.repeat):
        for name, row in THROUGHPUT.items():
            try:
                for warm in (False, True) if row[0] != RUN_IN_POOL else (False,):
                    if name not in failed:
                        speed = rate(args, row, n // row[2], warm=warm)
                        rates[name][warm].append(speed)
            except Exception as exc:  # noqa: BLE001  # report it, measure the rest
                failed[name] = f"{type(exc).__name__}: {exc}"[:52]
    emit({"rates": rates, "broken": failed})


def round_trip_child(args: argparse.Namespace, tool: str, _arg: str) -> None:
    """Median ms of one ``submit(fn, x).result()`` on a warm executor, per ``fn``.

    ``abs`` is importable; ``square`` is this script's (``__main__``), which
    a worker that does not fork cannot import: our workers get it by value.
    """
    report = {}
    with open_executor(tool, args.start_method, args.workers) as executor:
        for fn in (abs, square):
            for x in range(ROUND_TRIPS):
                executor.submit(fn, x).result()
            times = []
            for x in range(ROUND_TRIPS):
                start = time.perf_counter()
                executor.submit(fn, x).result()
                times.append(time.perf_counter() - start)
            report[fn.__name__] = statistics.median(times) * 1000
    emit(report)


def dask_child(args: argparse.Namespace, _tool: str, size: str) -> None:
    """Tasks/s of each way to map ``square`` on one warm LocalCluster."""
    bag = importlib.import_module("dask.bag")  # untyped: Any, as loky
    distributed = importlib.import_module("dask.distributed")
    from singleton_proc import run_in_pool  # noqa: PLC0415

    n, workers = int(size), args.workers
    rates: dict[str, list[float]] = {name: [] for name in DASK_ROWS}
    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        executor = client.get_executor(pure=False)
        ways: dict[str, Callable[[int], list[int]]] = {
            DASK_ROWS[0]: lambda k: client.gather(
                client.map(square, range(k), pure=False)
            ),
            DASK_ROWS[1]: lambda k: (
                bag.from_sequence(range(k), npartitions=4 * workers)
                .map(square)
                .compute()
            ),
            DASK_ROWS[2]: lambda k: run_in_pool(square, range(k), executor=executor),
        }
        for way in ways.values():
            way(100)  # warm: the function reaches the workers
        for _ in range(args.repeat):
            for name, way in ways.items():
                start = time.perf_counter()
                results = way(n)
                rates[name].append(n / (time.perf_counter() - start))
                assert results[-1] == square(n - 1)
    emit({"rates": rates})


def stream_child(args: argparse.Namespace, tool: str, size: str) -> None:
    """Peak RSS growth and items pulled during a stall, streaming ``size`` items."""
    n, pulled = int(size), 0

    def source() -> Iterator[int]:
        nonlocal pulled
        for item in range(n):
            pulled += 1
            yield item

    assert unavailable(tool) is None  # imported before the baseline
    # Sampled: ru_maxrss would count our parent's peak (kept across fork+exec).
    me, done = psutil.Process(), threading.Event()
    before = peak = me.memory_info().rss

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.002):
            peak = max(peak, me.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    with open_stream(tool, args.start_method, args.workers) as imap:
        results = imap(square, source())
        first = next(results)
        time.sleep(STALL)  # the consumer stalls: what is measured
        stalled = pulled
        rest = sum(1 for _ in results)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    assert (first, rest) == (0, n - 1), (first, rest)
    emit({"mb": (peak - before) / 1e6, "pulled": stalled, "s": seconds})


def died_child(args: argparse.Namespace, tool: str, stamp: str) -> None:
    """Milliseconds from a worker's SIGKILL to the exception raised in here."""
    with open_pool(tool, args.start_method, args.workers) as pool_map:
        try:
            pool_map(functools.partial(die_or_nap, stamp), range(DIE_TASKS))
        except Exception as exc:  # noqa: BLE001  # each tool raises its own
            caught = time.time()
            killed = float(Path(stamp).read_text())
            emit({"ms": (caught - killed) * 1000, "error": type(exc).__name__})
        else:
            emit({"error": "none raised"})


def ctrl_c_child(args: argparse.Namespace, tool: str, ready: str) -> None:
    """A pool whose workers all block for ever, until Ctrl-C."""
    # Started by a script run in the background (CI), we would inherit
    # SIGINT ignored: take Ctrl-C as an interactive program does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with open_pool(tool, args.start_method, args.workers) as pool_map:
        pool_map(functools.partial(block, ready), range(4 * args.workers))


# --- in the parent: children, and killing what they leave, by pid --------------


def gone(proc: psutil.Process) -> bool:
    """Whether ``proc`` has exited (a zombie has)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(done: Callable[[], bool], start: float, cap: float) -> float | None:
    """Milliseconds from ``start`` (a perf_counter) to ``done()``; None after cap s."""
    while not done():
        if time.perf_counter() - start > cap:
            return None
        time.sleep(POLL)
    return (time.perf_counter() - start) * 1000


def kill_by_pid(procs: Iterable[psutil.Process]) -> list[int]:
    """SIGKILL those of ``procs`` still running, and reap all; the killed pids."""
    killed = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if not gone(proc):
                proc.kill()
                killed.append(proc.pid)
            proc.wait(5)
    return killed


def descendants(pid: int | None = None) -> dict[int, psutil.Process]:
    """The processes below ``pid`` (default: this one), by pid."""
    try:
        return {p.pid: p for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def become_subreaper() -> None:
    """Adopt our children's orphans (Linux), so no leftover escapes the check."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


@dataclass
class Child:
    """A ``--child`` run of this script, and its output."""

    proc: subprocess.Popen[bytes]
    out: IO[bytes]

    def stop(self) -> None:
        """Kill the child if it runs, then what it had started, by pid."""
        if self.proc.poll() is None:
            tree = descendants(self.proc.pid).values()
            self.proc.kill()
            self.proc.wait()
            kill_by_pid(tree)

    def finish(self, cap: float) -> tuple[Report, bool]:
        """Its JSON report, and whether it exited within ``cap`` s (else: killed)."""
        try:
            self.proc.wait(cap)
            finished = True
        except subprocess.TimeoutExpired:
            self.stop()
            finished = False
        self.out.seek(0)
        lines = self.out.read().decode(errors="replace").splitlines()
        reports = [json.loads(line) for line in lines if line.startswith("{")]
        if reports or not finished:
            return (reports[-1] if reports else {}), finished
        return {"failed": lines[-1] if lines else "no output"}, finished


@contextlib.contextmanager
def child(args: argparse.Namespace, *argv: str) -> Iterator[Child]:
    """A fresh ``bench/pool.py --child WHAT TOOL ARG``; it and all it left are gone."""
    before = descendants()
    with tempfile.TemporaryFile() as out:
        options = (
            f"--start-method={args.start_method} --workers={args.workers}"
            f" --repeat={args.repeat}"
        )
        proc = subprocess.Popen(
            [sys.executable, __file__, *options.split(), "--child", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        run = Child(proc, out)
        try:
            yield run
        finally:
            run.stop()

            def strays() -> list[psutil.Process]:
                return [p for i, p in descendants().items() if i not in before]

            wait_until(lambda: all(map(gone, strays())), time.perf_counter(), GRACE)
            LEFTOVERS.extend(f"{argv[1]} {pid}" for pid in kill_by_pid(strays()))


# --- the four measurements ------------------------------------------------------


def bench_throughput(args: argparse.Namespace, n: int) -> None:
    """Median tasks/s of each row, cold and warm, and the ratios to Pool.map."""
    with child(args, "throughput", "all", str(n)) as run:
        report, _ = run.finish(600)
    rates, failed = report.get("rates", {}), report.get("broken", {})
    print(f"\n1. throughput: square(x) for x in range({n:,}), {args.workers} workers")
    print(
        f"(median tasks/s of {args.repeat}; x = the ratio to Pool.map, cold or warm,"
        " on the same input)"
    )
    if "failed" in report:
        print(f"the measuring child failed: {report['failed']}")
        return
    print(f"{'':48}{'cold: start+map+stop':>26}{'warm: map only':>26}")
    bases = {
        listed: [statistics.median(runs) for runs in rates[name]]
        for listed, name in ((False, BASELINE), (True, LIST_BASELINE))
    }
    for name, (*_, listed) in THROUGHPUT.items():
        base = bases[listed]
        cells = [f"{failed[name]:>52}"] if name in failed else []
        for warm in () if cells else (False, True):
            if runs := rates[name][warm]:
                median = statistics.median(runs)
                cells.append(f"{median:>18,.0f} {median / base[warm]:6.2f}x")
            else:
                cells.append(f"{'— (workers per call) †':>26}")
        print(f"{name:48}" + "".join(cells))
    print(f"* on N/{SLOW} = {n // SLOW:,} tasks (it is that slow); tasks/s as measured")
    print("† run_in_pool starts its workers in each call: compare its cold with warm")


def round_trip_once(args: argparse.Namespace, tool: str, cap: float) -> Outcome:
    """The median submit-result round trip on a warm executor, in a child."""
    with child(args, "round-trip", tool, "-") as run:
        report, finished = run.finish(cap)
    ms = [float(report[k]) if k in report else None for k in ("abs", "square")]
    return ms, str(report.get("failed", "")), not finished


def bench_dask(args: argparse.Namespace, n: int) -> None:
    """Tasks/s of run_in_pool on dask beside dask's own ways, in one child."""
    print(
        f"\n5. dask.distributed: square(x) for x in range({n:,}) on a LocalCluster of"
        f"\n{args.workers} worker processes, 1 thread each, warm (median tasks/s of"
        f" {args.repeat};\nx = the ratio to client.map)"
    )
    if importlib.util.find_spec("distributed") is None:
        print("not installed: pip install distributed")
        return
    with child(args, "dask", "dask", str(n)) as run:
        report, _ = run.finish(900)
    if "rates" not in report:
        print(f"the measuring child failed: {report.get('failed', 'no report')}")
        return
    medians = {name: statistics.median(runs) for name, runs in report["rates"].items()}
    for name, median in medians.items():
        ratio = median / medians[DASK_ROWS[0]]
        print(f"{name:48}{median:>18,.0f} {ratio:6.2f}x")


def stream_once(args: argparse.Namespace, tool: str, cap: float) -> Outcome:
    """Peak memory growth, items pulled during the stall and seconds, in a child."""
    with child(args, "stream", tool, str(args.stream_n)) as run:
        report, finished = run.finish(cap)
    values = [report.get(key) for key in ("mb", "pulled", "s")]
    return values, str(report.get("failed", "")), not finished


def died_once(args: argparse.Namespace, tool: str, cap: float) -> Outcome:
    """From a worker's SIGKILL to the exception in its parent, in a child."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        child(args, "died", tool, str(Path(tmp, "killed"))) as run,
    ):
        report, finished = run.finish(cap)
    ms = float(report["ms"]) if "ms" in report else None
    note = str(report.get("error", report.get("failed", "")))
    if ms is not None and not finished:
        note += ", then hangs on exit"
    return [ms], note, not finished


def ctrl_c_once(args: argparse.Namespace, tool: str, cap: float) -> Outcome:
    """From SIGINT to the child's exit, and to its workers being gone."""
    with (
        tempfile.TemporaryDirectory() as ready,
        child(args, "ctrl-c", tool, ready) as run,
    ):

        def pids() -> list[int]:
            return [int(name) for name in os.listdir(ready) if name.isdigit()]

        ready_ms = wait_until(
            lambda: len(pids()) >= args.workers, time.perf_counter(), 30
        )
        if ready_ms is None:
            raise RuntimeError(f"{tool}: the workers never got ready")
        workers = [psutil.Process(pid) for pid in pids()]
        start = time.perf_counter()
        run.proc.send_signal(signal.SIGINT)  # by pid, to the pool's parent only
        exited = wait_until(lambda: run.proc.poll() is not None, start, cap)
        cleaned = wait_until(lambda: all(map(gone, workers)), start, cap)
    return [exited, cleaned], "", None in (exited, cleaned)


def bench_per_tool(
    args: argparse.Namespace,
    once: Callable[[argparse.Namespace, str, float], Outcome],
    *,
    title: str,
    repeat: int,
    cap: float,
    tools: dict[str, str],
    columns: dict[str, str],
) -> None:
    """Per tool, the median of each column over runs of ``once``, up to a hang."""
    print(f"\n{title}")
    print(f"{'':48}" + "".join(f"{heading:>18}" for heading in columns))
    for tool, name in tools.items():
        runs: list[list[float | None]] = []
        notes, capped, why = set(), False, unavailable(tool)
        for _ in range(0 if why else repeat):
            values, note, capped = once(args, tool, cap)
            runs.append(values)
            notes.add(note)
            if capped:
                break
        cells = []
        measured = list(zip(*runs, strict=True)) or [()] * len(columns)
        for form, column in zip(columns.values(), measured, strict=True):
            done = [value for value in column if value is not None]
            if done and len(done) == len(column):
                cells.append(form.format(statistics.median(done)))
            else:
                cells.append(f"hangs (> {cap:.0f} s)" if capped else "—")
        note = why or ", ".join(sorted(filter(None, notes)))
        print(f"{name:48}{''.join(f'{cell:>18}' for cell in cells)}  {note}".rstrip())


def bench_round_trip(args: argparse.Namespace) -> None:
    """One task's submit-result round trip on a warm executor, per tool."""
    bench_per_tool(
        args,
        round_trip_once,
        title=f"1b. one task's round trip on a warm executor, submit(fn, x)"
        f".result()\n(median of {ROUND_TRIPS} in a child, then of {args.repeat} "
        "children)",
        repeat=args.repeat,
        cap=60,
        tools=ROUND_TRIP_TOOLS,
        columns={"abs (importable)": "{:.3f} ms", "the script's fn": "{:.3f} ms"},
    )


def bench_stream(args: argparse.Namespace) -> None:
    """Streaming a generator: memory, items pulled in a stall, time."""
    runs, cap = min(args.repeat, 3), 60 if args.quick else 300
    bench_per_tool(
        args,
        stream_once,
        title=f"2. streaming a generator of {args.stream_n:,} ints through square(x)\n"
        f"(medians of {runs}, a fresh child process each; the consumer takes one\n"
        f" result, then stalls {STALL:.0f} s: how many items had it pulled by then)",
        repeat=runs,
        cap=cap,
        tools=STREAM_TOOLS,
        columns={"peak RSS growth": "{:.1f} MB", "pulled in stall": "{:,.0f}"}
        | {"total": "{:.1f} s"},
    )


def bench_died(args: argparse.Namespace) -> None:
    """A task SIGKILLs its worker: from the kill to the parent's exception."""
    bench_per_tool(
        args,
        died_once,
        title=f"3. a task SIGKILLs its worker mid-map ({DIE_TASKS} tasks of 10 ms)\n"
        f"(median of {args.repeat}, and the exception the parent gets)",
        repeat=args.repeat,
        cap=3 if args.quick else 10,
        tools=LABELS,
        columns={"kill -> exception": "{:.1f} ms"},
    )


def bench_ctrl_c(args: argparse.Namespace) -> None:
    """Ctrl-C to a pool's parent: until it exits and its workers are gone."""
    cap = 2 if args.quick else 15
    bench_per_tool(
        args,
        ctrl_c_once,
        title="4. Ctrl-C: SIGINT to the pool's parent, every worker busy for ever\n"
        f"(median of {args.repeat}; past {cap} s the child and its workers are killed)",
        repeat=args.repeat,
        cap=cap,
        tools=LABELS,
        columns={"-> parent exits": "{:.1f} ms", "-> workers gone": "{:.1f} ms"},
    )


def main() -> None:
    """Parse the options; run one child measurement, or all and print the tables."""
    methods = multiprocessing.get_all_start_methods()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--workers", type=int, default=2, help="processes per pool")
    parser.add_argument("--repeat", type=int, help="runs per measurement (5; quick 1)")
    parser.add_argument(
        "--start-method",
        choices=methods,
        default="fork" if "fork" in methods else methods[0],
    )
    parser.add_argument(
        "--only",
        choices=["throughput", "round-trip", "stream", "died", "ctrl-c", "dask"],
        help="run this section alone",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("WHAT", "TOOL", "ARG"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:  # measure in this fresh process, report as JSON
        what, tool, arg = args.child
        measure = {
            "throughput": throughput_child,
            "stream": stream_child,
            "died": died_child,
            "ctrl-c": ctrl_c_child,
            "round-trip": round_trip_child,
            "dask": dask_child,
        }
        measure[what](args, tool, arg)
        return
    args.repeat = args.repeat or (1 if args.quick else 5)
    n, args.stream_n = (20_000, 100_000) if args.quick else (200_000, 2_000_000)
    become_subreaper()
    started = time.perf_counter()
    loky_method = "not installed"
    if not unavailable(LOKY):
        context = importlib.import_module("loky.backend.context")
        loky_method = str(context.get_context().get_start_method())
    print(
        f"singleton_proc {singleton_proc.__version__}, Python {sys.version.split()[0]},"
        f" {os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}"
    )
    print(f"start method: {args.start_method} for every tool but loky ({loky_method})")
    sections: dict[str, Callable[[], None]] = {
        "throughput": lambda: bench_throughput(args, n),
        "round-trip": lambda: bench_round_trip(args),
        "stream": lambda: bench_stream(args),
        "died": lambda: bench_died(args),
        "ctrl-c": lambda: bench_ctrl_c(args),
        "dask": lambda: bench_dask(args, 1_000 if args.quick else 10_000),
    }
    for name, section in sections.items():
        if args.only in {None, name}:
            section()
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s; processes a child left"
        f" running, killed by pid: {', '.join(LEFTOVERS) or 'none'}"
    )


if __name__ == "__main__":
    main()
