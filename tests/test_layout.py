"""The package's shape: three wings over a shared base, and no import cycles.

Every ``import`` of every module is read with :mod:`ast`, those deferred into
functions and those under ``TYPE_CHECKING`` included, so that a shortcut
taken inside a function counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "singleton_proc"
WINGS = ("_base", "_lock", "_workers", "_cli")
#: A module longer than this does more than one job.
MAX_LINES = 400


def _module_name(path: Path) -> str:
    """``singleton_proc._lock.record`` for ``singleton_proc/_lock/record.py``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The package's modules that module ``name`` imports, wherever it does."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            # ``from package import module`` imports the module too.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _reach(name: str) -> set[str]:
    """Every module that importing ``name`` can import, directly or not."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for module in GRAPH[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def _wing(name: str) -> str:
    """``_lock`` for ``singleton_proc._lock.record``; ``""`` at the top level."""
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in WINGS) else ""


def test_every_module_lives_in_a_wing_or_is_one_of_the_few_at_the_top() -> None:
    top = sorted(name for name in MODULES if not _wing(name))
    assert top == [
        "singleton_proc",
        "singleton_proc.__main__",
        "singleton_proc._errors",
        "singleton_proc._version",
    ]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _wing(n) == "_lock"))
def test_the_lock_wing_never_reaches_the_worker_wing_or_the_command_line(
    name: str,
) -> None:
    reached = {
        module for module in _reach(name) if _wing(module) in {"_workers", "_cli"}
    }
    assert reached == set(), f"{name} reaches {sorted(reached)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _wing(n) == "_base"))
def test_the_base_imports_nothing_above_itself(name: str) -> None:
    above = {module for module in GRAPH[name] if _wing(module) != "_base"}
    assert above == set(), f"{name} imports {sorted(above)}"


def test_no_import_cycles() -> None:
    cycles = sorted(
        f"{name} -> {other}"
        for name in MODULES
        for other in GRAPH[name]
        if name in _reach(other)
    )
    assert cycles == []


def test_every_module_says_what_it_owns_and_stays_small() -> None:
    silent = [name for name, path in MODULES.items() if not _docstring(path)]
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert silent == []
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_every_module_is_on_the_contributors_page_with_its_own_words() -> None:
    """``docs/internals.md`` lists each module with its docstring's first line."""
    page = (PACKAGE.parent / "docs" / "internals.md").read_text()
    missing = []
    for path in MODULES.values():
        first = (_docstring(path) or "").splitlines()[0].replace("|", "\\|")
        row = f"| `{path.relative_to(PACKAGE).as_posix()}` | {first} |"
        if row not in page:
            missing.append(row)
    assert missing == [], "add or update these rows in docs/internals.md"


def _docstring(path: Path) -> str | None:
    return ast.get_docstring(ast.parse(path.read_text()))
