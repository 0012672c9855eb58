"""``SingleInstance`` and ``@single_instance``: hold a name while a program runs."""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, overload

from singleton_proc._base import lineage, validate
from singleton_proc._base.interrupts import shielded, signals_deferred
from singleton_proc._base.waits import run_blocking

from . import registry as _registry
from . import sigterm as _sigterm
from .decorate import decorate
from .directory import absolute_directory
from .identity import current_identity
from .inspection import Inspection, detached_holder
from .names import derive_name, validate_name
from .policy import tries
from .record import encode_own_record, load_record, remove_record, write_record

if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from types import TracebackType

    from typing_extensions import Self

    from .directory import NameFiles
    from .lockfile import OpenLock

__all__ = ["ConflictPolicy", "SingleInstance", "single_instance"]

ConflictPolicy = Literal["raise", "exit", "wait", "replace"]
_POLICIES: tuple[str, ...] = get_args(ConflictPolicy)
_F = TypeVar("_F", bound="Callable[..., Any]")


@dataclass
class _Held:
    """What an instance holds: the lock, where, which process took it."""

    lock: OpenLock
    files: NameFiles
    key: _registry.NameKey
    owner_pid: int
    record_written: bool = False
    sigterm_held: bool = False


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

    Raises:
        ValueError: an invalid name, ``on_conflict``, ``timeout``, ``grace``
            or a relative ``directory``.

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
    ) -> None:
        """Validate the options; nothing is locked until entered or acquired."""
        self.name = derive_name() if name is None else validate_name(name)
        if on_conflict not in _POLICIES:
            allowed = ", ".join(repr(policy) for policy in _POLICIES)
            raise ValueError(
                f"on_conflict must be one of {allowed}, not {on_conflict!r}"
            )
        if timeout is not None and on_conflict != "wait":
            raise ValueError('timeout only applies to on_conflict="wait"')
        if type(exit_code) is not int:
            raise TypeError(f"exit_code must be an int, not {type(exit_code).__name__}")
        self.on_conflict: ConflictPolicy = on_conflict
        self.timeout = validate.wait_timeout(timeout)
        self.grace = validate.grace(grace)
        self.exit_code = exit_code
        self.handle_sigterm = bool(handle_sigterm)
        self._directory = (
            None if directory is None else absolute_directory("directory", directory)
        )
        self._mutex = threading.Lock()
        self._busy = False  # between the start and the end of an acquire
        self._held: _Held | None = None

    def __repr__(self) -> str:
        """Show the name, the policy and whether this object holds it."""
        return (
            f"SingleInstance({self.name!r}, on_conflict={self.on_conflict!r}, "
            f"held={self.held})"
        )

    @property
    def held(self) -> bool:
        """Whether this object holds its name in this process."""
        held = self._held
        return held is not None and held.owner_pid == os.getpid()

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
        taken: list[_Held] = []
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
        """
        import asyncio  # noqa: PLC0415  (loaded by the caller's event loop already)

        taken: list[_Held] = []
        steps = shielded(self._acquiring(taken))
        try:
            for delay in steps:
                await asyncio.sleep(delay)
        except BaseException:
            self._let_go_if_interrupted(taken)
            raise
        finally:
            steps.close()
        return self

    def _let_go_if_interrupted(self, taken: list[_Held]) -> None:
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
            _registry.discard(held.key, held.lock.key)
            try:
                if held.record_written:
                    remove_record(held.files)
            finally:
                held.lock.release()
                if held.sigterm_held:
                    _sigterm.let_go()

    def _abandon(self) -> None:
        """In a forked child: forget the inherited lock without releasing it.

        The descriptor itself was closed by the lock file's own fork hook.
        """
        self._mutex = threading.Lock()
        self._busy = False
        self._held = None

    def __enter__(self) -> Self:
        """Acquire, as :meth:`acquire`."""
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release, as :meth:`release`."""
        self.release()

    async def __aenter__(self) -> Self:
        """Acquire without blocking the event loop while waiting."""
        return await self._acquire_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release, as :meth:`release` (quick file operations, no waiting)."""
        self.release()

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
        """A new, unheld object with the same settings."""
        return SingleInstance(
            self.name,
            on_conflict=self.on_conflict,
            timeout=self.timeout,
            grace=self.grace,
            directory=self._directory,
            exit_code=self.exit_code,
            handle_sigterm=self.handle_sigterm,
        )

    def _acquiring(self, taken: list[_Held]) -> Generator[float, None, None]:
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
        try:
            sigterm_held = self.handle_sigterm and _sigterm.hold()
            take = functools.partial(self._take, sigterm_held=sigterm_held)
            yield from tries(self, self._directory, take)
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
        """Having locked the file: check for a detached holder, write the record.

        The instance counts as held (registered for exit) before the record
        is written, and anything that interrupts this removes the record
        before the lock is released, so no record outlives its lock.

        Returns:
            ``None`` once held; or, with the lock released again, the
            inspection of a live holder whose lock file was deleted under
            it, for the conflict policy to deal with.
        """
        held = _Held(lock, files, key, os.getpid(), sigterm_held=sigterm_held)
        try:
            detached = detached_holder(files, load_record(files))
            if detached is not None:
                lock.release()
                return Inspection(
                    held=True, holder=detached, lock_pids=None, detached=True
                )
            with self._mutex:
                self._held = held
            _registry.add(key, lock.key, self)
            me = current_identity()
            lineage.carry(me.mark)  # a stop of ours finds the daemons we start
            held.record_written = write_record(files, encode_own_record(me, self.name))
        except BaseException:
            with self._mutex:
                self._held = None
            _registry.discard(key, lock.key)
            if held.record_written:
                remove_record(files)
            lock.release()
            raise
        return None


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
