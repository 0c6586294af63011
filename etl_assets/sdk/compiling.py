"""A flow compiled without running: everything a run would need, checked now.

The Celery talk's unit test of a dependency graph, for one flow: the declaration validates;
every map field compiles to its Polars expression and evaluates on an empty frame of the
declared source columns; the flow's Dagster definitions build; and every column a stage
reads is provided by the stage before it (map sources by the source file's header when a
file is at hand, link fields and the dedupe key by the map, a link's table by a flow of the
project or the target database). Each problem names the flow, the stage, the field and, where
it has one, the declaration's file and line. Reports compile likewise (``sdk.report_compiling``),
into the same ``CompileResult``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
import yaml
from pydantic import ValidationError

from etl_assets.engine.columns import LINE, SOURCE_FILE
from etl_assets.engine.transform.maps import (
    CompiledField,
    compile_field,
    field_order,
    load_method,
    told_without,
    typed_columns,
)
from etl_assets.model.declarations import line_of
from etl_assets.model.derive import derive_requires
from etl_assets.model.flow import FlowModel, MapField
from etl_assets.model.parameters import FOLDER, PLACEHOLDER
from etl_assets.sdk.documents import dump_document, merge_into
from etl_assets.settings.secrets import SecretError

if TYPE_CHECKING:
    import dagster as dg

    from etl_assets.settings import Settings

Severity = Literal["error", "warning"]
PLACEHOLDER_STAGE = "placeholder"


@dataclass(frozen=True)
class Problem:
    flow: str  # the flow's name, or the report's
    stage: str  # declaration, placeholder, extract, transform, link, query, definitions
    field: str | None
    message: str
    file: Path | None = None
    line: int | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else ""
        what = f"{self.stage} {self.field}" if self.field else self.stage
        return f"{where}{self.severity}: {self.flow} {what}: {self.message}"


@dataclass
class CompileResult:
    """A flow's (or a report's) compile: its problems (none: it would run)."""

    flow: str
    problems: list[Problem] = field(default_factory=list)
    kind: Literal["flow", "report"] = "flow"

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


class Findings:
    """``problem(stage, field, message, *loc)``: a problem of one compile, pointed at the line of
    the declaration's key at ``loc`` (under ``attributes``)."""

    def __init__(self, result: CompileResult, path: Path | None, line: Callable[..., int]) -> None:
        self.result, self.path, self.line = result, path, line

    def __call__(
        self, stage: str, field_name: str | None, message: str, *loc: object, severity: Severity = "error"
    ) -> None:
        line = self.line(*loc) if loc else None
        self.result.problems.append(
            Problem(self.result.flow, stage, field_name, message, self.path, line, severity)
        )


class _Lines:
    """The lines of a flow's declaration as it would be saved, for problems to point at."""

    def __init__(self, flow: Any) -> None:
        document = copy.deepcopy(flow.document)
        merge_into(document.setdefault("attributes", {}), flow.declaration())
        self.root = yaml.compose(dump_document(document))
        self.path = flow.path

    def of(self, *loc: object) -> int:
        return line_of(self.root, ("attributes", *loc))


def compile_flow(flow: Any) -> CompileResult:
    lines = _Lines(flow)
    result = CompileResult(flow.model.name)
    problem = Findings(result, lines.path, lines.of)
    try:
        model = FlowModel.model_validate(flow.declaration())
    except ValidationError as exc:
        for error in exc.errors():
            loc = error["loc"]
            problem("declaration", ".".join(map(str, loc)) or None, error["msg"], *loc)
        return result
    _placeholders(flow.declaration(), problem)
    _fields(model, problem)
    _header(model, flow.project, problem)
    _links(model, flow.project, problem)
    _definitions(model, flow.project, problem)
    return result


