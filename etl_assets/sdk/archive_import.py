"""An import carried out: each archived flow planned against the flows there, written
through the SDK's save, compiled, and undone when it fails.

``plan`` decides each flow's outcome before anything is written (a dry run stops there);
``run`` writes the parameter sets (``archive_sets``), then the flows, then compiles them, and
takes a failing one out again, its folder back as it was (a replaced flow's declaration,
revisions and modules, byte for byte; a hard-replaced one's folder moved back from
``.deleted/``), and a set no kept flow uses with it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from etl_assets.model.declarations import (
    DECLARATION,
    DeclarationError,
    FlowFile,
    check_together,
    declared_flows,
)
from etl_assets.model.flow import MAX_IDENTIFIER_LENGTH, FlowModel
from etl_assets.model.parameters import ParameterError, ParameterSet, read_sets, resolved
from etl_assets.sdk import revisions
from etl_assets.sdk.archive_checks import ArchivedFlow
from etl_assets.sdk.archive_secrets import Placeholder, placeholders_in
from etl_assets.sdk.archive_sets import SetStep, drop_unused, write_sets
from etl_assets.sdk.compiling import PLACEHOLDER_STAGE
from etl_assets.sdk.documents import absent, load_document, prune, restore, snapshot, write_atomically
from etl_assets.sdk.flow import Flow
from etl_assets.sdk.naming import rename
from etl_assets.settings import Settings

Outcome = Literal["created", "renamed", "replaced", "skipped", "failed"]
Conflict = Literal["skip", "rename", "replace"]
ReplaceMode = Literal["soft", "hard"]
IMPORTED = ("created", "renamed", "replaced")
_PLANNED = {
    "created": "create",
    "renamed": "rename to",
    "replaced": "replace",
    "skipped": "skip",
    "failed": "fail",
}


class Installation(Protocol):
    """What archives need of a ``Project`` (not imported: the project imports this module)."""

    settings: Settings

    @property
    def flows_dir(self) -> Path: ...

    @property
    def flows(self) -> list[Flow]: ...

    def update_flow(self, flow: Flow) -> Flow: ...

    def delete_flow(self, flow: Flow, force: bool = False) -> Any: ...


@dataclass(frozen=True)
class FlowOutcome:
    """What happened to one flow of the archive (in a dry run: what would)."""

    flow: str  # its name in the archive
    outcome: Outcome
    name: str  # its name here (renamed: the new one)
    reason: str = ""
    path: Path | None = None
    problems: tuple[str, ...] = ()
    planned: bool = False
    moved_to: Path | None = None  # replaced hard: where the old folder went (.deleted/...)

    def __str__(self) -> str:
        what = f"renamed to {self.name}" if self.outcome == "renamed" else self.outcome
        if self.planned:
            what = f"would {_PLANNED[self.outcome]}" + (f" {self.name}" if self.outcome == "renamed" else "")
        where = f" ({self.path})" if self.path and self.outcome not in ("skipped", "failed") else ""
        if self.moved_to is not None and self.path is not None:
            where = f" (hard: {self.path.parent} moved to {self.moved_to})"
        why = f": {self.reason}" if self.reason else ""
        return f"{self.flow}: {what}{where}{why}" + "".join(f"\n  {p}" for p in self.problems)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "path": str(self.path) if self.path else None,
            "problems": list(self.problems),
            "moved_to": str(self.moved_to) if self.moved_to else None,
        }


@dataclass
class Step:
    """One archived flow's plan: what to do, under which name, at which path, and why."""

    archived: ArchivedFlow
    outcome: Outcome
    name: str
    path: Path
    reason: str
    document: CommentedMap
    model: FlowModel
    aside: Path | None = None  # replaced hard: where its folder is planned to go
    moved: Path | None = None  # ... and where it went
    created: list[Path] = field(default_factory=list)  # folders the move made (.deleted/)


def held(step: Step) -> list[Placeholder]:
    return placeholders_in(step.document, step.name)


