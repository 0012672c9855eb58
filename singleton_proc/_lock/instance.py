"""``SingleInstance`` and ``@single_instance``: hold a name while a program runs."""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, TypeVar, overload

from singleton_proc._base import validate
from singleton_proc._base.interrupts import signals_deferred
from singleton_proc._base.waits import run_async, run_blocking

from . import sigterm as _sigterm
from .cluster import OnLost, cluster_name
from .decorate import decorate
from .directory import absolute_directory
from .holding import Held, let_go, take
from .names import derive_name, validate_name
from .policy import ConflictPolicy, conflict_policy, tries

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from types import TracebackType

    from typing_extensions import Self

    from . import registry as _registry
    from .directory import NameFiles
    from .inspection import Inspection
    from .lockfile import OpenLock

__all__ = ["ConflictPolicy", "SingleInstance", "single_instance"]

_F = TypeVar("_F", bound="Callable[..., Any]")
_log = logging.getLogger("singleton_proc")


class SingleInstance:
    r"""Hold an instance name: at most one process per name runs the guarded code.

    The name is held by an OS file lock on ``<name>.lock`` in the lock
    directory, released by the OS the moment the process dies however it
    dies; ``<name>.pid`` records who holds it (pid, start time, command,
    user, host), for messages and introspection.

    One object serves ``with``, ``async with``, ``acquire()``/``release()``
    and, as a decorator, sync and ``async def`` functions (each call
    acquires anew).

    Args:
        name: A short identifier (no ``/``, ``\``, NUL or control
            characters, not ``.`` or ``..``, at most 128 characters).
            ``None`` derives it from the running program's script or module.
        on_conflict: What to do when another live process holds the name:
            ``"raise"`` raises :class:`AlreadyRunningError`; ``"exit"``
            prints one line naming the holder to stderr and raises
            ``SystemExit(exit_code)``; ``"wait"`` waits until it is free
            (polling every few milliseconds; ``async with`` never blocks the
            event loop); ``"replace"`` proves who the holder is, stops it and
            its whole process tree (SIGTERM, then SIGKILL after ``grace``)
            and takes the name, or raises :class:`ReplaceRefusedError`
            without stopping anything.
        timeout: With ``"wait"``, give up after this many seconds with
            :class:`LockTimeoutError` (``0``: a single try). ``None`` waits
            for ever.
        grace: With ``"replace"``, seconds between SIGTERM and SIGKILL.
        directory: The lock directory. ``None`` uses the private per-user
            one (``$SINGLETON_PROC_DIR``, else ``~/.cache/singleton_proc``);
            give a shared one (sticky if others can write to it, such as
            ``/run/lock``) for one instance per machine across users. It
            must be absolute (``~`` is expanded): a relative one would name
            another directory from another working directory.
        exit_code: The exit status for ``on_conflict="exit"``.
        handle_sigterm: While held by the main thread, turn SIGTERM (if its
            handler is still the default) into ``SystemExit(143)``, so that
            ``finally`` blocks run and the record is removed.
        backend: Hold the name across hosts too: a URL (``redis://``,
            ``rediss://``, ``unix://``, ``redis+cluster://``) or a ready
            redis-py client (needs ``singleton-proc[redis]``). ``None`` reads
            ``$SINGLETON_PROC_BACKEND``; unset, this machine only. The local
            lock is taken first, then a lease renewed every ``ttl/3``.
        ttl: Seconds the lease outlives its last renewal (at least 0.1).
        on_lost: When the lease is lost while held (not renewed in time, or
            revoked): ``"exit"`` acts as a SIGTERM would (``SystemExit(143)``
            in the main thread, whatever ``handle_sigterm`` says);
            ``"raise"`` makes :meth:`check` and the block's exit raise
            :class:`LeaseLostError`; a callable is called once, in a thread
            of the library's (not the main one), with that error.

    Raises:
        ValueError: an invalid name, ``on_conflict``, ``timeout``, ``grace``,
            ``ttl``, ``on_lost``, backend URL or a relative ``directory``.
        ImportError: ``backend=`` without redis-py installed.

    Example:
        >>> import asyncio
        >>> from singleton_proc import SingleInstance
        >>> with SingleInstance("feishu") as instance:
        ...     instance.held  # the bot's work goes here
        True
        >>> async def bot() -> None:
        ...     async with SingleInstance("feishu", on_conflict="wait", timeout=30):
        ...         await asyncio.sleep(0)  # waiting never blocks the event loop
        >>> asyncio.run(bot())
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        on_conflict: ConflictPolicy = "raise",
        timeout: float | None = None,
        grace: float = 5.0,
        directory: str | os.PathLike[str] | None = None,
        exit_code: int = 1,
        handle_sigterm: bool = True,
        backend: object = None,
        ttl: float = 15.0,
        on_lost: OnLost = "exit",
    ) -> None:
        """Validate the options; nothing is locked until entered or acquired."""
        self.name = derive_name() if name is None else validate_name(name)
        self.on_conflict = conflict_policy(on_conflict, timeout, exit_code)
        self.timeout = validate.wait_timeout(timeout)
        self.grace = validate.grace(grace)
        self.exit_code = exit_code
        self.handle_sigterm = bool(handle_sigterm)
        self._directory = (
            None if directory is None else absolute_directory("directory", directory)
        )
        self._cluster = cluster_name(backend, self.name, ttl, on_lost)
        self._reset()

    def _reset(self) -> None:
        """Unheld: as constructed, or in a forked child, or as a copy."""
        self._mutex = threading.Lock()
        self._busy = False  # between the start and the end of an acquire
        self._held: Held | None = None

    def __repr__(self) -> str:
        """Show the name, the policy, the backend and whether this object holds it."""
        where = (
            ""
            if self._cluster is None
            else f", backend={self._cluster.backend.where!r}"
        )
        return (
            f"SingleInstance({self.name!r}, on_conflict={self.on_conflict!r}{where}, "
            f"held={self.held})"
        )

    @property
    def held(self) -> bool:
        """Whether this object holds its name in this process."""
        held = self._held
        return held is not None and held.owner_pid == os.getpid()

    @property
    def fence(self) -> int | None:
        """With ``backend=``, while held: the lease's fencing token, else ``None``.

        It grows with every acquisition of the name on the backend (even
        across a server restart that lost its data): give it to storage that
        can refuse a write stamped with a lower one than it has seen.
        """
        return None if self._cluster is None or not self.held else self._cluster.fence

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease was lost; no network call.

        Call it before acting on what the name guards. Without ``backend=``,
        or while the lease is held, it returns at once.
        """
        lost = None if self._cluster is None or not self.held else self._cluster.lost()
        if lost is not None:
            raise lost

    def acquire(self) -> Self:
        """Take the name, or apply ``on_conflict`` when another process has it.

        Returns:
            This object, held.

        Raises:
            RuntimeError: this object already holds its name (or is taking it).
            AlreadyRunningError: the name is held by another process
                (``"raise"``) or by another object of this process (any policy).
            LockTimeoutError: ``"wait"`` ran out of ``timeout``.
            SystemExit: another process holds it (``"exit"``).
            InsecureLockPathError: the directory or a file in it is unsafe.
        """
        taken: list[Held] = []
        try:
            run_blocking(self._acquiring(taken))
        except BaseException:
            self._let_go_if_interrupted(taken)
            raise
        return self

    async def _acquire_async(self) -> Self:
        """:meth:`acquire` for ``async with``: waits without blocking the loop.

        A cancelled wait stops at its current ``await``; the generator is
        closed, nothing is held and nothing keeps trying in the background.
        With a backend, the steps that talk to it run in a worker thread.
        """
        taken: list[Held] = []
        off_loop = self._cluster is not None  # its steps wait on a server
        try:
            await run_async(self._acquiring(taken), off_loop=off_loop)
        except BaseException:
            self._let_go_if_interrupted(taken)
            raise
        return self

    def _let_go_if_interrupted(self, taken: list[Held]) -> None:
        """After a failed acquire: let go if it had taken the name after all.

        A Ctrl-C or SIGTERM that arrived during the last step of an acquire
        is delivered when that step ends, the name taken; the caller sees
        the interrupt, so it must not be left holding a name unawares.
        """
        if taken and self._held is taken[0]:
            self.release()

    def release(self) -> None:
        """Let go of the name; a no-op when this object does not hold it.

        The record is removed while the lock is still held, and only by the
        process that acquired it: a forked child releases nothing.
        """
        with signals_deferred(), self._mutex:  # a Ctrl-C cannot cut it in two
            held, self._held = self._held, None
            if held is None:
                return
            if held.owner_pid != os.getpid():
                held.lock.abandon()
                return
            let_go(held)

    def _abandon(self) -> None:
        """In a forked child: forget the inherited lock and lease, releasing neither.

        The descriptor itself was closed by the lock file's own fork hook;
        the lease's renewal thread is the parent's.
        """
        if self._cluster is not None:
            self._cluster.abandon()
        self._reset()

    def __enter__(self) -> Self:
        """Acquire, as :meth:`acquire`."""
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release, as :meth:`release`; with ``on_lost="raise"``, say a loss."""
        self._release_saying_loss(exc)

    async def __aenter__(self) -> Self:
        """Acquire without blocking the event loop while waiting."""
        return await self._acquire_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release, as :meth:`__exit__`; a lease's release runs in a worker thread."""
        cluster = self._cluster
        try:
            if cluster is not None and self.held:
                import asyncio  # noqa: PLC0415  (loaded by the caller's event loop)

                await asyncio.to_thread(cluster.release)
        finally:
            self._release_saying_loss(exc)

    def _release_saying_loss(self, exc: BaseException | None) -> None:
        """Release; a lease lost meanwhile raises (``on_lost="raise"``).

        If the block is raising already, its exception wins and the loss is
        logged.
        """
        cluster = self._cluster
        lost = None if cluster is None or not self.held else cluster.lost()
        self.release()
        if lost is None or cluster is None or cluster.on_lost != "raise":
            return
        if exc is None:
            raise lost
        _log.warning("%s (while the block raised %r)", lost, exc)

    def __call__(self, func: _F) -> _F:
        """Decorate ``func`` so that every call holds the name while it runs.

        Each call acquires a fresh copy of this object. A call made while
        another call of the same process holds the name (another thread, or
        recursion) raises :class:`AlreadyRunningError` at once, whatever the
        policy: waiting would wait on this very process. ``async def``
        functions hold the name for the whole coroutine; generator functions
        are refused (the name would be released before their body runs).
        """
        return decorate(self._copy, func)

    def _copy(self) -> SingleInstance:
        """A new, unheld object with the same settings (and backend client)."""
        twin = copy.copy(self)
        twin._reset()  # noqa: SLF001  (its own class)
        if self._cluster is not None:
            twin._cluster = self._cluster.copy()  # noqa: SLF001
        return twin

    def _acquiring(self, taken: list[Held]) -> Generator[float, None, None]:
        """The acquire algorithm, shared by the sync and async drivers.

        Yields how long to sleep before the next try; returns once held, with
        what it holds appended to ``taken``. The drivers run each step with
        Ctrl-C and SIGTERM held off (:func:`~singleton_proc._base.interrupts.shielded`):
        an interrupt lands at a ``yield``, never between taking the lock and
        owning it.

        With ``handle_sigterm``, SIGTERM becomes ``SystemExit`` from the
        start of the acquire, not only once held: a SIGTERM during a wait or
        a replace unwinds it (resuming whatever a replace had suspended)
        instead of killing the process on the spot.
        """
        with self._mutex:
            if self.held or self._busy:
                raise RuntimeError(
                    f"{self!r} is already held or being acquired; "
                    "release() it before acquiring again"
                )
            self._busy = True
        sigterm_held = False
        cluster = self._cluster
        exits_on_loss = cluster is not None and cluster.on_lost == "exit"
        try:
            sigterm_held = (self.handle_sigterm or exits_on_loss) and _sigterm.hold()
            if cluster is not None:
                cluster.new_token()
                yield 0.0  # that was the main thread's part: run_async's first step
            take_it = functools.partial(self._take, sigterm_held=sigterm_held)
            yield from tries(self, self._directory, take_it, cluster)
            sigterm_held = False  # the instance holds it now, and lets go of it
            assert self._held is not None  # noqa: S101  (_tries returns once held)
            taken.append(self._held)
        finally:
            self._busy = False
            if sigterm_held:
                _sigterm.let_go()

    def _take(
        self,
        files: NameFiles,
        key: _registry.NameKey,
        lock: OpenLock,
        *,
        sigterm_held: bool,
    ) -> Inspection | None:
        """Having locked the file: take the rest (see :func:`.holding.take`)."""
        held = Held(lock, files, key, os.getpid(), sigterm_held=sigterm_held)
        return take(self, self.name, held, self._cluster, self._publish)

    def _publish(self, held: Held | None) -> None:
        with self._mutex:
            self._held = held


@overload
def single_instance(func: _F, /) -> _F: ...
@overload
def single_instance(name: str | None = None, /, **options: Any) -> SingleInstance: ...
def single_instance(
    name_or_func: str | Callable[..., Any] | None = None, /, **options: Any
) -> Any:
    """Decorate a function so that one process at a time runs it.

    ``@single_instance`` alone derives the name from the running program;
    ``@single_instance("name", on_conflict=...)`` takes the same options as
    :class:`SingleInstance` (and returns one, usable with ``with`` too).
    Every call acquires anew; ``async def`` functions are held for the whole
    coroutine and wait without blocking the event loop.

    Example:
        >>> from singleton_proc import single_instance
        >>> @single_instance("nightly-report", on_conflict="exit")
        ... def main() -> None: ...
    """
    if callable(name_or_func):
        return SingleInstance(**options)(name_or_func)
    return SingleInstance(name_or_func, **options)
