"""A child program for the cluster tests: hold a name on a backend until told.

Usage: python child_lease.py NAME DIRECTORY URL [--ttl T] [--policy P]
       [--on-lost exit|raise|print] [--grace G] [--rounds N]
       [--client url|cluster|sentinel]

Prints ``ready <fence> <time.monotonic()>`` once it holds the name, then
holds it until its standard input closes, releases, prints
``released <time.monotonic()>`` and exits 0. ``--on-lost print`` prints
``lost <time.monotonic()> <message>`` when told, and keeps running; ``raise``
prints ``raised LeaseLostError`` when the block's exit raises it, and exits
4; ``exit`` (the default) leaves as a SIGTERM would. A ``finally`` block
prints ``finally`` on the way out. On a conflict with ``--policy raise`` it
prints ``conflict <holder pid>`` and exits 3.

``--client``: ``url`` (the default) passes URL as ``backend=``; ``cluster``
passes a ready ``RedisCluster`` made from it; ``sentinel`` reads it as
``host:port,host:port,...`` of sentinels and passes
``Sentinel(...).master_for("lease-primary")``.

``--rounds N``: acquire N times in a row (``wait``), each time checking that
nobody else is inside (a Redis counter must read 1), and print
``round <fence>`` each time; no stdin needed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from singleton_proc import AlreadyRunningError, LeaseLostError, SingleInstance


def _print(*words: object) -> None:
    print(*words, flush=True)


def main() -> int:
    """Hold the name as told."""
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("directory")
    parser.add_argument("url")
    parser.add_argument("--ttl", type=float, default=15.0)
    parser.add_argument("--policy", default="raise")
    parser.add_argument("--on-lost", default="exit")
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--client", default="url")
    args = parser.parse_args()
    on_lost = (
        (lambda error: _print("lost", time.monotonic(), error))
        if args.on_lost == "print"
        else args.on_lost
    )
    instance = SingleInstance(
        args.name,
        directory=args.directory,
        backend=args.url if args.client == "url" else _client(args.client, args.url),
        ttl=args.ttl,
        on_lost=on_lost,
        on_conflict=args.policy,
        grace=args.grace,
    )
    if args.rounds:
        return _rounds(instance, _client(args.client, args.url), args.rounds)
    try:
        with instance:
            _print("ready", instance.fence, time.monotonic())
            sys.stdin.read()
        _print("released", time.monotonic())
    except AlreadyRunningError as exc:
        _print("conflict", exc.holder and exc.holder.pid)
        return 3
    except LeaseLostError:
        _print("raised LeaseLostError")
        return 4
    finally:
        _print("finally")
    return 0


def _client(kind: str, url: str) -> Any:
    """A client of the test's servers (see ``--client``)."""
    if kind == "sentinel":
        sentinels = [(a.split(":")[0], int(a.split(":")[1])) for a in url.split(",")]
        return Sentinel(sentinels, socket_timeout=10).master_for("lease-primary")
    if kind == "cluster" or url.startswith("redis+cluster://"):
        return RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
    return redis.Redis.from_url(url)


def _rounds(instance: SingleInstance, inside: Any, rounds: int) -> int:
    """Take the name ``rounds`` times; fail if anyone else is inside meanwhile."""
    for _ in range(rounds):
        with instance:
            count = inside.incr("test:inside")
            time.sleep(0.005)  # the work; another holder would show meanwhile
            after = inside.decr("test:inside")
            if count != 1 or after != 0:
                _print("overlap", count, after)
                return 5
            _print("round", instance.fence)
    return 0


if __name__ == "__main__":
    sys.exit(main())
