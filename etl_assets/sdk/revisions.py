"""Every saved declaration of a flow kept: its history, a diff of two, a rollback.

``<flow folder>/revisions/<n>.yaml`` holds revision n, the declaration as a save wrote it;
the newest is the file in force. A hand edit of ``defs.yaml`` made between two saves is kept
as a revision of its own before the next save, so nothing written by a person is lost. A
rollback saves an old revision again, as a new one: the history only grows. A parameter set an
import replaces keeps its history the same way, in a folder of its own (``folder``).

A deleted flow's folder, and one an import replaces hard, is moved whole to
``<flows dir>/.deleted/<flow>_<UTC time>`` (``aside``): out of the code location's sight, kept.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etl_assets.sdk.documents import write_atomically

FOLDER = "revisions"
DELETED = ".deleted"


@dataclass(frozen=True)
class Revision:
    number: int
    saved_at: datetime  # UTC
    path: Path

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def history(declaration: Path, folder: Path | None = None) -> list[Revision]:
    """The flow's revisions, oldest first (``folder``: where they are, if not beside it)."""
    folder = folder or declaration.parent / FOLDER
    found = [p for p in folder.glob("*.yaml") if p.stem.isdigit()] if folder.is_dir() else []
    return [
        Revision(int(p.stem), datetime.fromtimestamp(p.stat().st_mtime, UTC), p)
        for p in sorted(found, key=lambda p: int(p.stem))
    ]


def record(declaration: Path, text: str, folder: Path | None = None) -> Revision:
    """``text`` saved as the flow's next revision, after any hand edit of the file in force."""
    folder = folder or declaration.parent / FOLDER
    revisions = history(declaration, folder)
    if declaration.exists():
        current = declaration.read_text(encoding="utf-8")
        if not revisions or revisions[-1].text() != current:
            revisions.append(_write(folder, len(revisions) and revisions[-1].number, current))
    if revisions and revisions[-1].text() == text:
        return revisions[-1]
    return _write(folder, revisions[-1].number if revisions else 0, text)


def _write(folder: Path, last: int, text: str) -> Revision:
    path = folder / f"{last + 1}.yaml"
    write_atomically(path, text)
    return Revision(last + 1, datetime.now(UTC), path)


def revision(declaration: Path, number: int) -> Revision:
    """Revision ``number``; a clear error naming the ones there are."""
    found = {r.number: r for r in history(declaration)}
    if number not in found:
        raise LookupError(f"{declaration}: no revision {number} (revisions: {sorted(found) or 'none'})")
    return found[number]


def diff(declaration: Path, first: int, second: int) -> str:
    """A unified diff of two revisions' declarations."""
    a, b = revision(declaration, first), revision(declaration, second)
    return "".join(
        difflib.unified_diff(
            a.text().splitlines(keepends=True),
            b.text().splitlines(keepends=True),
            fromfile=f"revision {first}",
            tofile=f"revision {second}",
        )
    )


def aside(flow_folder: Path) -> Path:
    """Where ``flow_folder`` goes when it is deleted: a name no earlier deletion took."""
    stem = flow_folder.parent / DELETED / f"{flow_folder.name}_{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    path, n = stem, 1
    while path.exists():  # two in one second
        n += 1
        path = stem.with_name(f"{stem.name}_{n}")
    return path
