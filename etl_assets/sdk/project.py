"""The flows of one installation, managed as objects (the DataStage / StreamSets SDK's verbs).

``Project.open()`` reads the environment's settings; ``project.flows`` lists every flow (the
package's samples and the client's, ``flows.dirs``); ``create_flow``, ``update_flow``,
``duplicate_flow`` and ``delete_flow`` change the client's declarations on disk, validated
first and written atomically, comments kept. The sample flows are read-only: they are the
package's, and a wheel install must not be written into. ``project.reports`` lists the
package's reports (``defs/``, where the code location loads them from); ``compile_report``
checks one as ``compile_flow`` checks a flow.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from etl_assets.model.declarations import (
    DECLARATION,
    DeclarationError,
    FlowFile,
    check_together,
    declared_flows,
    report_declarations,
)
from etl_assets.model.flow import FlowModel, identifier_problem
from etl_assets.model.parameters import ParameterError, read_sets, resolved
from etl_assets.sdk import revisions
from etl_assets.sdk.archive import ArchiveVerbs
from etl_assets.sdk.arrange import arrange
from etl_assets.sdk.compiling import CompileResult, compile_flow
from etl_assets.sdk.documents import dump_document, load_document, merge_into, write_atomically
from etl_assets.sdk.flow import Flow
from etl_assets.sdk.naming import rename
from etl_assets.sdk.report import Report, ReportList
from etl_assets.sdk.report_compiling import compile_report
from etl_assets.settings import Settings, load_settings

if TYPE_CHECKING:
    import dagster as dg

DELETED = revisions.DELETED  # a deleted flow's folder, kept: <flows dir>/.deleted/<flow>_<UTC time>
STARTER = """# {name}: a flow created by etl_assets' SDK; edit the map and the target.
type: etl_assets.orchestration.FlowComponent

attributes:
  name: {name}
  description: {description}
  source:
    file: "{name}_{{start:%Y%m%d}}.csv"
    folder: /outbound/{name}
  map:
    external_id: {{type: String, source: ID, required: true}}
    name: {{type: String, source: NAME}}
  target:
    table: {name}
    key: external_id
"""


class FlowList(list[Flow]):
    """The flows of a project, with the seed's look-ups."""

    def get_all(self, cadence: str | None = None, name: str | None = None) -> list[Flow]:
        """The flows of a cadence (``daily``, ``monthly``, ``five_minutes``) and/or name."""
        return [
            f for f in self if (cadence is None or f.cadence == cadence) and (name is None or f.name == name)
        ]

    def get(self, name: str) -> Flow | None:
        """The flow of that name; None when there is none."""
        return next((f for f in self if f.name == name), None)


@dataclass(frozen=True)
class Deleted:
    """What ``delete_flow`` removed, and what it left (the target table, the data)."""

    flow: str
    declaration: Path
    remains: list[str]
    kept: Path  # where its folder went (.deleted/<flow>_<UTC time>)


class FlowError(ValueError):
    """A flow verb that cannot be done: the message says why and what to do."""