def _placeholders(value: Any, problem, loc: tuple[object, ...] = ()) -> None:  # noqa: ANN001
    """A secret an export left as ``${secret:...}`` and nobody filled in yet: a run would use
    the placeholder's text as the value, so it is an error until it is replaced."""
    if isinstance(value, dict):
        for key, child in value.items():
            _placeholders(child, problem, (*loc, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _placeholders(child, problem, (*loc, index))
    elif isinstance(value, str) and (found := PLACEHOLDER.search(value)):
        owner, _, rest = found.group(1).partition(".")
        where = f" in {FOLDER}/{rest.split('.', 1)[0]}.yaml" if owner == FOLDER and rest else ""
        problem(
            PLACEHOLDER_STAGE,
            ".".join(map(str, loc)),
            f"{value} is a placeholder an export left for a secret: fill it{where} with an enc: token "
            "(etl-assets encrypt-password)",
            *loc,
        )


def _fields(model: FlowModel, problem) -> None:  # noqa: ANN001 - the closure above
    """Every map field's expressions, evaluated on an empty frame of the source columns (a
    Method's with its options decrypted, as a run would; a fault is told without them)."""
    sources = {model.source_column(n) for n in model.map}
    empty = pl.DataFrame(schema={**dict.fromkeys(sources, pl.String), LINE: pl.Int64, SOURCE_FILE: pl.String})
    done: list[CompiledField] = []  # in compile_map's order: a derived field after those it requires
    for name in field_order(model):
        spec = model.map[name]
        if spec.type == "Method" and not _options_fit(name, spec, problem):
            continue
        if spec.derive and not set(derive_requires(spec.derive)) <= {f.name for f in done}:
            continue  # a field it requires does not compile: that field's problem says so
        try:
            compiled = compile_field(name, spec, model.source_column(name), present=True, flow=model.name)
            typed = typed_columns(empty.lazy(), [*done, compiled])
            checks = [c.alias(f"_c{i}") for i, (c, _) in enumerate(compiled.errors)]
            reasons = [r.alias(f"_r{i}") for i, (_, r) in enumerate(compiled.errors)]
            with told_without([secret for f in (*done, compiled) for secret in f.secrets]):
                typed.select(*checks, *reasons).collect()
            done.append(compiled)
        except SecretError as exc:  # names the flow, field and option; never the value
            problem("transform", name, str(exc), "map", name, "options")
        except Exception as exc:  # any fault of the field's own expression is the finding
            problem("transform", name, f"does not compile: {type(exc).__name__}: {exc}", "map", name)


def _options_fit(name: str, spec: MapField, problem) -> bool:  # noqa: ANN001
    """A Method's options bound against its function's signature (``function(expr, **options)``):
    an unknown or a missing option is named, with the options the function takes. Only names
    are compared: nothing is decrypted for this."""
    assert spec.method is not None
    try:
        signature = inspect.signature(load_method(spec.method))
    except Exception:  # not importable, not a function: compiling the field says so
        return True
    options = spec.options or {}
    try:
        signature.bind(None, **options)
    except TypeError as exc:
        takes = list(signature.parameters.values())[1:]  # after the expression
        names = {p.name for p in takes if p.kind is not p.POSITIONAL_ONLY}
        unknown = [o for o in options if o not in names]
        if any(p.kind is p.VAR_KEYWORD for p in takes) or not unknown:
            reason = f"options of {spec.method}: {exc}"
        else:
            reason = f"option {', '.join(unknown)}: {spec.method} takes no such option"
        line = ("map", name, "options", unknown[0]) if unknown else ("map", name, "options")
        problem(
            "transform", name, f"{reason} (its options: {', '.join(p.name for p in takes) or 'none'})", *line
        )
        return False
    return True


def _header(model: FlowModel, project, problem) -> None:  # noqa: ANN001
    """The map's source columns against the header of a file of this flow at hand (the
    newest in ``ETL_HOME/import`` or the newest delivery kept under ``data/``)."""
    sample = sample_file(model, Path(project.settings.home))
    if sample is None:
        return
    try:
        header = pl.read_csv(sample, separator=model.source.delimiter, n_rows=0, infer_schema=False).columns
    except Exception as exc:  # an unreadable sample says nothing about the flow
        problem(
            "extract",
            None,
            f"{sample}: header unreadable ({exc}); the map is not checked against it",
            severity="warning",
        )
        return
    header = [c.strip().strip("\ufeff") for c in header]
    for name, spec in model.map.items():
        column = model.source_column(name)
        if column not in header and spec.derive is None:  # a derive fills a column the file lacks
            severity: Severity = "error" if spec.required else "warning"
            problem(
                "extract",
                name,
                f"reads column {column}, which {sample.name} lacks (its header: {', '.join(header)})",
                "map",
                name,
                severity=severity,
            )


def sample_file(model: FlowModel, home: Path) -> Path | None:
    if model.source.file is None:  # a table or a generator: no sample file to compare with
        return None
    prefix = model.source.file.split("{", 1)[0]
    suffix = model.source.file.rsplit("}", 1)[-1]
    candidates = [p for p in (home / "import").glob(f"{prefix}*{suffix}") if p.is_file()]
    candidates += [p for p in (home / "data" / model.name).glob(f"*/raw/{prefix}*{suffix}") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def _links(model: FlowModel, project, problem) -> None:  # noqa: ANN001
    """A link's table is loaded by a flow of the project, or exists in the target database
    (asked once, only when a link needs it, read only: a dev SQLite file not there yet is not
    created by asking)."""
    from etl_assets.sdk.target import Target

    loaded = {f.target.table: f for f in project.flows}
    loaded[model.target.table] = model  # the flow itself, as edited
    target: Target | None = None
    for index, link in enumerate(model.links):
        provider = loaded.get(link.table)
        if provider is not None:
            if link.match not in provider.map:
                problem(
                    "link",
                    link.field,
                    f"matches {link.table}.{link.match}, which flow {provider.name} does not load",
                    "links",
                    index,
                    "match",
                )
            continue
        target = target or Target(project.settings)
        if target.answers and target.has_column(link.table, link.match):
            continue
        why = (
            f"the target database has no {link.table}.{link.match}"
            if target.answers
            else f"the target database did not answer ({target.silence})"
        )
        problem(
            "link",
            link.field,
            f"table {link.table} is loaded by no flow of the project and {why}",
            "links",
            index,
            "table",
        )


def _definitions(model: FlowModel, project, problem) -> None:  # noqa: ANN001
    """The flow's Dagster definitions (see ``check_definitions``)."""
    from etl_assets.orchestration.factory import FlowRuntime, build_flow_defs

    settings = project.settings

    def build() -> dg.Definitions:
        runtime = FlowRuntime(timezone=settings.timezone, max_park_age=settings.max_park_age)
        return build_flow_defs(model, runtime)

    check_definitions(build, settings, problem)


def check_definitions(build: Callable[[], dg.Definitions], settings: Settings, problem: Findings) -> None:
    """A flow's or report's Dagster definitions, built and resolved as the code location would
    (with the environment's resources, which are not connected to)."""
    import dagster as dg

    from etl_assets.orchestration.component_tree import quiet_previews
    from etl_assets.resources import build_resources

    try:
        with quiet_previews():
            defs = dg.Definitions.merge(build(), dg.Definitions(resources=build_resources(settings)))
            dg.Definitions.validate_loadable(defs)
    except Exception as exc:
        problem("definitions", None, f"{type(exc).__name__}: {exc}")
