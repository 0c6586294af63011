"""Flows moved between installations: a ZIP out of one, checked and imported into another.

``export_flows`` writes each flow's declaration as saved (``flows/<flow>/defs.yaml``), the
Python modules its ``Method`` fields name beside it (``flows/<flow>/<module>.py``; a module
of the ``etl_assets`` package travels with the package), the parameter sets the flows use
(``parameters/<set>.yaml``, ``archive_sets``) and a ``manifest.json`` (versions, the flows, the
sets, size and sha256 of every entry). **No secret leaves**: an ``enc:`` token, or a plain
value under a key named like a password, is written as ``${secret:<flow>.<path>}`` (in a set:
``${secret:parameters.<set>.<value set>.<param>}``) and listed in the manifest; compile fails
until the new installation fills it in.

``import_flows`` reads the ZIP as untrusted (``archive_checks``: nothing is written before
every entry passed), plans each parameter set against the installation's and each flow
against the flows already there (create, or on a conflict skip / rename / replace, soft or
hard), writes through the SDK's own save (validated, atomic, a replaced declaration kept as a
revision), and compiles each one: a flow that fails compile is taken out again, its folder as
it was before, and a set no kept flow uses goes with it. The import is synchronous: ``wait``
is taken for the seed's shape, and the response is ``completed`` or ``failed`` when it is
returned.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from etl_assets.model.declarations import DECLARATION, declared_flows
from etl_assets.resources.files import partial_name
from etl_assets.sdk.archive_checks import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PACKAGE,
    ROOT,
    ArchiveError,
    is_package_module,
    method_modules,
    module_path,
    read_archive,
)
from etl_assets.sdk.archive_import import (
    IMPORTED,
    Conflict,
    FlowOutcome,
    Installation,
    ReplaceMode,
    held,
    outcome_of,
    plan,
    run,
)
from etl_assets.sdk.archive_secrets import (
    UNFILLED,
    Placeholder,
    placeholders_in,
    redact,
    stray_token,
)
from etl_assets.sdk.archive_sets import (
    WRITTEN,
    SetOutcome,
    drop_unused,
    exported_sets,
    plan_sets,
    run_sets,
    set_placeholders,
)
from etl_assets.sdk.documents import dump_document, load_document
from etl_assets.sdk.flow import Flow
from etl_assets.settings.secrets import ENC_TOKEN

Status = Literal["started", "in progress", "completed", "failed"]
OnFailure = Literal["stop", "continue"]

__all__ = ["ArchiveError", "ArchiveVerbs", "FlowOutcome", "ImportResponse", "Placeholder", "SetOutcome"]


@dataclass
class ImportResponse:
    """An import's result: ``status``, each flow's and parameter set's outcome, the
    placeholders to fill."""

    project: Installation = field(repr=False)
    source: Path
    dry_run: bool
    status: Status
    outcomes: list[FlowOutcome]
    placeholders: list[Placeholder]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)
    parameter_sets: list[SetOutcome] = field(default_factory=list)

    def refresh(self) -> ImportResponse:
        """The import is done when it returns (it is synchronous): this reads again which
        placeholders the imported flows and the archive's sets still hold, once someone has
        filled some in."""
        if not self.dry_run:
            self.placeholders = _placeholders(self.outcomes, self.parameter_sets)
        return self

    def imported_flows(self, load: bool = False) -> list[Any]:
        """The names of the flows created, renamed or replaced; ``load``: their ``Flow``s."""
        names = [o.name for o in self.outcomes if o.outcome in IMPORTED]
        if self.dry_run or not load:
            return [] if self.dry_run else names
        flows = {f.name: f for f in self.project.flows}
        return [flows[n] for n in names if n in flows]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "dry_run": self.dry_run,
            "status": self.status,
            "flows": [o.as_dict() for o in self.outcomes],
            "parameter_sets": [s.as_dict() for s in self.parameter_sets],
            "placeholders": [p.as_dict() for p in self.placeholders],
        }


# -- export ------------------------------------------------------------------------------
def export_flow(project: Installation, flow: Flow | str, destination: Path | str | None = None) -> Path:
    """One flow's archive: see ``export_flows``."""
    return export_flows(project, [flow], destination)


