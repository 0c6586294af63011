"""The parameter sets an archive of flows carries: exported with the flows that use them,
imported beside the installation's own without losing any of them.

An export writes each set a flow uses (``model.parameters.sets_named``) once, as
``parameters/<set>.yaml``: comments kept, secrets replaced by
``${secret:parameters.<set>.<value set>.<param>}``. An import plans each set against the
installation's file of that name: ``created`` where there is none, ``unchanged`` where it holds
the same values, else ``kept`` (the installation's) or, with ``conflict_resolution="replace"``,
``replaced``, the old file kept as a revision (``parameters/revisions/<set>/<n>.yaml``), unless
a flow of the installation that uses it would no longer load. A set no imported flow ends up
using is not written, or is put back as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from etl_assets.model.declarations import FlowFile, read_document
from etl_assets.model.flow import FlowModel
from etl_assets.model.parameters import FOLDER, ParameterError, ParameterSet, read_sets, resolved, sets_named
from etl_assets.sdk import revisions
from etl_assets.sdk.archive_checks import Archive, ArchivedSet, ArchiveError
from etl_assets.sdk.archive_secrets import UNFILLED, Placeholder, placeholders_in, redact, stray_token
from etl_assets.sdk.documents import (
    absent,
    dump_document,
    load_document,
    prune,
    restore,
    snapshot,
    write_atomically,
)
from etl_assets.sdk.flow import Flow

SetOutcomeKind = Literal["created", "unchanged", "kept", "replaced", "skipped"]
WRITTEN = ("created", "replaced")
_PLANNED = {
    "created": "would create",
    "unchanged": "unchanged",
    "kept": "would keep",
    "replaced": "would replace",
    "skipped": "would skip",
}


@dataclass(frozen=True)
class SetOutcome:
    """What happened to one parameter set of the archive (in a dry run: what would)."""

    name: str
    outcome: SetOutcomeKind
    path: Path  # the installation's file of that name
    reason: str = ""
    planned: bool = False

    def __str__(self) -> str:
        what = _PLANNED[self.outcome] if self.planned else self.outcome
        why = f": {self.reason}" if self.reason else ""
        return f"parameter set {self.name}: {what} ({self.path}){why}"

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


@dataclass
class SetStep:
    """One archived set's plan, and once written, how to put the installation's back."""

    archived: ArchivedSet
    outcome: SetOutcomeKind
    path: Path
    reason: str
    users: frozenset[str]  # the archive's flows that use it
    undo: Callable[[], None] | None = None

    def result(self, planned: bool = False) -> SetOutcome:
        return SetOutcome(self.archived.name, self.outcome, self.path, self.reason, planned)


def label(name: str) -> str:
    return f"{FOLDER}/{name}.yaml"


# -- export ------------------------------------------------------------------------------
def exported_sets(
    flows: Iterable[Flow], entries: dict[str, bytes], placeholders: list[Placeholder]
) -> list[dict[str, Any]]:
    """Each set the flows use added once to ``entries``; the manifest's ``parameter_sets``."""
    used: dict[str, tuple[Path, list[str]]] = {}
    for flow in flows:
        folder = flow.path.parents[1] / FOLDER
        for name in sorted(sets_named(flow.document.get("attributes") or {})):
            path = folder / f"{name}.yaml"
            first, users = used.setdefault(name, (path, []))
            if first != path and first.read_bytes() != path.read_bytes():
                raise ArchiveError(
                    f"parameter set {name}: {users[0]} uses {first}, {flow.name} uses {path}, and they "
                    "differ: export the two flows apart"
                )
            users.append(flow.name)
    listed = []
    for name, (path, users) in sorted(used.items()):
        blob, found = _exported(name, path)
        entries[label(name)] = blob
        placeholders += found
        listed.append({"name": name, "entry": label(name), "flows": users})
    return listed


def _exported(name: str, path: Path) -> tuple[bytes, list[Placeholder]]:
    """The set's file as written (comments kept), its secrets replaced by placeholders."""
    if not path.is_file():
        raise ArchiveError(f"parameter set {name}: no file {path} to export")
    text = path.read_text(encoding="utf-8")
    document = load_document(text)
    values = document.get("values")
    found = redact(values, label(name), f"{FOLDER}.{name}") if isinstance(values, dict) else []
    if any(p.why != UNFILLED for p in found):
        text = dump_document(document)
    stray_token(path, text)
    return text.encode("utf-8"), found


