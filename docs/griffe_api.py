"""A griffe extension for the API reference: docstrings as a reader should see them.

The docstrings keep what ``help()``, Sphinx-minded readers and the doctests
need; the rendered reference gets, instead:

- Sphinx roles (``:class:`Holder```, ``:meth:`check```) as links to the
  public name they mean, or as plain code where the name is not public;
- ``Example:`` sections as examples (rendered as code blocks);
- no ``# doctest: ...`` directives.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

import singleton_proc

_ROLE = re.compile(r":(?:class|func|meth|attr|exc|data|mod|obj):`(~|\.)?([^`]+)`")
_DIRECTIVE = re.compile(r"[ \t]*# doctest:[^\n]*")
_EXAMPLE = re.compile(r"^([ \t]*)Example:[ \t]*$", re.MULTILINE)


def _public_target(target: str, owner: str | None) -> str | None:
    """The public path ``target`` names (``owner``: the class it is read in)."""
    parts = target.split(".")
    candidates = [parts, parts[-1:]]
    if owner is not None:
        candidates.insert(0, [owner, *parts[-1:]])
    for path in candidates:
        if path[0] not in singleton_proc.__all__:
            continue
        found: Any = getattr(singleton_proc, path[0])
        for part in path[1:]:
            if part.startswith("_") or not hasattr(found, part):
                break
            found = getattr(found, part)
        else:
            return "singleton_proc." + ".".join(path)
    return None


def _owner(obj: griffe.Object) -> str | None:
    """The public class ``obj`` is, or is a member of."""
    for candidate in (obj, obj.parent):
        if (
            isinstance(candidate, griffe.Class)
            and candidate.name in singleton_proc.__all__
        ):
            return candidate.name
    return None


class ReferenceDocstrings(griffe.Extension):
    """Rewrite each docstring of the package for the rendered reference."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: ARG002
        """Rewrite ``obj``'s docstring, before griffe parses it."""
        if obj.docstring is None:
            return
        owner = _owner(obj)

        def link(found: re.Match[str]) -> str:
            target = found[2]
            path = _public_target(target, owner)
            # "~name" and ".relative.name" show their last part, as Sphinx does
            shown = target.rsplit(".", 1)[-1] if found[1] else target
            return f"[`{shown}`][{path}]" if path else f"`{shown}`"

        text = _ROLE.sub(link, obj.docstring.value)
        text = _DIRECTIVE.sub("", text)
        obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", text)
