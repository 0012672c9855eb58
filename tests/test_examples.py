"""Every file under ``examples/`` works as its recipe says.

Each script runs with real processes (a real holder, a real SIGTERM, a real
``redis-server``) and short bounds; each configuration file is parsed, and
the command it gives is run as written where this machine can run it. A
file added to ``examples/`` without a test here fails
``test_every_example_is_tested``.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers import (
    DEADLINE,
    env_without_coverage,
    holding,
    posix_only,
    read_line,
    reap,
    run_leaving_nothing,
)

#: The bot is stopped with SIGTERM, which Windows does not deliver as a signal.
sigterm_stops_the_bot = posix_only("SIGTERM as a signal (Windows terminates at once)")

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis_server import RedisServer

EXAMPLES = Path(__file__).parent.parent / "examples"
DEMO = EXAMPLES / "demo.py"
#: Every file under examples/ and the test (here, or the named module) that runs it.
TESTED = {
    "demo.py": "test_demo_shows_a_refused_copy_a_pool_and_then_an_accepted_copy",
    "cron_job.py": "test_cron_job_runs_then_refuses_while_a_run_holds_it",
    "cron/crontab": "test_the_crontab_line_runs_as_written",
    "chat_bot.py": "test_a_chat_bot_started_again_replaces_the_running_copy",
    "systemd/chat-bot.service": "test_the_systemd_unit_stops_the_bot_cleanly",
    "system_wide.py": "test_the_system_wide_instance_refuses_a_second_copy",
    "windows/nightly-report.xml": "test_the_windows_task_runs_the_cron_job_once",
    "pool_with_logging.py": "test_the_pool_shows_worker_logs_a_bar_and_the_failure",
    "cluster_instance.py": "test_the_cluster_instance_gives_each_host_a_grant",
    "cluster/kubernetes.yaml": "test_cluster_recipes.py",
    "cluster/compose.yaml": "test_cluster_recipes.py",
    "cluster/feishu-bot.service": "test_cluster_recipes.py",
}


def example(script: str) -> list[str]:
    """The command line that runs ``examples/<script>`` with this Python."""
    return [sys.executable, str(EXAMPLES / script)]


def test_every_example_is_tested() -> None:
    files = {
        path.relative_to(EXAMPLES).as_posix()
        for path in EXAMPLES.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert files == set(TESTED)
    for file, test in TESTED.items():  # a test here, or a test module
        assert test in globals() or (Path(__file__).parent / test).is_file(), file


def test_demo_shows_a_refused_copy_a_pool_and_then_an_accepted_copy() -> None:
    proc = run_leaving_nothing([sys.executable, str(DEMO)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "the second copy exited with status 1" in out
    assert "is_running('singleton-proc-demo') = False" in out
    assert "I hold 'singleton-proc-demo' now" in out
    assert out.rstrip().endswith("it exited with status 0")
    # The pool: 8 log records made in the workers, shown by this process's
    # logging, and the results in input order.
    holder_pid = int(re.search(r"This process \((\d+)\)", out).group(1))  # type: ignore[union-attr]
    workers = re.findall(r"\[log\] worker (\d+): \d+ primes in \[(\d+),", out)
    assert sorted(int(start) for _, start in workers) == list(range(0, 200_000, 25_000))
    assert holder_pid not in {int(pid) for pid, _ in workers}
    assert "17984 primes below 200,000, in input order: [2762, 2371," in out
    assert "8/8" in proc.stderr  # the progress bar
    refusal = [
        line for line in proc.stderr.splitlines() if line.startswith("singleton_proc:")
    ]
    assert len(refusal) == 1
    assert refusal[0].startswith(
        "singleton_proc: 'singleton-proc-demo' is already running (pid "
    )
    assert "demo.py" in refusal[0]


def refusal_of(err: str, name: str, pid: int) -> str:
    """The library's one line naming the holder of ``name``, from stderr."""
    (line,) = [line for line in err.splitlines() if line.startswith("singleton_proc:")]
    assert line.startswith(f"singleton_proc: {name!r} is already running (pid {pid}"), (
        line
    )
    return line


