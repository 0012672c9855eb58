"""The pool engine: workers, the chunks in flight on each, and what comes back.

A driver (``run_in_pool``, ``iter_in_pool``, ``process_pool``) puts chunks
of items and collects their outcomes; the engine runs in the driver's
thread, between those calls, and needs no thread of its own (so the next
pool may still use ``fork``). It keeps a chunk pickled and ready for each
worker, and hands it over the moment the worker is idle (never queued
behind a running chunk, where a slow task would hold it up while other
workers idle); reads answers and logging records; notices a
death at once (the process sentinel, plus a probe every 50 ms for a pipe
that a task's own child keeps open) and names the item, and the stage it
was in, from the board the worker shares with us (what a loss costs:
``_pool_deaths``); kills a task past its timeout, counted from the
board's start time, with its worker's tree; and replaces lost workers.
Every way out is bounded: ``close`` gives the workers 5 s to exit, then
stops them; ``terminate`` stops them at once, Ctrl-C held off meanwhile.
Only the process that started a pool stops its workers (``_pool_registry``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from ._chunks import STOP_MESSAGE, Chunk, Outcome, failed, pack, unpack
from ._interrupts import signals_deferred
from ._launch import choose_start_method
from ._logforward import dispatch
from ._polling import STOP_GRACE, WORKER_LINGER, WORKER_PROBE
from ._pool_deaths import Loss, settle
from ._pool_member import Member, Stage, stop_trees
from ._pool_registry import live
from ._wire import UnpicklableError, dumps_checked, name_of, rebuild
from ._worker_errors import WorkerDiedError, death_message

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from multiprocessing.connection import Connection

__all__ = ["WorkerPool"]

_log = logging.getLogger("singleton_proc")
#: Workers dying before they are ready, in a row, before we give up.
_FAILED_STARTS = 3
#: Messages read from one worker before looking at the others and the clock.
_DRAIN = 64


class WorkerPool:
    """``n`` workers running one function over the chunks a driver puts.

    Args:
        fn: The function the items are given to; ``None`` when every chunk
            brings its own (an executor's).
        n: How many workers.
        initializer: Called with ``initargs`` in each worker before any item.
        initargs: Its arguments.
        start_method: As for ``_launch.choose_start_method``.
        timeout: Seconds each task may run, or ``None``.
        keep_going: Whether a worker goes on with its chunk after an item
            raised (``return_exceptions``) rather than stopping there.
        single_use: Whether each worker runs one chunk at most (``fn()``
            once in each of ``n`` distinct workers, even if one dies first).
        threaded: Whether the pool will be run by a thread of its own, beside
            others (then ``fork`` is never the default).
    """

    def __init__(
        self,
        fn: Callable[..., Any] | None,
        n: int,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        start_method: str | None = None,
        timeout: float | None = None,
        keep_going: bool = False,
        single_use: bool = False,
        threaded: bool = False,
    ) -> None:
        """Pickle the job and start the workers."""
        self.start_method = choose_start_method(start_method, threaded=threaded)
        args = tuple(initargs)
        parts = [("the function", fn), ("the initializer", initializer)]
        parts += [(f"initializer argument {i}", arg) for i, arg in enumerate(args, 1)]
        self.job = dumps_checked((fn, initializer, args), parts, "the pool's job")
        self.what = "process_pool" if fn is None else name_of(fn)
        self.name = f"singleton_proc pool: {self.what}"
        self._start_up = f"the start-up (initializer) of a {self.what} pool worker"
        self._n = n
        self._timeout_ns = None if timeout is None else int(timeout * 1e9)
        self._timeout = timeout
        self._keep_going = keep_going
        self._single_use = single_use
        self._ids = itertools.count(1)
        self._workers: list[Member] = []
        self._pending: deque[Chunk] = deque()
        self._outcomes: list[Outcome] = []
        self._fatal: BaseException | None = None
        self._failed_starts = 0
        self._next_probe = 0.0
        #: Bytes of the last chunk put, pickled (chunk sizes depend on it).
        self.last_payload = 0
        live.add(self)
        try:
            for _ in range(n):
                self._workers.append(Member(self.start_method, self.name, self.job))
        except BaseException:
            self.terminate()
            raise

    @property
    def pids(self) -> list[int]:
        """The live workers' pids."""
        return [worker.pid for worker in self._workers]

    def wants(self) -> bool:
        """Whether another chunk should be put: fewer than one per worker wait."""
        return len(self._pending) < self._n

    def busy(self) -> bool:
        """Whether any chunk is waiting or running."""
        return bool(self._pending) or any(w.chunks for w in self._workers)

    def idle(self) -> bool:
        """Whether nothing is waiting, running, or uncollected."""
        return not self.busy() and not self._outcomes

    def put(
        self,
        first: int,
        items: list[Any],
        fn: Callable[..., Any] | None = None,
        mode: str = "one",
    ) -> None:
        """Queue ``items`` (indices ``first``...) to run, and hand them out.

        Raises:
            UnpicklableError: an item cannot be pickled (named), and the pool
                does not keep going; else that item's outcome is the error.
            Exception: as :meth:`collect`, once the pool has failed (or is a
                forked child's copy).
        """
        if self._fatal is not None:
            raise self._fatal
        try:
            chunk = self._chunk(first, items, fn, mode)
            self.last_payload = len(chunk.payload)
            self._pending.append(chunk)
        except UnpicklableError:
            if not self._keep_going:
                raise
            self._put_each(first, items, fn, mode)
        self._dispatch()

    def collect(self) -> list[Outcome]:
        """Wait until the outcome of at least one chunk is in, and return those in.

        Raises:
            Exception: the initializer raised (same type), or workers keep
                dying before running anything (``WorkerDiedError``).
        """
        while True:
            outcomes = self.step()
            if outcomes:
                return outcomes
            if not self.busy():  # a caller's bug: waiting would be for ever
                raise RuntimeError("collect() with nothing in flight")

    def step(self, also: Sequence[Connection] = ()) -> list[Outcome]:
        """Wait until something happens (or one of ``also`` is readable); deal with it.

        A thread that owns the pool and has other things to wait for (an
        executor's submissions) passes their connections as ``also``.

        Returns:
            The outcomes in so far, perhaps none.

        Raises:
            Exception: as :meth:`collect`.
        """
        if not self._outcomes and self._fatal is None:
            self._wait_for_any(self._wake_in(), also)
            for worker in self._exited():
                self._lost(worker)
            self._enforce_timeouts()
            self._dispatch()
        if self._fatal is not None:
            raise self._fatal
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    def close(self) -> None:
        """Tell the workers to exit and wait; stop those still there after 5 s."""
        for worker in self._workers:
            worker.send(STOP_MESSAGE)
        deadline = time.monotonic() + WORKER_LINGER
        while self._workers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _log.warning(
                    "pool workers %s of %s did not exit %g s after the work was "
                    "done (a non-daemon thread?); stopping them",
                    ", ".join(map(str, self.pids)),
                    self.what,
                    WORKER_LINGER,
                )
                break
            self._wait_for_any(min(remaining, WORKER_PROBE))
            for worker in self._exited():
                self._forget(worker)
        self.terminate()

    def terminate(self, grace: float = STOP_GRACE) -> None:
        """Stop every worker's tree now (SIGTERM, ``grace``, SIGKILL) and reap them.

        The trees are stopped first, then what the workers sent before is
        read (finite, once they are dead): a worker that floods its pipe
        with log records cannot hold the stop up.

        Ctrl-C and SIGTERM are held off meanwhile (and land at the end): a
        Ctrl-C pressed again and again cannot cut the stop short and leave
        workers running.
        """
        self._pending.clear()
        with signals_deferred():
            try:
                stop_trees(self._workers, grace)
            finally:
                while self._workers:
                    worker = self._workers.pop()
                    worker.exited = True
                    try:
                        self._drain(worker, limit=None)
                    except Exception:  # noqa: BLE001  (the stop goes on)
                        _log.exception("could not read pool worker %d", worker.pid)
                    worker.reap()
                live.discard(self)

    def disown(self) -> None:
        """In a forked child: forget the workers (the parent's), and refuse work."""
        self._workers.clear()
        self._pending.clear()
        self._fatal = RuntimeError(
            "this pool's workers belong to the process that started it; "
            "a forked child cannot use its copy: start a pool in the child"
        )

    # -- internals -------------------------------------------------------------

    def _chunk(
        self,
        first: int,
        items: list[Any],
        fn: Callable[..., Any] | None,
        mode: str,
        *,
        ran_before: bool = False,
    ) -> Chunk:
        """A new chunk, packed for the workers (or ``UnpicklableError``)."""
        return pack(
            Chunk(first, items, fn, mode, next(self._ids), ran_before=ran_before),
            keep_going=self._keep_going,
            timed=self._timeout is not None,
        )

    def _piece(
        self, lost: Chunk, first: int, items: list[Any], *, ran_before: bool
    ) -> Chunk:
        """Some items of a lost chunk, packed again to run elsewhere."""
        return self._chunk(first, items, lost.fn, lost.mode, ran_before=ran_before)

    def _put_each(
        self, first: int, items: list[Any], fn: Callable[..., Any] | None, mode: str
    ) -> None:
        """Queue items one by one; those that will not pickle get their error."""
        for index, item in enumerate(items, first):
            try:
                self._pending.append(self._chunk(index, [item], fn, mode))
            except UnpicklableError as exc:
                self._outcomes.append(Outcome(index, [None], {0: exc}))

    def _dispatch(self) -> None:
        """Hand waiting chunks to ready idle workers; start workers if too few."""
        while self._pending:
            worker = next((w for w in self._workers if self._takes(w)), None)
            if worker is None:
                self._grow()
                return
            chunk = self._pending.popleft()
            worker.chunks.append(chunk)
            worker.used = True
            worker.send(chunk.payload)

    def _grow(self) -> None:
        """Start workers (up to ``n``) for waiting chunks; they take them when ready."""
        # Single use: a worker that has run its chunk is idle, not available.
        available = [
            w
            for w in self._workers
            if not (self._single_use and w.used and not w.chunks)
        ]
        for _ in range(min(len(self._pending), self._n - len(available))):
            self._workers.append(Member(self.start_method, self.name, self.job))

    def _takes(self, worker: Member) -> bool:
        """Whether ``worker`` can take a chunk now."""
        if worker.chunks or worker.eof or worker.exited or not worker.ready:
            return False
        return not (self._single_use and worker.used)

    def _wait_for_any(self, timeout: float, also: Sequence[Connection] = ()) -> None:
        """Wait up to ``timeout`` for a message or an exit; read what came."""
        conns = {w.conn: w for w in self._workers if not w.eof}
        sentinels = [w.process.sentinel for w in self._workers]
        for ready in wait([*conns, *sentinels, *also], timeout):
            worker = conns.get(ready)  # type: ignore[call-overload]
            if worker is not None:
                self._drain(worker)

    def _exited(self) -> list[Member]:
        """Workers whose process has ended (probed every 50 ms, or at EOF)."""
        now = time.monotonic()
        probe = now >= self._next_probe
        if probe:
            self._next_probe = now + WORKER_PROBE
        return [
            worker
            for worker in self._workers
            if (probe or worker.eof) and not worker.process.is_alive()
        ]

    def _drain(self, worker: Member, limit: int | None = _DRAIN) -> None:
        """Handle the messages the worker has sent so far, at most ``limit``.

        The limit keeps a worker that logs without pause from holding the
        pool: timeouts and deaths are looked at between rounds.
        """
        for _ in itertools.repeat(None) if limit is None else range(limit):
            if worker.eof:
                return
            try:
                if not worker.conn.poll(0):
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.eof = True
                return
            self._handle(worker, message)

    def _handle(self, worker: Member, message: tuple[Any, ...]) -> None:
        """One message from ``worker``."""
        kind = message[0]
        if kind == "log":
            try:
                dispatch(message[1])
            except Exception:  # noqa: BLE001  (a broken handler must not stop us)
                _log.exception("could not log a record of pool worker %d", worker.pid)
            return
        if kind == "init":
            if self._fatal is None:
                self._fatal = rebuild(message[1:])
            return
        if kind == "ready":
            worker.ready = True
            self._failed_starts = 0
            self._dispatch()
            return
        chunk = worker.chunks.popleft()
        self._dispatch()  # the worker is idle: its next chunk first
        if kind == "done":
            answer = unpack(chunk, message[1:], pool_name=self.what, pid=worker.pid)
            self._outcomes.append(answer)
        elif kind == "stopped":
            offset = message[1]
            error = rebuild(message[2:])
            self._outcomes.append(Outcome(chunk.first + offset, [None], {0: error}))
        elif self._keep_going and len(chunk.items) > 1:  # "unreadable": find which
            self._put_each(chunk.first, chunk.items, chunk.fn, chunk.mode)
        else:
            error = rebuild(message[1:])
            self._outcomes.append(failed(chunk.first, len(chunk.items), error))

    def _lost(self, worker: Member) -> None:
        """A worker ended: blame the item it ran, requeue the rest, forget it."""
        worker.exited = True
        self._drain(worker, limit=None)  # what it said before it died
        stage, offset = worker.stage()
        timeout = None
        if worker.timed_out is not None:
            stage, offset, timeout = Stage.RUNNING, worker.timed_out, self._timeout
        exitcode = self._forget(worker)
        if not worker.ready:
            self._failed_start(worker, exitcode)
        if not worker.chunks:
            return  # a replacement starts when there is work
        loss = Loss(worker.pid, exitcode, stage, offset, timeout)
        outcomes, again = settle(loss, worker.chunks.popleft(), self.what, self._piece)
        self._outcomes += outcomes
        self._pending.extendleft(reversed([*again, *worker.chunks]))

    def _forget(self, worker: Member) -> int | None:
        """Reap an exited worker and drop it from the pool; its exit code."""
        self._workers.remove(worker)
        return worker.reap()

    def _failed_start(self, worker: Member, exitcode: int | None) -> None:
        """A worker died before it was ready: in a row, that is the pool's end."""
        self._failed_starts += 1
        if self._failed_starts >= _FAILED_STARTS and self._fatal is None:
            self._fatal = WorkerDiedError(
                f"{_FAILED_STARTS} pool workers in a row died before they were "
                "ready (in the initializer, or while unpickling the function); "
                f"the last: {death_message(worker.pid, self._start_up, exitcode)}",
                pid=worker.pid,
                exitcode=exitcode,
            )

    def _wake_in(self) -> float:
        """Seconds until the next timeout could expire, at most the probe interval."""
        wake = WORKER_PROBE
        if self._timeout_ns is not None:
            now = time.monotonic_ns()
            for worker in self._workers:
                running = worker.running()
                if running is not None:
                    left = (running[1] + self._timeout_ns - now) / 1e9
                    wake = min(wake, max(left, 0.0))
        return wake

    def _enforce_timeouts(self) -> None:
        """Kill (tree and all) each worker whose task ran over its timeout."""
        if self._timeout_ns is None:
            return
        now = time.monotonic_ns()
        late = []
        for worker in self._workers:
            running = worker.running()
            if running is not None and now - running[1] >= self._timeout_ns:
                worker.timed_out = running[0]
                late.append(worker)
        if late:
            stop_trees(late, 0.0)
            for worker in late:
                self._lost(worker)
