"""Every saved declaration of a flow kept: its history, a diff of two, a rollback.

``<flow folder>/revisions/<n>.yaml`` holds revision n, the declaration as a save wrote it;
the newest is the file in force. A hand edit of ``defs.yaml`` made between two saves is kept
as a revision of its own before the next save, so nothing written by a person is lost. A
rollback saves an old revision again, as a new one: the history only grows.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from etl_assets.sdk.documents import write_atomically

FOLDER = "revisions"


@dataclass(frozen=True)
class Revision:
    number: int
    saved_at: datetime  # UTC
    path: Path

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def history(declaration: Path) -> list[Revision]:
    """The flow's revisions, oldest first."""
    folder = declaration.parent / FOLDER
    found = [p for p in folder.glob("*.yaml") if p.stem.isdigit()] if folder.is_dir() else []
    return [
        Revision(int(p.stem), datetime.fromtimestamp(p.stat().st_mtime, UTC), p)
        for p in sorted(found, key=lambda p: int(p.stem))
    ]


def record(declaration: Path, text: str) -> Revision:
    """``text`` saved as the flow's next revision, after any hand edit of the file in force."""
    revisions = history(declaration)
    if declaration.exists():
        current = declaration.read_text(encoding="utf-8")
        if not revisions or revisions[-1].text() != current:
            revisions.append(_write(declaration, len(revisions) and revisions[-1].number, current))
    if revisions and revisions[-1].text() == text:
        return revisions[-1]
    return _write(declaration, revisions[-1].number if revisions else 0, text)


def _write(declaration: Path, last: int, text: str) -> Revision:
    path = declaration.parent / FOLDER / f"{last + 1}.yaml"
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