def export_flows(
    project: Installation, flows: Iterable[Flow | str], destination: Path | str | None = None
) -> Path:
    """A ZIP of the flows (as saved), their own Method modules, the parameter sets they use
    and a manifest, secrets left out; written atomically to ``destination`` (a file, or a
    folder for a timestamped name; default ``ETL_HOME/export/flows_<UTC time>.zip``). Returns
    its path."""
    known = {f.name: f for f in project.flows}
    chosen: dict[str, Flow] = {}
    for item in flows:
        name = item if isinstance(item, str) else item.name
        if name not in known:
            raise ArchiveError(f"no flow {name!r} to export (flows: {', '.join(known)})")
        chosen[name] = known[name]
    if not chosen:
        raise ArchiveError("name at least one flow to export")
    entries: dict[str, bytes] = {}
    listed, placeholders = [], []
    for flow in chosen.values():
        listed.append(_exported(flow, entries, placeholders))
    sets = exported_sets(chosen.values(), entries, placeholders)
    now = datetime.now(UTC)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "etl_assets_version": _version(PACKAGE),
        "dagster_version": _version("dagster"),
        "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "flows": listed,
        "parameter_sets": sets,
        "placeholders": [p.as_dict() for p in placeholders],
        "entries": {
            name: {"size": len(blob), "sha256": _sha256(blob)} for name, blob in sorted(entries.items())
        },
    }
    path = _destination(project, destination, now)
    _write_zip(path, entries, manifest)
    return path


def _exported(flow: Flow, entries: dict[str, bytes], placeholders: list[Placeholder]) -> dict[str, Any]:
    """One flow's entries added: its declaration with secrets replaced, its Method modules."""
    text = flow.path.read_text(encoding="utf-8")
    document = load_document(text)
    found = redact(document, flow.name)
    if any(p.why != UNFILLED for p in found):
        text = dump_document(document)
    stray_token(flow.path, text)
    model = flow.model  # as saved, its parameters resolved: which modules its Methods name
    base = f"{ROOT}/{flow.name}"
    entries[f"{base}/{DECLARATION}"] = text.encode("utf-8")
    modules = []
    for name, module in method_modules(model):
        if is_package_module(module):
            continue  # the package's own: the other installation has it
        relative = module_path(module)
        file = flow.path.parent / relative if relative else None
        if file is None or not file.is_file():
            raise ArchiveError(
                f"{flow.name} map.{name}: Method {model.map[name].method!r} names module {module!r}, "
                f"which is neither beside the flow ({flow.path.parent / (relative or module)}) nor of "
                f"the {PACKAGE} package: an archive carries only a flow's own modules"
            )
        blob = file.read_bytes()
        if ENC_TOKEN.search(blob.decode("utf-8", "replace")):
            raise ArchiveError(f"{file} holds an enc: token: a secret never leaves in an archive")
        entries[f"{base}/{relative}"] = blob
        modules.append(f"{base}/{relative}")
    placeholders += found
    return {
        "name": flow.name,
        "declaration": f"{base}/{DECLARATION}",
        "modules": modules,
        "table": model.target.table,
        "cadence": model.partitions.kind,
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _destination(project: Installation, destination: Path | str | None, now: datetime) -> Path:
    folder = Path(project.settings.home) / "export" if destination is None else Path(destination)
    if destination is not None and not folder.is_dir():
        return folder
    stem = f"flows_{now:%Y%m%dT%H%M%SZ}"
    path, n = folder / f"{stem}.zip", 1
    while path.exists():  # two exports in one second
        n += 1
        path = folder / f"{stem}_{n}.zip"
    return path


def _write_zip(path: Path, entries: dict[str, bytes], manifest: dict[str, Any]) -> None:
    """Written beside ``path`` and renamed: a reader never finds half an archive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(partial_name(path.name))
    stamp = datetime.now(UTC).timetuple()[:6]
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, blob in [*entries.items(), (MANIFEST, json.dumps(manifest, indent=2).encode())]:
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, blob)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


# -- import ------------------------------------------------------------------------------
def import_flows(
    project: Installation,
    source: Path | str,
    on_failure: OnFailure = "stop",
    conflict_resolution: Conflict = "skip",
    import_only: bool = False,
    include_dependencies: bool = True,
    replace_mode: ReplaceMode = "soft",
    dry_run: bool = False,
    wait: float = -1,
) -> ImportResponse:
    """The archive's flows written into ``project.flows_dir`` and compiled (unless
    ``import_only``); a flow that fails compile is removed again. A flow of a name that exists
    is skipped, renamed (``<name>_2``, its table likewise, as ``duplicate_flow`` does) or
    replaced: ``replace_mode="soft"`` (the default) replaces the declaration, the old one kept
    as a revision and modules the archive lacks left in the folder; ``"hard"`` moves the old
    folder to ``.deleted/`` as ``delete_flow`` does and writes the archive's flow fresh (its
    modules only, a new history). ``replace_mode`` is accepted with any other
    ``conflict_resolution`` and has no effect there.

    The archive's parameter sets go to ``flows_dir/parameters/``: one the installation lacks
    is created, an identical one left, a different one kept unless ``conflict_resolution=
    "replace"`` (then replaced, the old file kept in ``parameters/revisions/<set>/``); a set no
    imported flow uses is not left behind. ``on_failure="stop"`` leaves the flows after a
    failed one out; ``include_dependencies=False`` writes no Method module and no parameter
    set (the installation has them). ``dry_run``: the plan, nothing written. ``wait`` (-1, 0
    or seconds) is accepted for the seed's shape: the call returns when the import is done."""
    _choice("on_failure", on_failure, OnFailure)
    _choice("conflict_resolution", conflict_resolution, Conflict)
    _choice("replace_mode", replace_mode, ReplaceMode)
    if not isinstance(wait, int | float) or wait < -1:
        raise ValueError(f"wait {wait!r}: -1 (until done), 0 or a number of seconds")
    replace, folder = conflict_resolution == "replace", project.flows_dir
    archive = read_archive(Path(source), folder, replace_sets=replace)
    files = declared_flows(project.settings.flow_dirs)
    sets = plan_sets(folder, archive, files, replace, include_dependencies)
    steps = plan(project, archive.flows, conflict_resolution, replace_mode == "hard", run_sets(folder, sets))
    importing = {s.archived.name for s in steps if s.outcome in IMPORTED}
    drop_unused(sets, importing, "no flow this import writes uses it")
    if dry_run:
        outcomes = [outcome_of(s, planned=True) for s in steps]
        placeholders = [p for s in steps if s.outcome not in ("skipped", "failed") for p in held(s)]
        for step in sets:
            text = step.archived.text if step.outcome in WRITTEN else None
            placeholders += set_placeholders(step.result(), text)
    else:
        outcomes = run(project, steps, sets, on_failure == "stop", import_only, include_dependencies)
        placeholders = _placeholders(outcomes, [s.result() for s in sets])
    status: Status = "failed" if any(o.outcome == "failed" for o in outcomes) else "completed"
    return ImportResponse(
        project,
        Path(source),
        dry_run,
        status,
        outcomes,
        placeholders,
        archive.manifest,
        [s.result(planned=dry_run) for s in sets],
    )