def test_cron_job_runs_then_refuses_while_a_run_holds_it(
    private_default_dir: Path,
) -> None:
    done = run_leaving_nothing(example("cron_job.py"))
    assert done.returncode == 0, done.stderr
    assert "report written: the sum of squares below 1000 is 332833500" in done.stderr
    with holding("nightly-report", private_default_dir) as earlier_run:
        refused = run_leaving_nothing(example("cron_job.py"))
    assert refused.returncode == 1
    refusal_of(refused.stderr, "nightly-report", earlier_run.pid)
    assert "report written" not in refused.stderr


@posix_only("the crontab line runs under /bin/sh")
def test_the_crontab_line_runs_as_written(
    tmp_path: Path, private_default_dir: Path
) -> None:
    """The line's command, run by ``sh`` as cron would, in the home it expects."""
    (line,) = [
        line
        for line in (EXAMPLES / "cron" / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    minute, hour, day, month, weekday, command = line.split(None, 5)
    assert (minute, hour, day, month, weekday) == ("*/5", "*", "*", "*", "*")
    report = tmp_path / "home" / "report"
    (report / ".venv" / "bin").mkdir(parents=True)
    python = report / ".venv" / "bin" / "python"  # the venv's python: ours
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    shutil.copy(EXAMPLES / "cron_job.py", report)
    env = env_without_coverage() | {"HOME": str(tmp_path / "home")}
    assert run_leaving_nothing(["/bin/sh", "-c", command], env).returncode == 0
    assert "report written" in (report / "cron.log").read_text()
    with holding("nightly-report", private_default_dir) as earlier_run:
        assert run_leaving_nothing(["/bin/sh", "-c", command], env).returncode == 1
    refusal_of((report / "cron.log").read_text(), "nightly-report", earlier_run.pid)


def start_bot(argv: list[str] | None = None) -> subprocess.Popen[str]:
    """Start the chat bot (or ``argv``); it says "serving" once it holds its name."""
    return subprocess.Popen(
        argv or example("chat_bot.py"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@sigterm_stops_the_bot
def test_a_chat_bot_started_again_replaces_the_running_copy() -> None:
    old = start_bot()
    new = None
    try:
        assert read_line(old) == f"bot {old.pid}: serving"
        new = start_bot()
        # The new copy serves only after the old one has stopped cleanly.
        assert read_line(new) == f"bot {new.pid}: serving"
        assert old.poll() is not None  # gone before the new copy took over
        out, err = old.communicate(timeout=DEADLINE)
        assert (old.returncode, out) == (  # SystemExit(143), its finally ran
            128 + signal.SIGTERM,
            f"bot {old.pid}: stopping cleanly\n",
        ), err
        new.send_signal(signal.SIGTERM)
        out, err = new.communicate(timeout=DEADLINE)
        assert (new.returncode, out) == (
            128 + signal.SIGTERM,
            f"bot {new.pid}: stopping cleanly\n",
        ), err
    finally:
        reap(old)
        if new is not None:
            reap(new)


def systemd_service(path: Path) -> configparser.SectionProxy:
    """The ``[Service]`` section of a unit file, keys in their case."""
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    return unit["Service"]


@sigterm_stops_the_bot
def test_the_systemd_unit_stops_the_bot_cleanly() -> None:
    """``systemctl stop`` (SIGTERM to the bot) ends it with a status called clean."""
    service = systemd_service(EXAMPLES / "systemd" / "chat-bot.service")
    python, script = shlex.split(service["ExecStart"])
    assert python.endswith("/.venv/bin/python")
    assert Path(script).name == "chat_bot.py"
    assert service["KillMode"] == "mixed"  # SIGTERM to the bot alone, once
    clean = {0, *map(int, service["SuccessExitStatus"].split())}
    bot = start_bot(example(Path(script).name))
    try:
        assert read_line(bot) == f"bot {bot.pid}: serving"
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(DEADLINE) in clean
    finally:
        reap(bot)


RUN_LOCK = Path("/run/lock")


@pytest.mark.skipif(not RUN_LOCK.is_dir(), reason="this system has no /run/lock")
def test_the_system_wide_instance_refuses_a_second_copy(tmp_path: Path) -> None:
    """The name lives in /run/lock (that another user is refused there too is
    tested with the shared sticky directories, in test_record.py).

    /run/lock is the machine's: the script runs under a name of this test's
    own, so that suites running side by side never meet there.
    """
    name = f"backup-disk-{uuid.uuid4().hex[:12]}"
    text = (EXAMPLES / "system_wide.py").read_text()
    assert '"backup-disk"' in text
    (tmp_path / "system_wide.py").write_text(text.replace('"backup-disk"', f'"{name}"'))
    script = [sys.executable, str(tmp_path / "system_wide.py")]
    try:
        done = run_leaving_nothing(script)
        assert done.returncode == 0, done.stderr
        assert "runs the machine's only backup" in done.stdout
        with holding(name, RUN_LOCK) as first_copy:
            refused = run_leaving_nothing(script)
        assert refused.returncode == 1, refused.stderr
        refusal_of(refused.stderr, name, first_copy.pid)
    finally:  # nobody holds it now: leave /run/lock as it was
        (RUN_LOCK / f"{name}.lock").unlink(missing_ok=True)


def test_the_windows_task_runs_the_cron_job_once() -> None:
    """The task is valid Task Scheduler XML whose action runs ``cron_job.py``."""
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    path = EXAMPLES / "windows" / "nightly-report.xml"
    task = ET.parse(path).getroot()  # noqa: S314  (our own file)
    assert task.tag == f"{{{ns['t']}}}Task"
    assert (
        task.findtext("t:Settings/t:MultipleInstancesPolicy", namespaces=ns)
        == "IgnoreNew"
    )
    assert task.find("t:Triggers/t:CalendarTrigger/t:StartBoundary", ns) is not None
    command = task.findtext("t:Actions/t:Exec/t:Command", namespaces=ns)
    arguments = task.findtext("t:Actions/t:Exec/t:Arguments", namespaces=ns)
    workdir = task.findtext("t:Actions/t:Exec/t:WorkingDirectory", namespaces=ns)
    assert command == rf"{workdir}\.venv\Scripts\python.exe"
    assert arguments is not None
    assert (EXAMPLES / arguments).is_file()


def test_the_pool_shows_worker_logs_a_bar_and_the_failure() -> None:
    done = run_leaving_nothing(example("pool_with_logging.py"))
    assert done.returncode == 0, done.stderr
    records = re.findall(r"(\d+) checksums: (.*)", done.stderr)
    parent = {pid for pid, message in records if "failed" in message}
    workers = {pid for pid, message in records if "bytes ->" in message}
    assert len(parent) == 1
    assert workers
    assert not parent & workers  # made in the workers, shown by the parent
    assert sum("bytes ->" in message for _, message in records) == 9
    assert (
        "10 checksums, 1 failed: [(0, ValueError('size must be positive, got 0'))]"
        in (done.stderr)
    )
    assert "10/10" in done.stderr  # the progress bar


def test_the_cluster_instance_gives_each_host_a_grant(
    redis_server: RedisServer, host_dir: Callable[[str], Path]
) -> None:
    """Two "hosts" (a lock directory each) share one Redis: each gets its own grant.

    That they never overlap is the lease's guarantee, tested in
    test_cluster.py; here, that the recipe runs as its docstring says.
    """
    script = example("cluster_instance.py")
    copies = [
        subprocess.Popen(
            script,
            env=env_without_coverage()
            | {
                "SINGLETON_PROC_BACKEND": redis_server.url,
                "SINGLETON_PROC_DIR": str(host_dir(host)),
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in "ab"
    ]
    fences = []
    try:
        for copy in copies:
            out, err = copy.communicate(timeout=DEADLINE)
            assert copy.returncode == 0, err
            steps = re.findall(rf"\({copy.pid}\): step (\d), fence (\d+)", out)
            assert [step for step, _ in steps] == ["0", "1", "2"]
            (fence,) = {int(fence) for _, fence in steps}
            fences.append(fence)
    finally:
        for copy in copies:
            reap(copy)
    assert fences[0] != fences[1]  # two grants of the name, one after the other


def test_the_cluster_instance_runs_alone_without_a_backend() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SINGLETON_PROC_BACKEND"}
    done = run_leaving_nothing(example("cluster_instance.py"), env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("fence None") == 3
