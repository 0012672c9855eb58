"""Instance names: what is refused, and names derived from the program."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from singleton_proc import SingleInstance

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        (".", "directory"),
        ("..", "directory"),
        ("a/b", "path separator"),
        ("../x", "path separator"),
        ("a\\b", "path separator"),
        ("a\x00b", "control or invisible"),
        ("tab\there", "control or invisible"),
        ("new\nline", "control or invisible"),
        ("del\x7f", "control or invisible"),
        ("x" * 129, "129 characters"),
        ("\U0001f600" * 60, "over 200 bytes"),
        ("next\x85line", "control or invisible"),
        ("evil\u202egnp.exe", "control or invisible"),
        ("zero\u200bwidth", "control or invisible"),
        ("para\u2029graph", "control or invisible"),
        ("lone\ud800", "control or invisible"),
        ("db:backup", "Windows forbids"),
        ("what?", "Windows forbids"),
        ('say"hi"', "Windows forbids"),
        ("pipe|line", "Windows forbids"),
        ("trailing.", "ends with a dot"),
        ("trailing ", "ends with a dot or a space"),
        ("CON", "device name"),
        ("nul.txt", "device name"),
        ("Com1", "device name"),
    ],
)
def test_unsafe_names_are_refused_with_the_reason(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        SingleInstance(name)
    message = str(info.value)
    assert message.startswith("invalid instance name '")
    assert message.isprintable(), "the message itself stays on one clean line"


@pytest.mark.parametrize(
    "name",
    [
        "feishu",
        "x" * 128,
        "my bot",
        "db-backup",
        ".hidden",
        "a.b",
        "café",
        "日本語",
        "console",
    ],
)
def test_ordinary_names_are_accepted(name: str, lock_dir: Path) -> None:
    with SingleInstance(name, directory=lock_dir) as instance:
        assert instance.name == name
        assert (lock_dir / f"{name}.lock").exists()


def test_a_name_that_is_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        SingleInstance(42)  # type: ignore[arg-type]


def _derived(args: list[str], cwd: Path) -> str:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
        timeout=60,
    ).stdout.strip()


SHOW_NAME = "from singleton_proc import SingleInstance\nprint(SingleInstance().name)\n"


def test_name_derived_from_a_script(tmp_path: Path) -> None:
    script = tmp_path / "nightly-report.py"
    script.write_text(SHOW_NAME)
    assert _derived([str(script)], tmp_path) == "nightly-report"


def test_name_derived_from_a_module_and_a_package(tmp_path: Path) -> None:
    package = tmp_path / "mytool"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "worker.py").write_text(SHOW_NAME)
    (package / "__main__.py").write_text(SHOW_NAME)
    assert _derived(["-m", "mytool.worker"], tmp_path) == "mytool.worker"
    assert _derived(["-m", "mytool"], tmp_path) == "mytool"


def test_no_name_to_derive_says_what_to_do(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SHOW_NAME],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot derive an instance name" in proc.stderr
    assert "pass a name" in proc.stderr
