"""Where flows are declared, and the checks that span them.

Every flow is a ``<folder>/<flow>/defs.yaml`` holding ``type: etl_assets.orchestration.
FlowComponent`` and the flow's ``attributes``. The three sample flows sit in the package's
``defs/``; a client's flows sit in the folders the settings name (``flows.dirs``), outside
the installed package, so a wheel install works and a consultant adds a flow without
touching Python. A declaration's fault names its file and the line of the key at fault.
Reports (``type: etl_assets.orchestration.ReportComponent``) sit in the package's ``defs/``
too: the code location's component tree loads them from there only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from etl_assets.model.flow import FlowModel
from etl_assets.model.parameters import FlowParameters, ParameterError, ParameterSet, read_sets, resolved

# libyaml's parser where PyYAML has it: the pure-Python one took ~40 ms a declaration, most of
# the time a code location of a hundred flows spends loading (the same documents either way)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

FLOW_TYPE = "etl_assets.orchestration.FlowComponent"
REPORT_TYPE = "etl_assets.orchestration.ReportComponent"
DECLARATION = "defs.yaml"
PACKAGED_FLOWS = Path(__file__).resolve().parents[1] / "defs"  # the sample flows, read-only


class DeclarationError(ValueError):
    """A declaration that cannot be loaded, or two that contradict each other: each line names
    a file (and a line where there is one)."""


@dataclass(frozen=True)
class FlowFile:
    """One flow's declaration on disk."""

    path: Path
    flow: FlowModel
    packaged: bool  # one of the package's sample flows (read-only for the SDK)


def read_document(path: Path, text: str | None = None) -> dict:
    """A declaration file (or ``text``, its new content) as data; a YAML fault names the file
    and line."""
    try:
        text = path.read_text(encoding="utf-8") if text is None else text
        document = yaml.load(text, Loader=YAML_LOADER) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise DeclarationError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(document, dict):
        raise DeclarationError(f"{path}: a flow declaration is a mapping (type:, attributes:)")
    return document


def is_flow_document(document: dict) -> bool:
    return str(document.get("type", "")).endswith(".FlowComponent")


def is_report_document(document: dict) -> bool:
    return str(document.get("type", "")).endswith(".ReportComponent")


def report_declarations(folder: Path = PACKAGED_FLOWS) -> list[Path]:
    """The reports' declarations under ``folder`` (``<folder>/<report>/defs.yaml``), unvalidated:
    compiling one is what says what is wrong with it."""
    paths = sorted(folder.glob(f"*/{DECLARATION}")) if folder.is_dir() else []
    return [path for path in paths if is_report_document(read_document(path))]


def read_flow(
    path: Path,
    text: str | None = None,
    run: FlowParameters | None = None,
    sets: dict[str, ParameterSet] | None = None,
) -> FlowModel:
    """The flow a declaration holds, its parameters resolved (with a run's choices on top),
    validated; each fault with its file, line and key. ``sets``: the parameter sets it will
    run with, when they are not (yet) the ones beside it (an import's)."""
    text = path.read_text(encoding="utf-8") if text is None else text
    document = read_document(path, text)
    sets = read_sets(path.parents[1]) if sets is None else sets
    try:
        attributes = resolved(document.get("attributes") or {}, sets, run)
    except ParameterError as exc:
        where, _, message = str(exc).partition(": ")
        loc = ["attributes", *(int(p) if p.isdigit() else p for p in where.split("."))]
        raise DeclarationError(f"{path}:{line_of(yaml.compose(text), loc)}: {where}: {message}") from None
    try:
        return FlowModel.model_validate(attributes)
    except ValidationError as exc:
        root = yaml.compose(text)
        lines = []
        for error in exc.errors():
            loc = ("attributes", *error["loc"])
            dotted = ".".join(str(part) for part in error["loc"]) or "attributes"
            lines.append(f"{path}:{line_of(root, loc)}: {dotted}: {error['msg']}")
        raise DeclarationError("\n".join(lines)) from None


def line_of(node: yaml.Node | None, loc: Iterable[object]) -> int:
    """The line (1-based) of the deepest key of ``loc`` the document has."""
    line = 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def flow_files(folder: Path, packaged: bool = False) -> list[FlowFile]:
    """The flows declared under ``folder`` (``<folder>/<flow>/defs.yaml``); none if it is absent."""
    found = []
    sets: dict[str, ParameterSet] | None = None  # the folder's parameter sets, read once
    for path in sorted(folder.glob(f"*/{DECLARATION}")) if folder.is_dir() else []:
        text = path.read_text(encoding="utf-8")
        if is_flow_document(read_document(path, text)):
            if not packaged:
                importable(path.parent)
            sets = read_sets(folder) if sets is None else sets
            found.append(FlowFile(path, read_flow(path, text, sets=sets), packaged))
    return found


def importable(flow_folder: Path) -> None:
    """A client flow's ``Method`` modules sit beside its declaration (``<flow>/<module>.py``,
    named ``module:function``): its folder is where they are imported from. Module names
    are one namespace for the code location: two flows' modules need two names."""
    where = str(flow_folder)
    if where not in sys.path:
        sys.path.append(where)


def check_together(files: list[FlowFile]) -> None:
    """Two flows of one name, or two flows writing one table on different keys, would load
    over each other: refused, both files named."""
    problems = []
    by_name: dict[str, FlowFile] = {}
    by_table: dict[str, FlowFile] = {}
    for file in files:
        flow = file.flow
        if flow.name in by_name:
            problems.append(
                f"flow {flow.name!r} is declared twice: {by_name[flow.name].path} and {file.path}"
            )
        by_name.setdefault(flow.name, file)
        first = by_table.setdefault(flow.target.table, file)
        if first is not file and first.flow.target.key != flow.target.key:
            problems.append(
                f"table {flow.target.table!r} is written on key {first.flow.target.key!r} by "
                f"{first.path} and on key {flow.target.key!r} by {file.path}"
            )
    if problems:
        raise DeclarationError("\n".join(problems))


def flows_of_environment(folders: Iterable[Path], env: str) -> list[FlowFile]:
    """The declared flows an environment runs: those of every environment and its own."""
    return [f for f in declared_flows(folders) if f.flow.environment in (None, env)]


def declared_flows(folders: Iterable[Path]) -> list[FlowFile]:
    """The package's sample flows, then those of ``folders`` (``flows.dirs``), checked together."""
    files = flow_files(PACKAGED_FLOWS, packaged=True)
    for folder in folders:
        files += flow_files(folder)
    check_together(files)
    return files