def plan(
    project: Installation,
    archived: list[ArchivedFlow],
    conflict: Conflict,
    hard: bool = False,
    sets: dict[str, ParameterSet] | None = None,
) -> list[Step]:
    """Each flow's outcome decided against the flows there and the ones planned before it:
    one name, one folder, and one table on one key each, as the code location will ask.
    ``hard``: a replaced flow's folder is set aside whole; ``sets``: the parameter sets the
    flows of ``flows_dir`` will run with (the import's among them)."""
    files = declared_flows(project.settings.flow_dirs)
    existing = {f.flow.name: f for f in files}
    folder = project.flows_dir
    folders = (
        {p.name for p in folder.iterdir() if p.is_dir() and any(p.iterdir())} if folder.is_dir() else set()
    )
    taken = set(existing) | folders | {f.name for f in archived}
    tables = {f.flow.target.table for f in files}
    planned: set[str] = set()
    steps = []
    for flow in archived:
        aside = None
        document = load_document(flow.text)
        here, path = existing.get(flow.name), folder / flow.name / DECLARATION
        outcome: Outcome = "created"
        reason = _conflict(flow.name, here, planned, folders, folder)
        if reason and conflict == "skip":
            outcome = "skipped"
        elif reason and conflict == "rename":
            outcome, new = "renamed", _free_name(flow.name, taken, tables)
            rename(document, flow.model, new)
            path, reason = folder / new / DECLARATION, f"{reason}; its table is renamed {new} too"
        elif reason and (here is None or here.packaged or flow.name in planned):
            outcome = "failed"
            reason += ": only a client's flow is replaced (rename it instead)"
        elif reason and hard:
            outcome, path = "replaced", here.path  # type: ignore[union-attr]
            aside = revisions.aside(path.parent)
            reason += "; its folder (revisions, modules) moves to .deleted/, the archive's is written fresh"
        elif reason:
            outcome, path = "replaced", here.path  # type: ignore[union-attr]
            reason += "; its declaration stays in the flow's revisions"
        try:
            model = model_at(document, path, sets if path.parents[1] == folder else None)
        except (ParameterError, ValidationError) as exc:
            outcome, reason, model = "failed", f"{path}: {exc}", flow.model
        if outcome not in ("skipped", "failed"):
            others = [f for f in files if f.path != path]
            try:
                check_together([*others, FlowFile(path, model, False)])
            except DeclarationError as exc:
                outcome, reason = "failed", str(exc)
            else:
                files = [*others, FlowFile(path, model, False)]
                taken.add(model.name)
                planned.add(model.name)
                tables.add(model.target.table)
        steps.append(Step(flow, outcome, model.name, path, reason, document, model, aside))
    return steps


def model_at(document: CommentedMap, path: Path, sets: dict[str, ParameterSet] | None = None) -> FlowModel:
    """The flow as it runs at ``path``: its parameters resolved with ``sets`` (default: the
    sets beside it)."""
    sets = read_sets(path.parents[1]) if sets is None else sets
    return FlowModel.model_validate(resolved(dict(document["attributes"]), sets))


def _conflict(name: str, here: FlowFile | None, planned: set[str], folders: set[str], folder: Path) -> str:
    """Why ``name`` cannot simply be created here; empty when it can."""
    if here is not None:
        return f"a {'sample ' if here.packaged else ''}flow {name} exists here: {here.path}"
    if name in planned:
        return f"{name} is the new name of another flow of this archive"
    if name in folders:
        return f"{folder / name} exists here and is not a flow"
    return ""


def _free_name(name: str, taken: set[str], tables: set[str]) -> str:
    n = 2
    while True:
        suffix = f"_{n}"
        new = name[: MAX_IDENTIFIER_LENGTH - len(suffix)] + suffix
        if new not in taken and new not in tables:
            return new
        n += 1


def outcome_of(step: Step, planned: bool = False, **changes: Any) -> FlowOutcome:
    values = {"outcome": step.outcome, "reason": step.reason, **changes}
    moved = (step.moved or step.aside) if values["outcome"] == "replaced" else None
    return FlowOutcome(
        step.archived.name, name=step.name, path=step.path, planned=planned, moved_to=moved, **values
    )


def run(
    project: Installation,
    steps: list[Step],
    sets: list[SetStep],
    stop: bool,
    import_only: bool,
    dependencies: bool,
) -> list[FlowOutcome]:
    """The parameter sets written, then every flow, then each compiled; a failure undone (and,
    with ``stop``, the rest), and a set no kept flow uses put back as it was."""
    write_sets(sets)  # first: a flow's save resolves its parameters with the files
    done = _flows(project, steps, stop, import_only, dependencies)
    kept = {o.flow for o in done if o.outcome in IMPORTED}
    drop_unused(sets, kept, "not kept: no flow that uses it was imported; the installation's as before")
    return done