def _choice(name: str, value: str, allowed: Any) -> None:
    if value not in allowed.__args__:
        raise ValueError(f"{name} {value!r}: one of {', '.join(allowed.__args__)}")


def _placeholders(outcomes: list[FlowOutcome], sets: list[SetOutcome]) -> list[Placeholder]:
    """The placeholders the imported flows' declarations and the archive's parameter sets
    hold, as they are on disk now."""
    return [
        p
        for o in outcomes
        if o.outcome in IMPORTED and o.path is not None and o.path.is_file()
        for p in placeholders_in(load_document(o.path.read_text(encoding="utf-8")), o.name)
    ] + [p for s in sets for p in set_placeholders(s)]


class ArchiveVerbs:
    """``project.export_flow``, ``export_flows`` and ``import_flows``: a mix-in of ``Project``."""

    def export_flow(self, flow: Flow | str, destination: Path | str | None = None) -> Path:
        """One flow's archive (see ``sdk.archive.export_flows``)."""
        return export_flow(self, flow, destination)  # type: ignore[arg-type]

    def export_flows(self, flows: Iterable[Flow | str], destination: Path | str | None = None) -> Path:
        """A ZIP of the flows, their Method modules, parameter sets and a manifest, secrets left out."""
        return export_flows(self, flows, destination)  # type: ignore[arg-type]

    def import_flows(self, source: Path | str, **options: Any) -> ImportResponse:
        """An archive's flows imported (see ``sdk.archive.import_flows`` for the options)."""
        return import_flows(self, source, **options)  # type: ignore[arg-type]
