"""The ``singleton-proc`` command line, and the only place errors become exit codes.

Three subcommands, on the public API only (``docs/cli.md`` tells the rest):

* ``run NAME -- CMD [ARG...]``: hold NAME while CMD runs as a child,
  forwarding SIGINT, SIGTERM and SIGHUP to it; exit with its status.
* ``status [NAME]``: who holds what, as a table or JSON; never locks.
* ``stop NAME``: stop the proven holder and its whole process tree.

Every error ends in :func:`main`, which maps its class to an exit status
with ``_EXIT_STATUS`` and says what happened in one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NoReturn

from . import (
    AlreadyRunningError,
    LockTimeoutError,
    ReplaceRefusedError,
    SingleInstance,
    __version__,
    terminate,
)
from ._holder import printable
from ._introspect import Inspection, held_names, look
from ._wrap import (
    EXIT_SIGNAL_BASE,
    CannotExecuteError,
    CommandNotFoundError,
    Interrupted,
    Wrapper,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from . import Holder

__all__ = ["human_age", "main"]

PROG = "singleton-proc"
EXIT_NOT_RUNNING = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
_DEFAULT_GRACE = 5.0
_MAX_LINE = 2000
_UNKNOWN = (
    "holder unknown: no readable record; another tool, such as flock(1), "
    "may hold the lock"
)
#: ``status --json``: one object per instance, with these keys in this order.
_JSON_KEYS = (
    "name", "pid", "started_at", "age_seconds", "command", "user", "host", "create_time"
)  # fmt: skip


class _UsageError(Exception):
    """A bad command line."""


#: The exit status of every error the command line expects (first match wins).
#: Under ``run``, any AlreadyRunningError (the name is held, a wait ran out,
#: a replace was refused) becomes ``--conflict-exit-code`` instead.
_EXIT_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (ReplaceRefusedError, EXIT_REFUSED),
    (AlreadyRunningError, 1),
    (CommandNotFoundError, 127),  # as a shell says
    (CannotExecuteError, 126),
    (_UsageError, EXIT_USAGE),
    (ValueError, EXIT_USAGE),  # a bad name, $SINGLETON_PROC_DIR not absolute
    (TypeError, EXIT_USAGE),
    (OSError, EXIT_USAGE),  # InsecureLockPathError, an unusable --dir
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
    except BaseException as exc:
        mapped = _exit_status(exc, args)
        if mapped is None:
            raise  # SystemExit from --help and --version, or a bug: show it
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
    return next((code for cls, code in _EXIT_STATUS if isinstance(exc, cls)), None)


def _message(exc: BaseException, args: argparse.Namespace | None) -> str:
    """The line that explains ``exc`` (``""``: a signal, nothing to say)."""
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        return ""
    if isinstance(exc, ReplaceRefusedError) or not isinstance(exc, AlreadyRunningError):
        return str(exc)  # a refusal says why, in the library's words
    name = getattr(args, "name", "")
    who = _describe(exc.holder) if exc.holder else _UNKNOWN
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
        raise _UsageError(f"{message} (see '{self.prog} --help')")


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
        raise _UsageError(f"unrecognized arguments: {' '.join(extra)}{hint}")
    if args.func is _run:
        if not command:
            raise _UsageError(f"run needs a command: {_RUN_USAGE}")
        if args.timeout is not None and not args.wait:
            raise _UsageError("--timeout applies only with --wait")
        if args.grace is not None and not args.replace:
            raise _UsageError("--grace applies only with --replace")
        args.command = command
    return args


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, at least 0."""
    with contextlib.suppress(ValueError):
        if 0 <= (value := float(text)) < math.inf:
            return value
    raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")


def _exit_code(text: str) -> int:
    """An argparse type: an exit status, 0 to 255."""
    if text.isdigit() and int(text) <= 255:  # noqa: PLR2004
        return int(text)
    raise argparse.ArgumentTypeError(f"not an exit status from 0 to 255: {text!r}")


