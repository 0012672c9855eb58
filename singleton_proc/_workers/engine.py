"""The pool engine: workers, the chunks in flight on each, and what comes back.

What flows between the driver's thread, where the engine runs, and a
worker (``child_loop.serve``), each worker seen through a ``Member``::

    driver                   engine (WorkerPool)             worker
    put(items) ──► Packer ──► pending ── chunk payload ──►  runs each item,
                                                           writing its board
    collect() ◄── Outcome ◄── DONE / STOPPED / UNREADABLE ◄─ (shared memory:
                              READY, INIT (start-up)          chunk, item,
                              LOG ──► the parent's loggers    start time)
                              sentinel, 50 ms probe ──► deaths.settle (a loss)
                              board + clock ──► a timeout: its tree killed

No thread of its own (so the next pool may still use ``fork``): the engine
works inside ``put`` and ``collect``. A chunk waits pickled for the next
idle worker, never queued behind a running one. A death is noticed at
once and the board names the item and stage; lost workers are replaced.
``close`` gives the workers 5 s to exit, then stops their trees;
``terminate`` stops them at once, Ctrl-C held off meanwhile. Only the
process that started a pool stops its workers (``pool_registry``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from singleton_proc._base.interrupts import signals_deferred
from singleton_proc._base.waits import STOP_GRACE, WORKER_LINGER, WORKER_PROBE
from singleton_proc._errors import UnpicklableError

from .chunks import STOP_MESSAGE, Chunk, Outcome, Packer, failed, unpack
from .deaths import Loss, settle, start_failure
from .launch import choose_start_method
from .link import linger_warning, stop_trees, wait_for_any
from .pool_registry import live
from .protocol import Kind, dumps_job, name_of, rebuild
from .worker_view import Member, Stage

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Sequence
    from multiprocessing.connection import Connection

    from .chunks import Work

__all__ = ["WorkerPool"]

_log = logging.getLogger("singleton_proc")
#: Messages read from one worker before looking at the others and the clock.
_DRAIN = 64
#: The kinds of message that answer a chunk.
_ANSWERS = frozenset({Kind.DONE, Kind.STOPPED, Kind.UNREADABLE})


class WorkerPool:
    """``n`` workers running one function over the chunks a driver puts.

    Args:
        fn: The function the items are given to; ``None`` when every chunk
            brings its own (an executor's).
        n: How many workers.
        initializer: Called with ``initargs`` in each worker before any item.
        initargs: Its arguments.
        start_method: As for ``launch.choose_start_method``.
        timeout: Seconds each task may run, or ``None`` (a ``Work`` may say).
        max_tasks: How many items a worker runs before it is replaced
            (``max_tasks_per_child``; 1: ``fn()`` once in each of ``n``
            distinct workers); ``None``: no limit.
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
        max_tasks: int | None = None,
        threaded: bool = False,
    ) -> None:
        """Pickle the job and start the workers."""
        self.start_method = choose_start_method(start_method, threaded=threaded)
        job, inherited = dumps_job(fn, initializer, tuple(initargs), self.start_method)
        self.what = "process_pool" if fn is None else name_of(fn)
        self.name = f"singleton_proc pool: {self.what}"
        self._new_member = functools.partial(
            Member, self.start_method, self.name, job, inherited
        )
        self._start_up = f"the start-up (initializer) of a {self.what} pool worker"
        self._n = n
        self._timeout = timeout
        self.max_tasks = max_tasks
        self._packer = Packer(timed=timeout is not None)
        self._workers: list[Member] = []
        self._pending: deque[Chunk] = deque()
        self._outcomes: list[Outcome] = []
        self._fatal: BaseException | None = None
        self._failed_starts = 0
        self._next_probe = 0.0
        #: Bytes of the last chunk's items, pickled (chunk sizes depend on it).
        self.last_payload = 0
        live.add(self)
        try:
            for _ in range(n):
                self._workers.append(self._new_member())
        except BaseException:
            self.terminate()
            raise

    def wants(self) -> bool:
        """Whether another chunk should be put: fewer than one per worker wait."""
        return len(self._pending) < self._n

    def busy(self) -> bool:
        """Whether any chunk is waiting or running."""
        return bool(self._pending) or any(w.chunks for w in self._workers)

    def idle(self) -> bool:
        """Whether nothing is waiting, running, or uncollected."""
        return not self.busy() and not self._outcomes

    def put(self, first: int, items: Sequence[Any], work: Work) -> None:
        """Queue ``items`` (indices ``first``...) to run as ``work``, and hand them out.

        Raises:
            UnpicklableError: an item cannot be pickled (named), and the work
                does not keep going; else that item's outcome is the error.
            Exception: as :meth:`collect`, once the pool has failed (or is a
                forked child's copy).
        """
        if self._fatal is not None:
            raise self._fatal
        try:
            chunk = self._packer.chunk(first, items, work)
            self.last_payload = chunk.items_bytes
            self._pending.append(chunk)
        except UnpicklableError:
            if not work.keep_going:
                raise
            self._put_each(first, items, work)
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
        Returns the outcomes in so far, perhaps none; raises as :meth:`collect`.
        """
        if not self._outcomes and self._fatal is None:
            self._wait_for_any(self._wake_in(), also)
            for worker in self._exited():
                self._lost(worker)
            self._stop_overdue()
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
                linger_warning(self._workers, f"the work of {self.what}")
                break
            self._wait_for_any(min(remaining, WORKER_PROBE))
            for worker in self._exited():
                self._forget(worker)
        self.terminate()

    def terminate(self, grace: float = STOP_GRACE) -> None:
        """Stop every worker's tree now (SIGTERM, ``grace``, SIGKILL) and reap them.

        The trees are stopped first, then what the workers sent before is
        read (finite, once they are dead): a worker that floods its pipe
        with log records cannot hold the stop up. Ctrl-C and SIGTERM are held
        off meanwhile (and land at the end): a Ctrl-C pressed again and again
        cannot cut the stop short and leave workers running.
        """
        self._pending.clear()
        try:
            self._stop_now(list(self._workers), grace)
        finally:
            live.discard(self)

    def cancel(
        self, spans: Collection[tuple[int, int]], *, running: bool = True
    ) -> set[tuple[int, int]]:
        """Drop the chunks of the items in ``spans`` (``(first, end)`` each), at once.

        Their call was left. Those waiting are dropped. The workers running
        one are stopped as :meth:`terminate` does (and replaced as work needs
        them), or with ``running=False`` go on: the spans of their chunks
        are returned, and their outcomes will come.
        """

        def dropped(first: int) -> bool:
            return any(start <= first < end for start, end in spans)

        busy = [w for w in self._workers if w.chunks and dropped(w.chunks[0].first)]
        self._pending = deque(c for c in self._pending if not dropped(c.first))
        if not running:
            return {(w.chunks[0].first, w.chunks[0].end) for w in busy}
        self._stop_now(busy)  # what they said may queue pieces of theirs again
        self._pending = deque(c for c in self._pending if not dropped(c.first))
        self._outcomes = [o for o in self._outcomes if not dropped(o.first)]
        self._dispatch()
        return set()

    def disown(self) -> None:
        """In a forked child: forget the workers (the parent's), and refuse work."""
        self._workers.clear()
        self._pending.clear()
        self._fatal = RuntimeError(
            "this pool's workers belong to the process that started it; "
            "a forked child cannot use its copy: start a pool in the child"
        )

    # -- internals -------------------------------------------------------------

    def _put_each(self, first: int, items: Sequence[Any], work: Work) -> None:
        """Queue items one by one; those that will not pickle get their error."""
        for index, item in enumerate(items, first):
            try:
                self._pending.append(self._packer.chunk(index, [item], work))
            except UnpicklableError as exc:
                self._outcomes.append(Outcome(index, [None], {0: exc}))

    def _dispatch(self) -> None:
        """Hand waiting chunks to ready idle workers; replace spent ones; start more."""
        while self._pending:
            size = len(self._pending[0].items)
            taker = (w for w in self._workers if w.takes(size, self.max_tasks))
            worker = next(taker, None)
            if worker is None:
                for spent in self._workers:
                    spent.retire_if_short(size, self.max_tasks)
                self._grow()
                return
            chunk = self._pending.popleft()
            worker.chunks.append(chunk)
            worker.tasks += size
            worker.send(chunk.payload)

    def _grow(self) -> None:
        """Start workers (up to ``n``) for waiting chunks; they take them when ready.

        A retired worker counts until it has exited: never more than ``n``.
        """
        for _ in range(min(len(self._pending), self._n - len(self._workers))):
            self._workers.append(self._new_member())

    def _stop_now(self, workers: list[Member], grace: float = STOP_GRACE) -> None:
        """Stop the trees of ``workers``, read what they sent, and reap them."""
        with signals_deferred():
            try:
                stop_trees(workers, grace)
            finally:
                for worker in workers:
                    worker.exited = True
                    try:
                        self._drain(worker, limit=None)
                    except Exception:  # noqa: BLE001  (the stop goes on)
                        _log.exception("could not read pool worker %d", worker.pid)
                    self._forget(worker)

    def _wait_for_any(self, timeout: float, also: Sequence[Connection] = ()) -> None:
        """Wait up to ``timeout`` for a message or an exit; read what came."""
        for worker in wait_for_any(self._workers, timeout, also):
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
            if (probe or worker.eof) and worker.has_exited()
        ]

    def _drain(self, worker: Member, limit: int | None = _DRAIN) -> None:
        """Handle the messages the worker has sent so far, at most ``limit``.

        The limit keeps a worker that logs without pause from holding the
        pool: timeouts and deaths are looked at between rounds.
        """
        for _ in itertools.repeat(None) if limit is None else range(limit):
            received = worker.receive(block=False)
            if received is None:
                return
            self._handle(worker, *received)

    def _handle(self, worker: Member, kind: Kind, message: tuple[Any, ...]) -> None:
        """One message from ``worker`` (a logging record is delivered already)."""
        if kind is Kind.LOG:
            return
        if kind is Kind.INIT:
            if self._fatal is None:
                self._fatal = rebuild(message[1:])
            return
        if kind is Kind.READY:
            worker.ready = True
            self._failed_starts = 0
            self._dispatch()
            return
        if kind not in _ANSWERS:
            raise RuntimeError(f"a pool worker sent a {kind} message: a bug")
        chunk = worker.chunks.popleft()
        worker.retire_if_short(1, self.max_tasks)
        self._dispatch()  # the worker is idle: its next chunk first
        if kind is Kind.DONE:
            answer = unpack(chunk, message[1:], pool_name=self.what, pid=worker.pid)
            self._outcomes.append(answer)
        elif kind is Kind.STOPPED:
            offset = message[1]
            error = rebuild(message[2:])
            self._outcomes.append(Outcome(chunk.first + offset, [None], {0: error}))
        elif chunk.work.keep_going and len(chunk.items) > 1:  # UNREADABLE: which?
            self._put_each(chunk.first, chunk.items, chunk.work)
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
            stage, (offset, timeout) = Stage.RUNNING, worker.timed_out
        exitcode = self._forget(worker)
        if not worker.ready:
            self._failed_starts += 1
            if self._fatal is None:
                self._fatal = start_failure(
                    self._failed_starts, worker.pid, self._start_up, exitcode
                )
        if not worker.chunks:
            return  # a replacement starts when there is work
        loss = Loss(worker.pid, exitcode, stage, offset, timeout)
        outcomes, again = settle(
            loss, worker.chunks.popleft(), self.what, self._packer.piece
        )
        self._outcomes += outcomes
        self._pending.extendleft(reversed([*again, *worker.chunks]))

    def _forget(self, worker: Member) -> int | None:
        """Reap an exited worker and drop it from the pool; its exit code."""
        self._workers.remove(worker)
        return worker.reap()

    def _wake_in(self) -> float:
        """Seconds until the next timeout could expire, at most the probe interval."""
        now = time.monotonic_ns()
        left = (w.seconds_left(self._timeout, now) for w in self._workers)
        return min([WORKER_PROBE, *(max(x, 0.0) for x in left if x is not None)])

    def _stop_overdue(self) -> None:
        """Kill each worker overdue: past its task timeout, or retired and lingering."""
        now = time.monotonic_ns()
        late = [w for w in self._workers if w.overran(self._timeout, now)]
        lingering = [w for w in self._workers if w.lingering(now)]
        if lingering:
            linger_warning(lingering, "its last task (max_tasks_per_child)")
        if late or lingering:
            stop_trees([*late, *lingering], 0.0)
            for worker in late:
                self._lost(worker)