# -- import ------------------------------------------------------------------------------
def plan_sets(
    flows_dir: Path, archive: Archive, files: list[FlowFile], replace: bool, dependencies: bool
) -> list[SetStep]:
    """Each archived set's outcome against the installation's sets in ``flows_dir``."""
    here = read_sets(flows_dir)
    carried = {f.name for f in archive.flows}  # replaced along with the set, and checked then
    steps = []
    for archived in archive.parameter_sets:
        users = frozenset(f.name for f in archive.flows if archived.name in f.parameter_sets)
        installed = here.get(archived.name)
        outcome: SetOutcomeKind = "created"
        reason = ""
        if not dependencies:
            outcome, reason = "skipped", "include_dependencies=False: the installation's own sets are used"
        elif installed == archived.model:
            outcome, reason = "unchanged", "the installation's holds the same values"
        elif installed is not None:
            differs = "the installation's differs from the archive's"
            broken = _breaks(archived, here, files, flows_dir, carried) if replace else ""
            if not replace or broken:
                outcome = "kept"
                reason = f"{differs} and is kept" + (
                    f": {broken}" if broken else " (conflict_resolution='replace' replaces it)"
                )
            else:
                history = flows_dir / FOLDER / revisions.FOLDER / archived.name
                outcome, reason = "replaced", f"{differs}; it stays in its revisions ({history})"
        steps.append(SetStep(archived, outcome, flows_dir / label(archived.name), reason, users))
    return steps


def _breaks(
    archived: ArchivedSet, here: dict[str, ParameterSet], files: list[FlowFile], flows_dir: Path, carried: set
) -> str:
    """Why replacing the set would make a flow of the installation fail to load; empty if none."""
    sets = {**here, archived.name: archived.model}
    for file in files:
        if file.packaged or file.path.parents[1] != flows_dir or file.flow.name in carried:
            continue
        attributes = read_document(file.path).get("attributes") or {}
        if archived.name not in sets_named(attributes):
            continue
        try:
            FlowModel.model_validate(resolved(attributes, sets))
        except ParameterError as exc:
            return f"flow {file.flow.name} ({file.path}) would not load with the archive's: {exc}"
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return f"flow {file.flow.name} ({file.path}) would not load with the archive's: {problems}"
    return ""


def run_sets(flows_dir: Path, steps: list[SetStep]) -> dict[str, ParameterSet]:
    """The sets the archive's flows in ``flows_dir`` run with once the steps are carried out."""
    written = {s.archived.name: s.archived.model for s in steps if s.outcome in WRITTEN}
    return {**read_sets(flows_dir), **written}


def drop_unused(steps: list[SetStep], importing: set[str], why: str) -> None:
    """A set to write that no flow of ``importing`` uses: not written (or put back), ``why``."""
    for step in steps:
        if step.outcome in WRITTEN and not step.users & importing:
            if step.undo is not None:
                step.undo()
                step.undo = None
            step.outcome, step.reason = "skipped", why


def write_sets(steps: list[SetStep]) -> None:
    """Each set to create or replace written atomically; one that cannot be is skipped (the
    flows that use it then fail their save, naming the parameter)."""
    for step in steps:
        if step.outcome in WRITTEN:
            try:
                step.undo = _write(step)
            except OSError as exc:
                step.outcome, step.reason = "skipped", f"not written: {exc}"


def _write(step: SetStep) -> Callable[[], None]:
    """The archive's set in place, a replaced one kept as a revision; returns its undo."""
    history = step.path.parent / revisions.FOLDER / step.archived.name
    created = absent(step.path.parent, history.parent, history)
    before, kept = (step.path.read_text(encoding="utf-8") if step.path.is_file() else None), snapshot(history)

    def undo() -> None:
        if before is None:
            step.path.unlink(missing_ok=True)
        else:
            write_atomically(step.path, before)
        restore(history, kept)
        prune(created)

    try:
        if before is not None:
            revisions.record(step.path, step.archived.text, history)
            old = revisions.history(step.path, history)[-2]
            step.reason = f"the installation's differed from the archive's; it is kept as {old.path}"
        write_atomically(step.path, step.archived.text)
    except OSError:
        undo()
        raise
    return undo


def set_placeholders(outcome: SetOutcome, text: str | None = None) -> list[Placeholder]:
    """The placeholders a set holds: in ``text`` (a dry run's, the archive's), else on disk."""
    if text is None:
        if not outcome.path.is_file():
            return []
        text = outcome.path.read_text(encoding="utf-8")
    values = load_document(text).get("values")
    return placeholders_in(values, label(outcome.name)) if isinstance(values, dict) else []
