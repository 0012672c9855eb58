"""The API reference as a reader gets it: the site built, its HTML parsed.

Every public name has a heading (with mkdocstrings' stable anchor
``#singleton_proc.NAME``) followed by its signature; no Sphinx role, no
doctest directive and no private or dunder member that is not API shows.
"""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import singleton_proc

from helpers import env_without_coverage

ROOT = Path(__file__).resolve().parent.parent
_RAW_ROLE = re.compile(r":(?:class|func|meth|attr|exc|data|mod|obj):")
#: Members that are API although they start with an underscore.
_PROTOCOLS = {"__enter__", "__exit__", "__aenter__", "__aexit__", "__call__"}


class _Page(HTMLParser):
    """The page's text, and its headings in order with what follows each."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.headings: list[str] = []  # ids
        self.after: dict[
            str, list[str]
        ] = {}  # id -> classes seen before the next heading
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        anchor = found.get("id")
        if re.fullmatch(r"h[1-6]", tag) and anchor:
            self._current = anchor
            self.headings.append(anchor)
            self.after[anchor] = []
        elif self._current is not None and found.get("class"):
            self.after[self._current] += (found["class"] or "").split()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def api_page(tmp_path_factory: pytest.TempPathFactory) -> _Page:
    """The reference page of a strict build of the site."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--site-dir", str(site)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
        env={**env_without_coverage(), "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    page = _Page()
    page.feed((site / "api" / "index.html").read_text(encoding="utf-8"))
    return page


@pytest.mark.parametrize(
    "name", [name for name in singleton_proc.__all__ if not name.startswith("__")]
)
def test_every_public_name_has_a_heading_and_a_signature(
    api_page: _Page, name: str
) -> None:
    anchor = f"singleton_proc.{name}"
    assert anchor in api_page.headings, f"no heading for {name}"
    assert "doc-signature" in api_page.after[anchor], f"no signature for {name}"


def test_no_raw_role_no_doctest_directive_no_private_member(api_page: _Page) -> None:
    text = "".join(api_page.text)
    assert _RAW_ROLE.findall(text) == []
    assert "doctest:" not in text
    members = {heading.rsplit(".", 1)[-1] for heading in api_page.headings}
    assert {m for m in members if m.startswith("_")} <= _PROTOCOLS


def test_roles_became_links_and_examples_code(api_page: _Page) -> None:
    # SingleInstance's docstring says :class:`LeaseLostError` and has examples.
    after = api_page.after["singleton_proc.SingleInstance"]
    assert "autorefs-internal" in after  # a link to another public name
    assert "highlight" in after  # a code block, not a flattened paragraph
