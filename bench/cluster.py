"""Benchmark the lease across hosts (``backend=``) beside the Redis locks people use.

Run ``python bench/cluster.py`` after ``pip install -e ".[bench]"``, with
``redis-server`` on the PATH (Debian: ``apt-get install redis-server``); the
script starts its own on a free loopback port, persistence off, and stops it
by pid. ``--quick`` measures everything a few times only (CI runs it so that
this script cannot rot; it asserts nothing about speed). Everything is
measured in one run, on one server, and printed as medians with the ratio
to ``SingleInstance``:

* an uncontended acquire + release: microseconds, and round trips (replies
  read by the client, counted by its connection class);
* the hand-over to a waiter blocked in its acquire, after a clean release;
* the take-over by a blocked waiter after the holder's process is SIGKILLed
  (its lock or lease, of the same TTL, must expire first);
* how long a holder takes to learn that it lost its lease when the server
  stops answering (SIGSTOP): the libraries without such a notice say so.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from singleton_proc import SingleInstance

OURS = "SingleInstance(backend=)"
#: A contender: (acquire without waiting, release), or why it is missing.
Pair = tuple[Callable[[], object], Callable[[], object]]


class Counting(redis.Connection):
    """A connection that counts the replies it reads: one per round trip."""

    replies = 0

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """Read one reply, counted."""
        Counting.replies += 1
        return super().read_response(*args, **kwargs)


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[int, int]]:
    """A ``redis-server`` on a free loopback port for the block: (port, pid)."""
    if shutil.which("redis-server") is None:
        sys.exit("bench/cluster.py needs redis-server (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    workdir = tempfile.mkdtemp(prefix="singleton-proc-bench-")
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", workdir, "--logfile", ""),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:  # until it says it accepts connections
            if "Ready to accept connections" in line:
                break
        else:
            sys.exit("redis-server did not start")
        threading.Thread(target=server.stdout.read, daemon=True).start()  # drain
        yield port, server.pid
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def client(port: int) -> redis.Redis:
    """A client whose replies are counted."""
    pool = redis.ConnectionPool(connection_class=Counting, port=port, socket_timeout=10)
    return redis.Redis(connection_pool=pool)


def lock_dir() -> str:
    """A fresh private lock directory (a host of its own)."""
    path = tempfile.mkdtemp(prefix="singleton-proc-bench-host-")
    os.chmod(path, 0o700)
    return path


def contenders(port: int, name: str) -> dict[str, Pair | str]:
    """Each library's acquire (not waiting) and release of ``name``, ready to time."""
    found: dict[str, Pair | str] = {}
    ours = SingleInstance(name, directory=lock_dir(), backend=client(port))
    found[OURS] = (ours.acquire, ours.release)
    plain = client(port).lock(f"{name}-redis-py", timeout=15)
    found["redis-py Lock"] = (lambda: plain.acquire(blocking=False), plain.release)
    try:
        import redis_lock  # noqa: PLC0415

        for renewal in (False, True):
            lock = redis_lock.Lock(
                client(port), f"{name}-prl-{renewal}", expire=15, auto_renewal=renewal
            )
            label = "python-redis-lock" + (" (auto_renewal)" if renewal else "")
            found[label] = (
                functools.partial(lock.acquire, blocking=False),
                lock.release,
            )
    except ImportError:
        found["python-redis-lock"] = "not installed"
    try:
        import sherlock  # noqa: PLC0415

        sh = sherlock.RedisLock(f"{name}-sherlock", client=client(port), expire=15)
        found["sherlock.RedisLock"] = (lambda: sh.acquire(blocking=False), sh.release)
    except ImportError:
        found["sherlock.RedisLock"] = "not installed"
    import portalocker  # noqa: PLC0415  (its __init__ loads its Redis lock)

    pl = portalocker.RedisLock(f"{name}-portalocker", connection=client(port))
    found["portalocker.RedisLock"] = (lambda: pl.acquire(timeout=0), pl.release)
    return found


def bench_cycles(
    port: int, cycles: int, repeats: int
) -> dict[str, tuple[float, float] | str]:
    """(µs, round trips) per uncontended acquire + release, for each contender.

    A contender gets ``cycles`` per batch, or fewer when its cycles are slow
    (a batch lasts about 0.3 s at most), so that a slow one does not take
    the whole run.
    """
    found = contenders(port, "cycle")
    results: dict[str, tuple[float, float] | str] = {}
    timed: dict[str, tuple[Pair, int]] = {}
    trips: dict[str, float] = {}
    for label, pair in found.items():
        if isinstance(pair, str):
            results[label] = pair
            continue
        acquire, release = pair
        start = time.perf_counter()
        acquire()  # warm up: connect, load scripts
        release()
        count = max(3, min(cycles, int(0.3 / (time.perf_counter() - start))))
        before = Counting.replies
        for _ in range(count):
            acquire()
            release()
        trips[label] = (Counting.replies - before) / count
        timed[label] = (pair, count)
    samples: dict[str, list[float]] = {label: [] for label in timed}
    for _ in range(repeats):  # in turns, so a noisy moment hits them alike
        for label, ((acquire, release), count) in timed.items():
            start = time.perf_counter()
            for _ in range(count):
                acquire()
                release()
            samples[label].append((time.perf_counter() - start) / count * 1e6)
    for label, values in samples.items():
        results[label] = (statistics.median(values), trips[label])
    return results


