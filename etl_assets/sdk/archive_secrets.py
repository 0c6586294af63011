"""The rule that keeps secrets out of an archive of flows, and the placeholders left instead.

An ``enc:`` token, or a plain value under a key named like a password (a field named so has its
default taken too), is replaced in the exported text by ``${secret:<flow>.<path>}`` (in a
parameter set: ``${secret:parameters.<set>.<value set>.<param>}``); the importing
installation fills each one in, and compile fails until it has. A ``${set.param}`` reference is
no secret: the set it names travels, redacted the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl_assets.model.parameters import PLACEHOLDER, REFERENCE, SECRET_NAME
from etl_assets.sdk.archive_checks import ArchiveError
from etl_assets.settings.secrets import ENC_TOKEN, PLAIN_PREFIX, holds_token

# A key whose plain value is taken for a secret (a field named so has its default taken too):
# the names a parameter must hold a token under.
SECRET_KEY = SECRET_NAME
UNFILLED = "a placeholder not filled yet"


@dataclass(frozen=True)
class Placeholder:
    """A secret an export left out: where it was, and the text standing in for it."""

    flow: str  # the flow's name, or parameters/<set>.yaml for a parameter set's
    path: str  # dotted, under the declaration's attributes (map.api_key.default) or the set's values
    placeholder: str  # ${secret:<flow>.<path>}, a set's ${secret:parameters.<set>.<path>}
    why: str

    def __str__(self) -> str:
        return f"{self.placeholder}  ({self.flow} {self.path}: {self.why})"

    def as_dict(self) -> dict[str, str]:
        return {"flow": self.flow, "path": self.path, "placeholder": self.placeholder, "why": self.why}


def _secret(key: object, parent: object, value: object) -> str | None:
    """Why a scalar is taken for a secret; None when it is not one."""
    if not isinstance(value, str) or not value or PLACEHOLDER.fullmatch(value) or REFERENCE.fullmatch(value):
        return None  # a placeholder already, or a parameter (its set travels redacted)
    if value.startswith(PLAIN_PREFIX) or holds_token(value):
        return "an enc: token"
    if isinstance(key, str) and SECRET_KEY.search(key):
        return "a plain value under a key named like a secret"
    if key == "default" and isinstance(parent, str) and SECRET_KEY.search(parent):
        return "the plain default of a field named like a secret"
    return None


def _scalars(
    node: Any, path: tuple[Any, ...] = (), parent: object = None
) -> Iterator[tuple[Any, tuple, Any]]:
    """(container, path, parent key) of every scalar in a document, for reading or replacing."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if isinstance(value, dict | list):
            yield from _scalars(value, (*path, key), key)
        else:
            yield node, (*path, key), parent


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(map(str, path[1:] if path[:1] == ("attributes",) else path))


def redact(document: Any, flow: str, prefix: str | None = None) -> list[Placeholder]:
    """Every secret of a declaration (or a parameter set's values) replaced, in place, by a
    named placeholder, ``${secret:<prefix, default flow>.<path>}``; the placeholders (those
    left by an earlier export as well) listed."""
    found = []
    for container, path, parent in _scalars(document):
        value, dotted = container[path[-1]], _dotted(path)
        why = _secret(path[-1], parent, value)
        if why:
            container[path[-1]] = f"${{secret:{prefix or flow}.{dotted}}}"
            found.append(Placeholder(flow, dotted, container[path[-1]], why))
        elif isinstance(value, str) and PLACEHOLDER.search(value):
            found.append(Placeholder(flow, dotted, value, UNFILLED))
    return found


def placeholders_in(document: Any, flow: str) -> list[Placeholder]:
    """The placeholders still standing in a declaration: what the installation must fill."""
    return [
        Placeholder(flow, _dotted(path), match.group(0), "to fill with an enc: token")
        for container, path, _ in _scalars(document)
        if isinstance(container[path[-1]], str)
        for match in PLACEHOLDER.finditer(container[path[-1]])
    ]


def stray_token(path: Path, text: str) -> None:
    """An ``enc:`` token left where redaction does not look (a comment) stops the export."""
    leak = ENC_TOKEN.search(text)
    if leak:
        line = text.count("\n", 0, leak.start()) + 1
        raise ArchiveError(
            f"{path}:{line}: an enc: token outside a value (a comment?): remove it, then export"
        )
