"""Every fenced Python block of the docs and the README runs as written.

Each block is a script of its own: written to a file named after its page
(so that the name ``@single_instance`` derives is a script's), run in a
fresh interpreter with a private lock directory, and it must exit with
status 0. A block that cannot run where the tests run (it needs a Redis
server at an address of the reader's, or it is a fragment of a program)
says so on its first line, where the reader sees it too::

    # not run: needs a Redis server at redis.internal

and is then only compiled (top-level ``await`` and ``async with`` allowed,
as in a notebook), so its syntax cannot rot either. A block that only
includes a file of ``examples/`` (``--8<-- "examples/chat_bot.py"``) shows a
script that ``test_examples.py`` runs; here the file must exist.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import env_without_coverage, run_leaving_nothing

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"# not run: (?P<reason>\S.*)")
INCLUDE = re.compile(r'--8<-- "(?P<path>examples/[^"]+)"')
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
#: A block's bound: the slowest runs a pool; a hang fails in this time.
BOUND = 90.0


@dataclass(frozen=True)
class Block:
    """A fenced Python block: its page, its first line there, its code."""

    page: Path
    line: int
    code: str

    @property
    def id(self) -> str:
        """``docs/page.md:LINE``, the test's id and the script's origin."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks() -> list[Block]:
    """Every ```` ```python ```` block of the pages, dedented, with its line."""
    blocks = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match["info"].split()[:1] not in (["python"], ["py"]):
                continue
            indent = len(match["indent"])
            code = "".join(
                line[indent:] for line in match["body"].splitlines(keepends=True)
            )
            blocks.append(Block(page, text.count("\n", 0, match.start()) + 1, code))
    return blocks


BLOCKS = python_blocks()


def test_the_pages_have_python_blocks() -> None:
    """The parser finds the blocks (a broken pattern would pass every test)."""
    assert len(BLOCKS) >= 20
    assert any(block.page.name == "README.md" for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.id)
def test_block_runs_or_says_why_not(block: Block, tmp_path: Path) -> None:
    lines = [line.strip() for line in block.code.splitlines() if line.strip()]
    included = [INCLUDE.fullmatch(line) for line in lines]
    if included and all(included):
        assert all((ROOT / match["path"]).is_file() for match in included if match)
        return
    first = block.code.lstrip().split("\n", 1)[0]
    if first.startswith("# not run"):
        assert NOT_RUN.fullmatch(first), f"{block.id}: say why after '# not run: '"
        compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return
    script = tmp_path / f"{block.page.stem.lower().replace('-', '_')}_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    env = env_without_coverage() | {"SINGLETON_PROC_DIR": str(tmp_path / "locks")}
    proc = run_leaving_nothing(
        [sys.executable, str(script)], env, cwd=tmp_path, timeout=BOUND
    )
    assert proc.returncode == 0, (
        f"{block.id} exited with status {proc.returncode}\n"
        f"--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"
    )