def blocking(port: int, name: str) -> dict[str, tuple[Callable[[], object], ...]]:
    """For each library: (holder's acquire, holder's release, waiter's acquire)."""
    holder = SingleInstance(name, directory=lock_dir(), backend=client(port))
    waiter = SingleInstance(
        name, directory=lock_dir(), backend=client(port), on_conflict="wait"
    )
    found: dict[str, tuple[Callable[[], object], ...]] = {
        OURS: (holder.acquire, holder.release, waiter.acquire, waiter.release)
    }
    one, two = (
        client(port).lock(f"{name}-redis-py", timeout=15, thread_local=False)
        for _ in range(2)
    )
    found["redis-py Lock"] = (one.acquire, one.release, two.acquire, two.release)
    with contextlib.suppress(ImportError):
        import redis_lock  # noqa: PLC0415

        a, b = (
            redis_lock.Lock(client(port), f"{name}-prl", expire=15) for _ in range(2)
        )
        found["python-redis-lock"] = (a.acquire, a.release, b.acquire, b.release)
    with contextlib.suppress(ImportError):
        import sherlock  # noqa: PLC0415

        c, d = (
            sherlock.RedisLock(f"{name}-sh", client=client(port), expire=15, timeout=60)
            for _ in range(2)
        )
        found["sherlock.RedisLock"] = (c.acquire, c.release, d.acquire, d.release)
    import portalocker  # noqa: PLC0415

    e, f = (
        portalocker.RedisLock(f"{name}-pl", connection=client(port)) for _ in range(2)
    )
    found["portalocker.RedisLock"] = (e.acquire, e.release, f.acquire, f.release)
    return found


def bench_handover(port: int, runs: int) -> dict[str, float]:
    """Median seconds from a holder's release to the blocked waiter holding."""
    found = blocking(port, "handover")
    results: dict[str, float] = {}
    for label, (take, let_go, wait, done) in found.items():
        times = []
        for _ in range(runs):
            take()
            held: list[float] = []

            def waiter(
                wait: Callable[[], object] = wait, held: list[float] = held
            ) -> None:
                wait()
                held.append(time.monotonic())

            thread = threading.Thread(target=waiter)
            thread.start()
            # The waiter is blocked in its acquire by now; the moment is drawn,
            # so that a waiter that polls is not caught at the same phase.
            time.sleep(random.uniform(0.2, 0.3))  # noqa: S311
            released = time.monotonic()
            let_go()
            thread.join(60)
            times.append(held[0] - released)
            done()
        results[label] = statistics.median(times)
    return results


#: A holder in a process of its own (``held``, kept referenced: some locks
#: let go when collected), killed once it says "ready": its lock or lease of
#: TTL seconds on NAME, on the server at PORT.
HOLDERS = {
    OURS: "import tempfile; from singleton_proc import SingleInstance as S\n"
    "held = S(NAME, directory=tempfile.mkdtemp(), backend='redis://:PORT', ttl=TTL)",
    "redis-py Lock": "import redis\n"
    "held = redis.Redis(port=PORT).lock(NAME, timeout=TTL, thread_local=False)",
    "python-redis-lock": "import redis, redis_lock\n"
    "held = redis_lock.Lock(redis.Redis(port=PORT), NAME, expire=TTL)",
    "sherlock.RedisLock": "import redis, sherlock\n"
    "held = sherlock.RedisLock(NAME, client=redis.Redis(port=PORT), expire=TTL)",
    "portalocker.RedisLock": "import redis, portalocker\n"
    "held = portalocker.RedisLock(NAME, connection=redis.Redis(port=PORT))",
}


def takeover_waiter(label: str, port: int, name: str, ttl: float) -> Pair:
    """``label``'s blocking acquire of ``name`` (and its release), in this process."""
    if label == OURS:
        ours = SingleInstance(
            name,
            directory=lock_dir(),
            backend=client(port),
            on_conflict="wait",
            ttl=ttl,
        )
        return ours.acquire, ours.release
    if label == "redis-py Lock":
        lock: Any = client(port).lock(name, timeout=ttl, thread_local=False)
    elif label == "python-redis-lock":
        import redis_lock  # noqa: PLC0415

        lock = redis_lock.Lock(client(port), name, expire=ttl)
    elif label == "sherlock.RedisLock":
        import sherlock  # noqa: PLC0415

        lock = sherlock.RedisLock(name, client=client(port), expire=ttl, timeout=60)
    else:
        import portalocker  # noqa: PLC0415

        lock = portalocker.RedisLock(name, connection=client(port))
        return functools.partial(lock.acquire, timeout=60), lock.release
    return lock.acquire, lock.release


