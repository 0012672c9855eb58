"""The public surface: pinned, lazy, and named after the package."""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
import typing
from datetime import datetime

import pytest

import singleton_proc

from helpers import TESTS, env_without_coverage

EXPECTED = [
    "AlreadyRunningError",
    "BackendUnavailableError",
    "Holder",
    "InsecureLockPathError",
    "LeaseLostError",
    "LockTimeoutError",
    "PoolExecutor",
    "ProcessHandle",
    "ReplaceRefusedError",
    "SingleInstance",
    "SingletonProcError",
    "TaskTimeoutError",
    "UnpicklableError",
    "WorkerDiedError",
    "__version__",
    "holder",
    "is_running",
    "iter_in_pool",
    "list_instances",
    "process_pool",
    "run_in_pool",
    "run_process",
    "single_instance",
    "start_process",
    "terminate",
]


def test_all_is_pinned_and_sorted() -> None:
    assert singleton_proc.__all__ == EXPECTED


def test_every_public_name_resolves_and_reads_as_singleton_proc() -> None:
    for name in EXPECTED:
        value = getattr(singleton_proc, name)
        if name != "__version__":
            assert value.__module__ == "singleton_proc", name
    assert set(EXPECTED) <= set(dir(singleton_proc))


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        singleton_proc.no_such_name  # noqa: B018


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (no coverage)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env_without_coverage(),
        timeout=60,
        check=False,
    )


def _imported_after(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter (no coverage): which heavy modules load."""
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps({m: m in sys.modules for m in ('multiprocessing', "
        "'concurrent.futures', 'asyncio', 'cloudpickle', 'redis')}))"
    )
    run = _run_python(probe)
    assert run.returncode == 0, run.stderr
    result: dict[str, bool] = json.loads(run.stdout)
    return result


def test_import_loads_no_worker_machinery_even_with_redis_py_installed() -> None:
    # portalocker's own __init__ imports redis-py (and asyncio) when it can.
    assert importlib.util.find_spec("redis"), "the dev extra installs redis-py"
    loaded = _imported_after("import singleton_proc")
    assert loaded == {
        "multiprocessing": False,
        "concurrent.futures": False,
        "asyncio": False,
        "cloudpickle": False,
        "redis": False,
    }


@pytest.mark.parametrize("first", ["singleton_proc", "portalocker"])
def test_portalocker_stays_whole_for_the_program_whichever_comes_first(
    first: str,
) -> None:
    # Its Redis lock and its file locks work, and so does ours.
    second = "portalocker" if first == "singleton_proc" else "singleton_proc"
    probe = (
        f"import {first}, {second}, sys, tempfile\n"
        "from portalocker.redis import RedisLock\n"
        "assert portalocker.RedisLock is RedisLock\n"
        "name = tempfile.mktemp()\n"
        "with singleton_proc.SingleInstance('probe', directory=tempfile.mkdtemp()):\n"
        "    pass\n"
        "with portalocker.Lock(name, timeout=1):\n"
        "    pass\n"
        "print('whole')"
    )
    run = _run_python(probe)
    assert run.stdout == "whole\n", run.stderr


def test_importing_both_at_once_from_two_threads_works() -> None:
    # Each import is the other's business: nothing of portalocker's is
    # shared, so no order of the two threads can break either.
    probe = (
        "import threading\n"
        "other = threading.Thread(target=__import__, args=('portalocker',))\n"
        "other.start()\n"
        "import singleton_proc\n"
        "other.join()\n"
        "import portalocker\n"
        "portalocker.Lock, singleton_proc.SingleInstance\n"
        "print('both')"
    )
    for _ in range(10):  # the threads race differently each time
        run = _run_python(probe)
        assert run.stdout == "both\n", run.stderr


def test_guarding_a_program_loads_no_worker_machinery() -> None:
    loaded = _imported_after(
        "import singleton_proc\n"
        "with singleton_proc.SingleInstance('probe'):\n"
        "    singleton_proc.list_instances()"
    )
    assert not any(loaded.values()), loaded


def test_cloudpickle_loads_only_when_something_goes_by_value() -> None:
    loaded = _imported_after(
        "from singleton_proc import run_process\nimport operator\n"
        "assert run_process(operator.neg, 2) == -2"
    )
    assert loaded["multiprocessing"]
    assert not loaded["cloudpickle"]
    loaded = _imported_after(
        "from singleton_proc import run_process\nassert run_process(lambda: 2) == 2"
    )
    assert loaded["cloudpickle"]


def test_worker_names_load_on_first_use() -> None:
    loaded = _imported_after("import singleton_proc\nsingleton_proc.WorkerDiedError")
    assert loaded["concurrent.futures"]


def test_version_is_a_string() -> None:
    assert isinstance(singleton_proc.__version__, str)
    assert singleton_proc.__version__[0].isdigit()


def test_type_hints_resolve_for_the_public_types() -> None:
    hints = typing.get_type_hints(singleton_proc.Holder)
    assert hints["started_at"] is datetime
    assert hints["cmdline"] == tuple[str, ...]
    init = typing.get_type_hints(singleton_proc.AlreadyRunningError.__init__)
    assert init["holder"] == typing.Optional[singleton_proc.Holder]  # noqa: UP045


def test_dir_lists_the_public_names_only() -> None:
    assert [n for n in dir(singleton_proc) if not n.startswith("_")] == sorted(
        n for n in EXPECTED if not n.startswith("_")
    )


API_PAGE = TESTS.parent / "docs" / "api.md"


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "__version__"])
def test_every_public_name_has_an_example_and_an_entry_in_the_reference(
    name: str,
) -> None:
    value = getattr(singleton_proc, name)
    assert value.__module__ == "singleton_proc"
    assert ">>>" in (inspect.getdoc(value) or ""), f"{name} has no example"
    assert f"::: singleton_proc.{name}\n" in API_PAGE.read_text(encoding="utf-8")
