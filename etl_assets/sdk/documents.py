"""A declaration file edited as a person wrote it: comments, key order and flow style kept.

The SDK edits a flow as plain data (its FlowModel) and writes back only what changed into
the round-trip YAML document it read, so a hand-written ``defs.yaml`` keeps its comments and
layout, and two saves of one flow diff only where the flow changed. Files are replaced
atomically (a temporary file in the same folder, then a rename): a reader never sees half
a declaration. A folder's files can be taken (``snapshot``) and put back as they were
(``restore``): how an import undoes what it wrote.
"""

from __future__ import annotations

import io
import os
import shutil
from datetime import date
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from etl_assets.resources.files import partial_name


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and styles survive
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 110
    yaml.preserve_quotes = True
    return yaml


def load_document(text: str) -> CommentedMap:
    document = _yaml().load(text) or CommentedMap()
    if not isinstance(document, CommentedMap):
        raise ValueError("a flow declaration is a mapping (type:, attributes:)")
    return document


def dump_document(document: CommentedMap) -> str:
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    return buffer.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole or its old content: written beside it, synced, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(partial_name(path.name))
    try:
        with partial.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """A folder's files (small: a declaration, its revisions and modules); None if absent."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def restore(folder: Path, before: dict[str, bytes] | None) -> None:
    """The folder as it was: gone if it was not there, else its files and only those."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
        relative = str(path.relative_to(folder))
        if path.is_file() and relative not in before:
            path.unlink()
        elif (
            path.is_dir()
            and not any(path.iterdir())
            and not any(k.startswith(f"{relative}/") for k in before)
        ):
            path.rmdir()
    for relative, blob in before.items():
        path = folder / relative
        if not path.is_file() or path.read_bytes() != blob:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)


def absent(*folders: Path) -> list[Path]:
    """The folders of ``folders`` not there yet: the ones an undo removes again (``prune``)."""
    return [f for f in folders if not f.exists()]


def prune(folders: list[Path]) -> None:
    """Each of ``folders`` removed if it is empty, the deepest first."""
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def merge_into(target: CommentedMap, new: dict[str, Any], baseline: dict[str, Any] | None = None) -> None:
    """``target`` made equal to ``new`` in place: keys ``new`` lacks removed, changed values
    replaced, unchanged ones (their comments, quoting and style) left as they are, new keys
    appended in the style of their neighbours. Where ``new`` equals ``baseline`` (the values
    as read, parameters resolved) the document keeps what it holds: a ``${param}`` stays."""
    for key in [k for k in target if k not in new]:
        del target[key]
    for key, value in new.items():
        before = baseline.get(key, _ABSENT) if baseline is not None else _ABSENT
        if key in target and before is not _ABSENT and before == value:
            continue
        if key in target:
            target[key] = _merged(target[key], value, before if isinstance(before, dict) else None)
        else:
            target[key] = _styled(value, _flow_style_of(target))


_ABSENT = object()


def _merged(old: Any, new: Any, baseline: dict[str, Any] | None = None) -> Any:
    if isinstance(old, CommentedMap) and isinstance(new, dict):
        merge_into(old, new, baseline)
        return old
    if isinstance(old, CommentedSeq) and isinstance(new, list):
        style = _flow_style_of(old)
        for index, item in enumerate(new):
            if index < len(old):
                old[index] = _merged(old[index], item)
            else:
                old.append(_styled(item, style))
        del old[len(new) :]
        return old
    return old if _same(old, new) else new


def _same(old: Any, new: Any) -> bool:
    """Equal as data: a date read from YAML equals its JSON text."""
    if isinstance(old, date) and isinstance(new, str):
        return old.isoformat() == new
    return type(old) is type(new) and old == new or (isinstance(old, str) and old == new)


def _flow_style_of(container: CommentedMap | CommentedSeq) -> bool | None:
    """Whether the container's values are written ``{...}``-style (True), block style (False),
    or None when it has no mapping value to follow."""
    children = container.values() if isinstance(container, CommentedMap) else container
    for child in children:
        if isinstance(child, CommentedMap | CommentedSeq):
            return child.fa.flow_style()
    return None


def _styled(value: Any, flow_style: bool | None) -> Any:
    """A new value as a round-trip node, in ``flow_style`` when its neighbours have one."""
    if isinstance(value, dict):
        node = CommentedMap((k, _styled(v, None)) for k, v in value.items())
    elif isinstance(value, list):  # the house style: a list's mappings one a line (links)
        node = CommentedSeq(_styled(v, True) for v in value)
    else:
        return value
    if flow_style:
        node.fa.set_flow_style()
    elif flow_style is False:
        node.fa.set_block_style()
    return node