class Project(ArchiveVerbs):
    """One installation's flows, for one environment's settings (export and import: ``ArchiveVerbs``)."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance | None = None) -> None:
        self.settings = settings
        self.instance = instance

    @classmethod
    def open(
        cls,
        settings: Settings | Path | str | None = None,
        env: str | None = None,
        instance: dg.DagsterInstance | None = None,
    ) -> Project:
        """The project of the settings file (default: ``ETL_SETTINGS``, else the package's) in
        ``env`` (default: ``ETL_ENV``, else dev); ``instance`` (default: none) is asked about
        runs before a flow is deleted."""
        if not isinstance(settings, Settings):
            settings = load_settings(env, Path(settings) if settings is not None else None)
        return cls(settings, instance)

    @property
    def flows_dir(self) -> Path:
        """Where new flows are written: the first of ``flows.dirs``."""
        if not self.settings.flow_dirs:
            raise FlowError("flows.dirs is empty in the settings: name a folder for the client's flows")
        return self.settings.flow_dirs[0]

    @property
    def flows(self) -> FlowList:
        """Every flow, read from disk now (samples first, then the client's)."""
        return FlowList(self._flow(file) for file in declared_flows(self.settings.flow_dirs))

    @property
    def reports(self) -> ReportList:
        """Every report of the code location (the package's ``defs/``), read from disk now."""
        return ReportList(Report(self, path) for path in report_declarations())

    def _flow(self, file: FlowFile) -> Flow:
        """The flow as declared (its document) and as it runs (``file.flow``: parameters resolved)."""
        document = load_document(file.path.read_text(encoding="utf-8"))
        return Flow(self, file.path, document, file.flow.model_copy(deep=True), file.packaged)

    # -- the verbs ---------------------------------------------------------------------
    def create_flow(
        self, name: str, description: str | None = None, template: Flow | str | None = None
    ) -> Flow:
        """A new flow in ``flows_dir``: a copy of ``template`` (a flow or a flow's name; its
        table renamed to ``name``, so the two never write one table by accident) or a starter
        with two fields. Written at once; edit it and ``update_flow``."""
        problem = identifier_problem("name", name)
        if problem:
            raise FlowError(problem)
        flows = self.flows
        if flows.get(name) is not None:
            raise FlowError(f"a flow {name!r} exists already: {flows.get(name).path}")  # type: ignore[union-attr]
        path = self.flows_dir / name / DECLARATION
        if path.exists():
            raise FlowError(f"{path} exists already (not a flow): move it away or pick another name")
        if template is None:
            document = load_document(
                STARTER.format(name=name, description=description or f"{name}: describe it")
            )
        else:
            source = flows.get(template) if isinstance(template, str) else template
            if source is None:
                names = ", ".join(f.name for f in flows)
                raise FlowError(f"no flow {template!r} to start from (flows: {names})")
            document = copy.deepcopy(source.document)
            rename(document, source.model, name, description)
        flow = Flow(self, path, document, _model_of(document, path), False)
        return self._save(flow, new=True)

    def duplicate_flow(self, flow: Flow, name: str, description: str | None = None) -> Flow:
        """A copy of ``flow`` under ``name`` (its table renamed likewise), as it is saved."""
        return self.create_flow(name, description if description is not None else flow.description, flow)

    def update_flow(self, flow: Flow) -> Flow:
        """Validate the flow as edited, then save it atomically, comments and order kept."""
        if flow.packaged:
            raise FlowError(
                f"{flow.name} is a sample flow of the package ({flow.path}): duplicate it into "
                f"{self.flows_dir} (duplicate_flow) and edit the copy"
            )
        return self._save(flow, new=False)

    def _save(self, flow: Flow, new: bool) -> Flow:
        try:
            model = FlowModel.model_validate(flow.declaration())
        except ValidationError as exc:
            lines = [f"{'.'.join(map(str, e['loc'])) or 'attributes'}: {e['msg']}" for e in exc.errors()]
            raise FlowError(f"flow {flow.model.name} not saved: " + "; ".join(lines)) from None
        others = [f for f in declared_flows(self.settings.flow_dirs) if f.path != flow.path]
        try:
            check_together([*others, FlowFile(flow.path, model, False)])
        except DeclarationError as exc:
            raise FlowError(f"flow {model.name} not saved: {exc}") from None
        candidate = copy.deepcopy(flow.document)
        merge_into(candidate.setdefault("attributes", {}), flow.declaration(), flow.baseline)
        try:  # the declaration as it will be read again: its parameters must all be known
            resolved(dict(candidate["attributes"]), read_sets(flow.path.parents[1]))
        except ParameterError as exc:
            raise FlowError(f"flow {model.name} not saved: {exc}") from None
        flow.document = candidate
        if new and flow.path.parent.exists() and any(flow.path.parent.iterdir()):
            raise FlowError(f"{flow.path.parent} is not empty: pick another name")
        text = dump_document(flow.document)
        revisions.record(flow.path, text)  # the one before it (or a hand edit) is kept too
        write_atomically(flow.path, text)
        flow.baseline = flow.declaration()
        return flow

    def rollback_flow(self, flow: Flow, revision: int) -> Flow:
        """The flow as revision ``revision`` declared it, saved again as a new revision."""
        try:
            text = revisions.revision(flow.path, revision).text()
        except LookupError as exc:
            raise FlowError(str(exc)) from None
        document = load_document(text)
        restored = Flow(self, flow.path, document, _model_of(document, flow.path), False)
        self._save(restored, new=False)
        flow.document, flow.model = restored.document, restored.model
        return flow

    def flow_history(self, flow: Flow) -> list[revisions.Revision]:
        """``flow.history()``: its saved declarations, oldest first."""
        return revisions.history(flow.path)

    def flow_diff(self, flow: Flow, first: int, second: int) -> str:
        """``flow.diff(a, b)``: a unified diff of two revisions."""
        try:
            return revisions.diff(flow.path, first, second)
        except LookupError as exc:
            raise FlowError(str(exc)) from None

    def delete_flow(self, flow: Flow, force: bool = False) -> Deleted:
        """The flow's declaration taken out of the code location (its folder moved to
        ``.deleted/``, revisions and all); refused while a run of it is queued or running
        (unless ``force``). The target table and the data under ETL_HOME are never touched:
        ``remains`` says what is left, for whoever decides to drop it."""
        if flow.packaged:
            raise FlowError(f"{flow.name} is a sample flow of the package: it cannot be deleted")
        active = self.active_runs(flow.name)
        if active and not force:
            raise FlowError(
                f"{flow.name} has {len(active)} queued or running runs ({', '.join(active[:5])}): "
                "wait for them, cancel them in the UI, or delete with force=True (--force)"
            )
        home = Path(self.settings.home)
        remains = [f"table {flow.target.table} in the target database"] + [
            str(home / folder / flow.name)
            for folder in ("data", "errors", "backup")
            if (home / folder / flow.name).exists()
        ]
        kept = revisions.aside(flow.path.parent)
        kept.parent.mkdir(exist_ok=True)
        flow.path.parent.rename(kept)  # its declaration and revisions, out of the code location's sight
        return Deleted(flow.name, flow.path, [*remains, f"its declaration and revisions: {kept}"], kept)

    def compile_flow(self, flow: Flow) -> CompileResult:
        """``flow.compile()``: see ``sdk.compiling``."""
        return compile_flow(flow)

    def compile_report(self, report: Report | str) -> CompileResult:
        """``report.compile()``: see ``sdk.report_compiling``; a report or a report's name."""
        if isinstance(report, str):
            found = self.reports.get(report)
            if found is None:
                names = ", ".join(r.name for r in self.reports) or "none"
                raise FlowError(f"no report {report!r} (reports: {names})")
            report = found
        return compile_report(report)

    def arrange_flow(self, flow: Flow) -> None:
        """``flow.auto_arrange()``: see ``sdk.arrange``."""
        arrange(flow)

    def active_runs(self, flow: str) -> list[str]:
        """Ids of the flow's runs the instance holds as queued, starting or running."""
        if self.instance is None:
            return []
        import dagster as dg

        statuses = [
            dg.DagsterRunStatus.QUEUED,
            dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.CANCELING,
        ]
        runs = self.instance.get_runs(dg.RunsFilter(statuses=statuses))
        prefix = f"{flow}_"
        return [
            run.run_id
            for run in runs
            if run.job_name.startswith(prefix)
            or any(key.path[-1].startswith(prefix) for key in (run.asset_selection or ()))
        ]


def _model_of(document, path: Path) -> FlowModel:  # noqa: ANN001 - a round-trip document
    """The flow a document declares at ``path``, its parameters resolved."""
    try:
        return FlowModel.model_validate(resolved(dict(document["attributes"]), read_sets(path.parents[1])))
    except ParameterError as exc:
        raise FlowError(f"{path}: {exc}") from None
