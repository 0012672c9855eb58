"""The ``singleton-proc`` command line, and the only place errors become exit codes.

Three subcommands, on the public API only (``docs/cli.md`` tells the rest):

* ``run NAME -- CMD [ARG...]``: hold NAME while CMD runs as a child,
  forwarding SIGINT, SIGTERM and SIGHUP to it; exit with its status.
* ``status [NAME]``: who holds what, as a table or JSON; never locks.
* ``stop NAME``: stop the proven holder and its whole process tree.

Each takes ``--backend URL`` (or ``$SINGLETON_PROC_BACKEND``) to hold, show
or stop a name across hosts instead.

Every error ends in :func:`main`: an expected one (a ``SingletonProcError``,
a bad argument, an OS error that names its path) becomes an exit status by
``_EXIT_STATUS`` and one line on stderr; anything else is a bug, shown with
its traceback, exit status 70 (``EX_SOFTWARE``), never one that cron or
systemd would read as "already running".
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import traceback
from typing import TYPE_CHECKING, NoReturn

from singleton_proc import (
    AlreadyRunningError,
    BackendUnavailableError,
    LeaseLostError,
    LockTimeoutError,
    ReplaceRefusedError,
    SingleInstance,
    SingletonProcError,
    __version__,
    terminate,
)
from singleton_proc._base.holder import printable
from singleton_proc._base.waits import run_blocking
from singleton_proc._lock.backends import BACKEND_VARIABLE, opened
from singleton_proc._lock.cluster import lease_inspections
from singleton_proc._lock.cluster_view import stepping_down
from singleton_proc._lock.directory import ENV_DIRECTORY, absolute_directory
from singleton_proc._lock.inspection import Inspection, held_names, look
from singleton_proc._lock.names import validate_name

from .arguments import (
    UsageError,
    backend_url,
    exit_code,
    lease_ttl,
    library_check,
    seconds,
)
from .show import as_json, describe, table
from .supervise import (
    EXIT_SIGNAL_BASE,
    CannotExecuteError,
    CommandNotFoundError,
    Interrupted,
    Wrapper,
)

if TYPE_CHECKING:
    from collections.abc import Sequence


__all__ = ["main"]

PROG = "singleton-proc"
EXIT_NOT_RUNNING = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_BUG = 70  # EX_SOFTWARE, sysexits.h
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: the backend failed; a supervisor may retry
FENCE_VARIABLE = "SINGLETON_PROC_FENCE"  # run gives CMD the lease's fence in it
_DEFAULT_GRACE = 5.0
_DEFAULT_TTL = 15.0
_MAX_LINE = 2000


#: The exit status of every error the command line expects (first match wins).
#: Under ``run``, any AlreadyRunningError (the name is held, a wait ran out,
#: a replace was refused) becomes ``--conflict-exit-code`` instead.
_EXIT_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (ReplaceRefusedError, EXIT_REFUSED),
    (LeaseLostError, EXIT_TEMPFAIL),
    (BackendUnavailableError, EXIT_TEMPFAIL),
    (AlreadyRunningError, 1),
    (CommandNotFoundError, 127),  # as a shell says
    (CannotExecuteError, 126),
    (UsageError, EXIT_USAGE),
    (SingletonProcError, EXIT_USAGE),  # InsecureLockPathError
    (KeyboardInterrupt, EXIT_SIGNAL_BASE + 2),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (the console script).

    Args:
        argv: The arguments after the program name; ``None`` for ``sys.argv``.
    """
    args: argparse.Namespace | None = None
    log = logging.getLogger("singleton_proc")
    handler = _LineHandler(logging.WARNING)  # SIGKILL needed, survivors
    log.addHandler(handler)
    try:
        args = _parse(sys.argv[1:] if argv is None else list(argv))
        status: int = args.func(args)
        sys.stdout.flush()  # a closed pipe fails here, not at exit
    except BrokenPipeError:  # `singleton-proc status | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SIGNAL_BASE + 13  # as if SIGPIPE had killed us
    except SystemExit:
        raise  # --help and --version
    except BaseException as exc:  # noqa: BLE001 -- every error ends here, mapped or shown
        mapped = _exit_status(exc, args)
        if mapped is None:  # a bug: show it, with a status no caller expects
            traceback.print_exc()
            sys.stderr.write(f"{PROG}: an internal error (a bug): please report it\n")
            return EXIT_BUG
        if message := _message(exc, args):
            sys.stderr.write(f"{PROG}: {printable(message, _MAX_LINE)}\n")
        return mapped
    finally:
        log.removeHandler(handler)
    return status