def bench_takeover(port: int, runs: int, ttl: float) -> dict[str, float | str]:
    """Median seconds from a holder's SIGKILL to a blocked waiter holding."""
    results: dict[str, float | str] = {}
    for label, code in HOLDERS.items():
        times = []
        for run in range(runs):
            name = f"takeover-{len(results)}-{run}"
            script = code.replace("NAME", repr(name)).replace("PORT", str(port))
            holder = subprocess.Popen(
                [sys.executable, "-c", script.replace("TTL", repr(ttl))
                 + "\nassert held.acquire() is not False\nprint('ready', flush=True)"
                 + "\nimport sys; sys.stdin.read()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert holder.stdout is not None
                if holder.stdout.readline().strip() != "ready":
                    results[label] = "its holder did not start"
                    break
                acquire, release = takeover_waiter(label, port, name, ttl)
                waiter = threading.Thread(target=acquire)
                waiter.start()
                time.sleep(0.2)  # the waiter is blocked in its acquire by now
                holder.kill()
                killed = time.monotonic()
                waiter.join(60)
                times.append(time.monotonic() - killed)
                release()
            finally:
                holder.kill()
                holder.wait()
        if label not in results:
            results[label] = statistics.median(times)
    return results


def bench_loss(
    port: int, server: int, runs: int, ttl: float
) -> dict[str, list[float] | str]:
    """Seconds from a SIGSTOP of the server to the holder being told of the loss."""
    told = threading.Event()
    holders: dict[str, Callable[[int], Pair]] = {}

    def ours(run: int) -> Pair:
        instance = SingleInstance(
            f"loss-{run}", directory=lock_dir(), backend=client(port), ttl=ttl,
            on_lost=lambda _error: told.set(),
        )  # fmt: skip
        return instance.acquire, instance.release

    holders[OURS] = ours
    import portalocker  # noqa: PLC0415

    def theirs(run: int) -> Pair:
        lock = portalocker.RedisLock(
            f"loss-pl-{run}", connection=client(port), on_lost=lambda _lock: told.set()
        )
        return lambda: lock.acquire(timeout=0), lock.release

    holders["portalocker.RedisLock (on_lost)"] = theirs
    results: dict[str, list[float] | str] = {
        "redis-py Lock": "no notice: the holder is never told",
        "python-redis-lock": "no notice: auto_renewal's thread stops silently",
        "sherlock.RedisLock": "no notice: no renewal",
    }
    for label, make in holders.items():
        times = []
        for run in range(runs):
            told.clear()
            acquire, release = make(run)
            acquire()
            os.kill(server, signal.SIGSTOP)
            paused = time.monotonic()
            try:
                if told.wait(ttl * 3):
                    times.append(time.monotonic() - paused)
            finally:
                os.kill(server, signal.SIGCONT)
            with contextlib.suppress(Exception):
                release()
        results[label] = times or f"not told within {ttl * 3:g} s"
    return results


def _ratio(value: float, ours: float) -> str:
    return f"{value / ours:.2f}x" if ours > 0 else "-"


def main() -> None:
    """Run every measurement and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few runs of each")
    args = parser.parse_args()
    cycles, repeats, runs = (20, 3, 2) if args.quick else (300, 9, 9)
    ttl = 1.5 if args.quick else 3.0
    with redis_server() as (port, pid):
        print(
            f"redis-server {port} on loopback; {'quick' if args.quick else 'full'} run"
        )
        print("\nuncontended acquire + release (median; round trips per cycle)")
        table = bench_cycles(port, cycles, repeats)
        base = table[OURS]
        assert not isinstance(base, str)
        for label, figure in table.items():
            if isinstance(figure, str):
                print(f"  {label:34} {figure}")
            else:
                us, trips = figure
                print(
                    f"  {label:34} {us:9.0f} µs  {trips:4.1f} round trips  "
                    f"{_ratio(us, base[0])} the time of ours"
                )
        print("\nhand-over to a blocked waiter after a clean release (median)")
        handover = bench_handover(port, runs)
        for label, seconds in handover.items():
            ratio = _ratio(seconds, handover[OURS])
            print(f"  {label:34} {seconds * 1000:9.1f} ms  {ratio} ours")
        print(
            f"\ntake-over after the holder's SIGKILL, ttl {math.ceil(ttl)} s (median)"
        )
        takeover = bench_takeover(port, max(2, runs // 2), math.ceil(ttl))
        for label, after in takeover.items():
            ours_after = takeover[OURS]
            shown = after if isinstance(after, str) else f"{after:9.2f} s"
            if not isinstance(after, str) and not isinstance(ours_after, str):
                shown += f"  {_ratio(after, ours_after)} ours"
            print(f"  {label:34} {shown}")
        print(f"\nthe server stops answering (SIGSTOP), ttl {ttl:g} s: the holder told")
        for label, told in bench_loss(port, pid, runs, ttl).items():
            shown = (
                told if isinstance(told, str) else f"{statistics.median(told):.2f} s"
            )
            print(f"  {label:34} {shown}")


if __name__ == "__main__":
    main()
