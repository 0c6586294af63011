"""The version of each stage of a flow: a hash of the part of the declaration the stage reads
and of the source of the code it runs.

A stage's hash is its asset's Dagster ``code_version`` (the UI marks partitions made by another
version stale) and the version the ledger records per partition (``etl_data_objects``), so
the UI and ``etl-assets ledger stale`` agree. A map change makes transform (and load, whose
column types come from the map) a new version and leaves extract as it was. The pipeline
version is the hash of the four, one row of ``etl_data_models`` each.

Modules are named, not imported: the model layer imports nothing of the engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from etl_assets.model.derive import is_template
from etl_assets.model.flow import STEPS, FlowModel
from etl_assets.model.functions import split_path

# The engine modules whose code each stage runs (a change to one is a new version of the stage).
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "extract": (
        "etl_assets.engine.extract",
        "etl_assets.engine.deliveries",
        "etl_assets.engine.drift",
    ),
    "transform": (
        "etl_assets.engine.transform.maps",
        "etl_assets.engine.transform.derived",
        "etl_assets.engine.transform.stage",
        "etl_assets.engine.drift",
    ),
    "load": (
        "etl_assets.engine.load.upsert",
        "etl_assets.engine.load.fits",
        "etl_assets.engine.load.ids",
        "etl_assets.engine.load.refusals",
        "etl_assets.engine.load.response",
        "etl_assets.engine.load.sql",
        "etl_assets.engine.load.postgres.pgcopy",
        "etl_assets.engine.load.postgres.pgbinary",
        "etl_assets.engine.tables",
    ),
    "link": (
        "etl_assets.engine.link.linker",
        "etl_assets.engine.link.parking",
        "etl_assets.engine.tables",
    ),
}
# A table's or a generator's extract runs these too (a file's does not: its version stays)
SOURCE_CODE: dict[str, tuple[str, ...]] = {
    "database": ("etl_assets.engine.sources.database", "etl_assets.engine.sources.records"),
    "python": ("etl_assets.engine.sources.python", "etl_assets.engine.sources.records"),
}
HASH_LENGTH = 12
# The stage a hook runs in: its module is part of that stage's code (on_failure changes no data)
HOOK_STAGES = {"pre_extract": "extract", "post_transform": "transform", "on_load_commit": "load"}


@dataclass(frozen=True)
class FlowVersions:
    """A flow's stage hashes (``extract`` .. ``link``) and the pipeline version they make."""

    stages: dict[str, str]
    pipeline: str

    def __getitem__(self, stage: str) -> str:
        return self.stages[stage]


def flow_versions(flow: FlowModel) -> FlowVersions:
    """The version of each stage of ``flow`` and of the whole pipeline."""
    stages = {step: stage_version(flow, step) for step in STEPS}
    return FlowVersions(stages, _digest(json.dumps(stages, sort_keys=True)))


def stage_version(flow: FlowModel, stage: str) -> str:
    """A hash of what ``stage`` reads of ``flow`` and of the source of the code it runs."""
    modules = STAGE_CODE[stage] + (method_modules(flow) if stage == "transform" else ())
    if stage == "extract" and flow.source.kind != "file":  # the generator's module is extract's code
        modules += SOURCE_CODE[flow.source.kind] + (
            (hook_module(flow.source.python),) if flow.source.python else ()
        )
    hooks = {name: path for name, path in flow.hooks.items() if HOOK_STAGES.get(name) == stage}
    modules += tuple(sorted({hook_module(path) for path in hooks.values()}))
    declared = json.dumps({**declaration_part(flow, stage), "hooks": hooks}, sort_keys=True, default=str)
    code = "".join(f"{name}\0{module_source_digest(name)}\n" for name in modules)
    return _digest(f"{stage}\n{declared}\n{code}")


def declaration_part(flow: FlowModel, stage: str) -> dict[str, Any]:
    """The part of the declaration a stage uses (a schedule or a limit is no stage's version)."""
    data = flow.model_dump(mode="json")
    if stage == "extract":
        return {k: data[k] for k in ("name", "source", "partitions", "schema_drift")}
    if stage == "transform":
        return {"map": data["map"], "key": data["target"]["key"], "dedupe": data["dedupe"]}
    if stage == "load":
        # the target's columns and what the upsert compares: types, not patterns
        columns = {
            name: {k: field[k] for k in ("type", "scale", "max_length")}
            for name, field in data["map"].items()
        }
        links = [link["column"] for link in data["links"]]
        return {
            "target": data["target"],
            "columns": columns,
            "latest_by": data["dedupe"]["latest_by"],
            "links": links,
        }
    return {"target": data["target"], "links": data["links"]}


def method_modules(flow: FlowModel) -> tuple[str, ...]:
    """The modules of the functions the flow's ``Method`` fields and derive Methods name, sorted."""
    paths = [spec.method for spec in flow.map.values() if spec.method]
    paths += [spec.derive for spec in flow.map.values() if spec.derive and not is_template(spec.derive)]
    return tuple(sorted({split_path(path)[0] for path in paths}))


def hook_module(path: str) -> str:
    """The module of a hook's dotted path: ``module:function`` or ``module.function``."""
    return path.partition(":")[0] if ":" in path else path.rpartition(".")[0]


def module_source_digest(name: str) -> str:
    """The sha256 of a module's source file, found without importing the module; a module
    that cannot be found hashes as "missing" (compile reports it). Read again when the file
    changed, so a reloaded code location sees an edited Method module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py") or not os.path.isfile(origin):
        return "missing"
    found = os.stat(origin)
    return _file_digest(origin, found.st_mtime_ns, found.st_size)


@cache
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]