def _exit_status(exc: BaseException, args: argparse.Namespace | None) -> int | None:
    """The exit status for ``exc``, or ``None`` when it is not ours to map."""
    if isinstance(exc, Interrupted):
        return EXIT_SIGNAL_BASE + int(exc.args[0])
    conflict = getattr(args, "conflict_exit_code", None)
    if conflict is not None and isinstance(exc, AlreadyRunningError):
        return int(conflict)
    if isinstance(exc, OSError) and exc.filename is not None:
        return EXIT_USAGE  # an unusable directory, a full or read-only filesystem
    return next((code for cls, code in _EXIT_STATUS if isinstance(exc, cls)), None)


def _message(exc: BaseException, args: argparse.Namespace | None) -> str:
    """The line that explains ``exc`` (``""``: a signal, nothing to say)."""
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        return ""
    if isinstance(exc, ReplaceRefusedError) or not isinstance(exc, AlreadyRunningError):
        return str(exc)  # a refusal says why, in the library's words
    name = getattr(args, "name", "")
    unknown = exc.reason or "its record is missing or unreadable"
    who = describe(exc.holder) if exc.holder else f"holder unknown: {unknown}"
    if isinstance(exc, LockTimeoutError):
        waited = getattr(args, "timeout", 0)
        return f"{name!r} is still running after waiting {waited:g} s ({who})"
    return f"{name!r} is already running ({who})"


class _LineHandler(logging.Handler):
    """The library's log records as ``singleton-proc:`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write one printable line (commands in records are untrusted text)."""
        sys.stderr.write(f"{PROG}: {printable(record.getMessage(), _MAX_LINE)}\n")


class _Parser(argparse.ArgumentParser):
    """argparse, raising usage errors for :func:`main` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        """Raise the error; main() prints it as one line and exits 2."""
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; for ``run``, everything after the first ``--`` is CMD.

    CMD is split off before argparse sees it, so that its own options (even
    ones spelled like ours, even another ``--``) reach it untouched.
    """
    command: list[str] = []
    if argv[:1] == ["run"] and "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args, extra = _parser().parse_known_args(argv)
    if extra:
        hint = "; put '--' before the command" if args.func is _run else ""
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if args.func is _run:
        if not command:
            raise UsageError(f"run needs a command: {_RUN_USAGE}")
        if args.timeout is not None and not args.wait:
            raise UsageError("--timeout applies only with --wait")
        if args.grace is not None and not args.replace:
            raise UsageError("--grace applies only with --replace")
        if args.ttl is not None and not (
            args.backend or os.environ.get(BACKEND_VARIABLE)
        ):
            raise UsageError("--ttl applies only with --backend")
        args.command = command
    configured = os.environ.get(ENV_DIRECTORY)
    if args.dir is None and configured:  # checked like --dir, before anything runs
        library_check(functools.partial(absolute_directory, f"${ENV_DIRECTORY}"))(
            configured
        )
    if args.backend is None and os.environ.get(BACKEND_VARIABLE):
        backend_url(os.environ[BACKEND_VARIABLE])  # as --backend, before anything runs
    return args


_RUN_USAGE = (
    f"{PROG} run [--replace [--grace S] | --wait [--timeout S]] "
    "[--conflict-exit-code N] [--dir D] [--backend URL [--ttl S]] NAME -- CMD ..."
)
#: Each subcommand's one-line help, description and exit statuses (argparse
#: reflows the text).
_TEXTS = {
    "run": (
        "run CMD while holding NAME",
        """Run CMD as a child while holding NAME, forwarding SIGINT, SIGTERM and
        SIGHUP to it. If this wrapper is killed, so is CMD (Linux). With
        --backend, CMD gets the lease's fencing token in $SINGLETON_PROC_FENCE,
        and a lost lease stops CMD's whole tree.""",
        """Exit status: CMD's, or 128+N when it died by signal N; the conflict
        code when NAME is held, a --wait --timeout runs out or --replace is
        refused; 2: bad usage; 75: the backend cannot be reached, or the lease
        was lost; 126: CMD cannot be executed; 127: not found.""",
    ),
    "status": (
        "show who holds which name",
        "Show every held instance, or NAME; never takes a lock.",
        "Exit status: 0 when NAME runs (or without NAME), 1 when not.",
    ),
    "stop": (
        "stop the holder of NAME and its process tree",
        """Stop the proven holder of NAME and its whole process tree: SIGTERM,
        then SIGKILL after --grace seconds. With --backend: ask the holder of
        the lease to step down, and revoke its lease after --grace seconds.""",
        """Exit status: 0 when stopped, 1 when nothing ran, 3 when the holder
        cannot be proven (then nothing is stopped; the line says why); 75: the
        backend cannot be reached.""",
    ),
}