_RUN_USAGE = (
    f"{PROG} run [--replace [--grace S] | --wait [--timeout S]] "
    "[--conflict-exit-code N] [--dir D] NAME -- CMD [ARG ...]"
)
#: Each subcommand's one-line help, description and exit statuses (argparse
#: reflows the text).
_TEXTS = {
    "run": (
        "run CMD while holding NAME",
        """Run CMD as a child while holding NAME, forwarding SIGINT, SIGTERM and
        SIGHUP to it. If this wrapper is killed, so is CMD (Linux).""",
        """Exit status: CMD's, or 128+N when it died by signal N; the conflict
        code when NAME is held, a --wait --timeout runs out or --replace is
        refused; 2: bad usage; 126: CMD cannot be executed; 127: not found.""",
    ),
    "status": (
        "show who holds which name",
        "Show every held instance, or NAME; never takes a lock.",
        "Exit status: 0 when NAME runs (or without NAME), 1 when not.",
    ),
    "stop": (
        "stop the holder of NAME and its process tree",
        """Stop the proven holder of NAME and its whole process tree: SIGTERM,
        then SIGKILL after --grace seconds.""",
        """Exit status: 0 when stopped, 1 when nothing ran, 3 when the holder
        cannot be proven (then nothing is stopped; the line says why).""",
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
    run.add_argument("name", metavar="NAME", help="the instance name")
    policy = run.add_mutually_exclusive_group()
    policy.add_argument("--replace", action="store_true", help="stop the holder first")
    policy.add_argument("--wait", action="store_true", help="wait until NAME is free")
    run.add_argument("--timeout", type=_seconds, metavar="S", help="wait S s at most")
    run.add_argument(
        "--grace", type=_seconds, metavar="S", help="SIGTERM to SIGKILL (5 s)"
    )
    run.add_argument(
        "--conflict-exit-code",
        type=_exit_code,
        default=1,
        metavar="N",
        help="status when held (1)",
    )
    status.add_argument("name", nargs="?", metavar="NAME", help="only this one")
    status.add_argument("--json", action="store_true", help="a JSON list of objects")
    stop.add_argument("name", metavar="NAME", help="the instance name")
    stop.add_argument(
        "--grace",
        type=_seconds,
        default=_DEFAULT_GRACE,
        metavar="S",
        help="SIGTERM to SIGKILL (5 s)",
    )
    for sub, func in ((run, _run), (status, _status), (stop, _stop)):
        sub.add_argument("--dir", metavar="D", help="lock directory")
        sub.set_defaults(func=func)
    return parser


def _run(args: argparse.Namespace) -> int:
    """``run``: hold the name, run CMD, return its exit status."""
    instance = SingleInstance(
        args.name,
        on_conflict="replace" if args.replace else "wait" if args.wait else "raise",
        timeout=args.timeout,
        grace=_DEFAULT_GRACE if args.grace is None else args.grace,
        directory=args.dir,
        handle_sigterm=False,  # SIGTERM is for CMD: we forward it
    )
    wrapper = Wrapper(args.command)
    with wrapper.forwarding(), instance:
        return wrapper.run()


def _status(args: argparse.Namespace) -> int:
    """``status``: print the held instances, or NAME; 1 when NAME is not running."""
    found: list[tuple[str, Inspection]]
    if args.name is None:
        found = held_names(args.dir)
    else:
        one = look(args.name, args.dir)
        found = [(args.name, one)] if one.held else []
    if args.json:
        _say(json.dumps([_as_json(name, i.holder) for name, i in found], indent=2))
    elif found:
        _say_table(found)
    else:
        _say(f"{args.name!r} is not running" if args.name else "nothing is running")
    return EXIT_NOT_RUNNING if args.name is not None and not found else 0


def _stop(args: argparse.Namespace) -> int:
    """``stop``: stop the holder's tree; 1 when nothing was running."""
    stopped = terminate(args.name, grace=args.grace, directory=args.dir)
    if stopped is None:
        _say(f"{args.name!r} is not running")
        return EXIT_NOT_RUNNING
    _say(f"stopped {args.name!r} and its process tree: {_describe(stopped)}")
    return 0


def human_age(seconds: float) -> str:
    """``45s``, ``3m 12s``, ``2h 05m``, ``4d 3h``: the two largest units."""
    minutes, secs = divmod(int(seconds), 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if days:
        return f"{days}d {hrs}h"
    if hours:
        return f"{hours}h {mins:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _age(found: Holder) -> float:
    """Seconds since ``found`` took the name (never negative)."""
    return max(0.0, (datetime.now(timezone.utc) - found.started_at).total_seconds())


def _describe(found: Holder) -> str:
    """``pid 4242, up 3m 12s, command: python bot.py``."""
    return f"pid {found.pid}, up {human_age(_age(found))}, command: {found.command}"


def _as_json(name: str, found: Holder | None) -> dict[str, object]:
    """One object of ``status --json``; the holder's fields are null if unknown."""
    if found is None:
        return {**dict.fromkeys(_JSON_KEYS), "name": name}
    values = (
        name,
        found.pid,
        found.started_at.isoformat(),
        round(_age(found), 3),
        list(found.cmdline),
        found.user,
        found.host,
        found.create_time,
    )
    return dict(zip(_JSON_KEYS, values, strict=True))


def _say_table(found: list[tuple[str, Inspection]]) -> None:
    """An aligned table: NAME, PID, AGE, COMMAND (an unknown holder says why)."""
    rows = [("NAME", "PID", "AGE", "COMMAND")]
    for name, inspection in found:
        h = inspection.holder
        if h is None:
            rows.append((name, "?", "?", f"(holder unknown: {inspection.reason})"))
        else:
            rows.append((name, str(h.pid), human_age(_age(h)), h.command))
    width = [max(len(row[col]) for row in rows) for col in range(3)]
    for name, pid, age, command in rows:
        _say(f"{name:<{width[0]}}  {pid:>{width[1]}}  {age:>{width[2]}}  {command}")


def _say(line: str) -> None:
    """Write one line of output."""
    sys.stdout.write(f"{line}\n")
