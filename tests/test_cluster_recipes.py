"""The recipes of docs/cluster.md, as files: each parses, and its command works.

Every recipe runs ``singleton-proc run`` with the backend from the
environment; the test runs that very command line (the bot replaced by a
program that prints the fence it was given) against a real ``redis-server``.
"""

from __future__ import annotations

import configparser
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from test_cli import CLI

from helpers import DEADLINE

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis_server import RedisServer

RECIPES = Path(__file__).parent.parent / "examples" / "cluster"
PRINT_FENCE = "import os; print(os.environ['SINGLETON_PROC_FENCE'])"


def _kubernetes() -> list[str]:
    deployment = yaml.safe_load((RECIPES / "kubernetes.yaml").read_text())
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] >= 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    backend = env["SINGLETON_PROC_BACKEND"]
    assert "value" not in backend, "the URL holds a password: from a Secret"
    assert backend["valueFrom"]["secretKeyRef"]["key"]
    return [str(word) for word in container["command"]]


def _compose() -> list[str]:
    services = yaml.safe_load((RECIPES / "compose.yaml").read_text())["services"]
    bot = services["bot"]
    assert bot["deploy"]["replicas"] >= 2
    assert bot["environment"]["SINGLETON_PROC_BACKEND"].startswith("redis://redis:")
    assert bot["restart"] == "on-failure"  # 75: lost or unreachable, start again
    assert "redis" in services
    return [str(word) for word in bot["command"]]


def _systemd() -> list[str]:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    unit.read_string((RECIPES / "feishu-bot.service").read_text())
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("/etc/")  # not in the unit itself
    return shlex.split(service["ExecStart"])


@pytest.mark.parametrize("recipe", [_kubernetes, _compose, _systemd])
def test_each_recipe_parses_and_its_command_holds_a_lease(
    recipe: Callable[[], list[str]],
    redis_server: RedisServer,
    host_dir: Callable[[str], Path],
) -> None:
    argv = recipe()
    assert Path(argv[0]).name == "singleton-proc"
    assert argv[1] == "run"
    split = argv.index("--")
    options, name = argv[2 : split - 1], argv[split - 1]
    env: dict[str, Any] = {**os.environ, "SINGLETON_PROC_BACKEND": redis_server.url}
    bot = [sys.executable, "-c", PRINT_FENCE]
    done = subprocess.run(
        [CLI, "run", *options, "--dir", str(host_dir("a")), name, "--", *bot],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0  # the command got the lease's fence