def _flows(
    project: Installation, steps: list[Step], stop: bool, import_only: bool, dependencies: bool
) -> list[FlowOutcome]:
    """Every flow written, then compiled; a failure undone (and, with ``stop``, the rest)."""
    outcomes: dict[int, FlowOutcome] = {}
    written: dict[int, dict[str, bytes] | None] = {}  # step -> its folder before, to undo
    stopped = None
    for i, step in enumerate(steps):
        if stopped is not None or step.outcome in ("skipped", "failed"):
            outcomes[i] = _stopped(step, stopped) if stopped else outcome_of(step)
            stopped = stopped or (step.archived.name if stop and step.outcome == "failed" else None)
            continue
        before = snapshot(step.path.parent)
        try:
            _write(project, step, dependencies)
        except (ValueError, OSError) as exc:
            _undo(step, before)
            outcomes[i] = outcome_of(step, outcome="failed", reason=f"not written: {exc}")
            stopped = step.archived.name if stop else None
            continue
        written[i], outcomes[i] = before, outcome_of(step)
    while written and not import_only:  # again after an undo: a kept flow may have linked to it
        failed = False
        for i in sorted(written):
            if i not in written:
                continue  # undone: the import stopped before it
            problems = _compile_problems(project, steps[i])
            if problems:
                _undo(steps[i], written.pop(i))
                outcomes[i] = outcome_of(
                    steps[i], outcome="failed", reason="compile failed", problems=problems
                )
                failed, stopped = True, stopped or (steps[i].archived.name if stop else None)
                for later in [j for j in written if j > i and stop]:
                    _undo(steps[later], written.pop(later))
                    outcomes[later] = _stopped(steps[later], steps[i].archived.name)
            elif held(steps[i]):
                outcomes[i] = outcome_of(steps[i], reason=_with_placeholders(steps[i]))
        if not failed:
            break
    return [outcomes[i] for i in range(len(steps))]


def _stopped(step: Step, at: str) -> FlowOutcome:
    return outcome_of(
        step, outcome="skipped", reason=f"not imported: the import stopped at {at} (on_failure='stop')"
    )


def _with_placeholders(step: Step) -> str:
    names = ", ".join(p.placeholder for p in held(step))
    return "; ".join(
        filter(None, [step.reason, f"placeholders to fill: {names} (compile fails until they are)"])
    )


def _compile_problems(project: Installation, step: Step) -> tuple[str, ...]:
    """The flow's compile errors as written, except placeholders waiting for this
    installation's secrets."""
    document = load_document(step.path.read_text(encoding="utf-8"))
    flow = Flow(project, step.path, document, model_at(document, step.path), False)
    return tuple(str(p) for p in flow.compile().errors if p.stage != PLACEHOLDER_STAGE)


def _write(project: Installation, step: Step, dependencies: bool) -> None:
    """Its modules first, then the declaration through the SDK's save (validated, atomic, the
    one it replaces kept as a revision). Replaced hard: the old folder first moved aside as
    ``delete_flow`` moves it (refused while a run of it is queued or running)."""
    folder = step.path.parent
    if step.aside is not None:
        step.created = absent(folder.parent / revisions.DELETED)
        current = next((f for f in project.flows if f.path == step.path), None)
        if current is None:
            raise ValueError(f"{step.path} went away during the import: nothing to replace")
        step.moved = project.delete_flow(current).kept
    for relative, blob in step.archived.modules.items() if dependencies else ():
        write_atomically(folder / relative, blob.decode("utf-8"))
    project.update_flow(Flow(project, step.path, step.document, step.model, False))


def _undo(step: Step, before: dict[str, bytes] | None) -> None:
    """The flow's folder as it was: its files put back, or (replaced hard) the old folder
    moved back from ``.deleted/``."""
    if step.moved is None:
        restore(step.path.parent, before)
        return
    shutil.rmtree(step.path.parent, ignore_errors=True)
    step.moved.rename(step.path.parent)
    step.moved = None
    prune(step.created)