def _parser() -> _Parser:
    """The parser: ``run``, ``status`` and ``stop``, each with its ``--help``."""
    parser = _Parser(prog=PROG, description="One instance per name, from the shell.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    run, status, stop = (
        commands.add_parser(name, help=h, description=d, epilog=e)
        for name, (h, d, e) in _TEXTS.items()
    )
    run.usage = _RUN_USAGE
    name = library_check(validate_name)
    run.add_argument("name", type=name, metavar="NAME", help="the instance name")
    policy = run.add_mutually_exclusive_group()
    policy.add_argument("--replace", action="store_true", help="stop the holder first")
    policy.add_argument("--wait", action="store_true", help="wait until NAME is free")
    run.add_argument("--timeout", type=seconds, metavar="S", help="wait S s at most")
    run.add_argument(
        "--grace", type=seconds, metavar="S", help="SIGTERM to SIGKILL (5 s)"
    )
    run.add_argument(
        "--conflict-exit-code",
        type=exit_code,
        default=1,
        metavar="N",
        help="status when held (1)",
    )
    run.add_argument("--ttl", type=lease_ttl, metavar="S", help="lease ttl (15 s)")
    status.add_argument("name", nargs="?", type=name, metavar="NAME", help="only one")
    status.add_argument("--json", action="store_true", help="a JSON list of objects")
    stop.add_argument("name", type=name, metavar="NAME", help="the instance name")
    stop.add_argument(
        "--grace",
        type=seconds,
        default=_DEFAULT_GRACE,
        metavar="S",
        help="SIGTERM to SIGKILL (5 s)",
    )
    directory = library_check(functools.partial(absolute_directory, "--dir"))
    for sub, func in ((run, _run), (status, _status), (stop, _stop)):
        sub.add_argument("--dir", type=directory, metavar="D", help="lock directory")
        sub.add_argument(
            "--backend",
            type=backend_url,
            metavar="URL",
            help="across hosts (redis://, redis+cluster://)",
        )
        sub.set_defaults(func=func)
    return parser


def _run(args: argparse.Namespace) -> int:
    """``run``: hold the name, run CMD, return its exit status."""
    wrapper = Wrapper(args.command)
    instance = SingleInstance(
        args.name,
        on_conflict="replace" if args.replace else "wait" if args.wait else "raise",
        timeout=args.timeout,
        grace=_DEFAULT_GRACE if args.grace is None else args.grace,
        directory=args.dir,
        handle_sigterm=False,  # SIGTERM is for CMD: we forward it
        backend=args.backend,
        ttl=_DEFAULT_TTL if args.ttl is None else args.ttl,
        on_lost=wrapper.lose,
    )
    with wrapper.forwarding(), instance:
        if instance.fence is not None:
            os.environ[FENCE_VARIABLE] = str(instance.fence)
        return wrapper.run()


def _status(args: argparse.Namespace) -> int:
    """``status``: print the held instances, or NAME; 1 when NAME is not running."""
    found: list[tuple[str, Inspection]]
    with opened(args.backend) as across:
        if across is not None:
            found = lease_inspections(across, args.name)
        elif args.name is None:
            found = held_names(args.dir)
        else:
            one = look(args.name, args.dir)
            found = [(args.name, one)] if one.held else []
    if args.json:
        _say(json.dumps([as_json(name, i) for name, i in found], indent=2))
    elif found:
        for line in table(found, hosts=across is not None):
            _say(line)
    else:
        _say(f"{args.name!r} is not running" if args.name else "nothing is running")
    return EXIT_NOT_RUNNING if args.name is not None and not found else 0


def _stop(args: argparse.Namespace) -> int:
    """``stop``: stop the holder's tree (or ask it to step down); 1: none ran."""
    with opened(args.backend) as across:
        if across is not None:
            held, stopped = run_blocking(stepping_down(across, args.name, args.grace))
            who = describe(stopped) if stopped else "holder unknown"
            done = f"the holder of {args.name!r} on {across.where} let go: {who}"
        else:
            stopped = terminate(args.name, grace=args.grace, directory=args.dir)
            held = stopped is not None
            who = describe(stopped) if stopped else ""
            done = f"stopped {args.name!r} and its process tree: {who}"
    if not held:
        _say(f"{args.name!r} is not running")
        return EXIT_NOT_RUNNING
    _say(done)
    return 0


def _say(line: str) -> None:
    """Write one line of output."""
    sys.stdout.write(f"{line}\n")
