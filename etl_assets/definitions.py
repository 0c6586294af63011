"""The code location: the selected environment's resources and every flow's definitions.

The environment is read when Dagster loads the definitions (not at import time), from
ETL_ENV, so the same code serves dev, test and prod. Flows come from ``defs/<flow>/defs.yaml``.
"""

import warnings
from pathlib import Path

import dagster as dg

from etl_assets.core.component import load_flow_models
from etl_assets.core.connections_job import test_connections_job
from etl_assets.core.housekeeping_job import housekeeping_defs
from etl_assets.resources import build_resources
from etl_assets.settings import Settings
from etl_assets.settings.runtime import current_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFS_DIR = Path(__file__).resolve().parent / "defs"


def load_flows() -> dg.Definitions:
    """The components under ``defs/`` with their component tree, as ``load_from_defs_folder``
    builds them, less its catalogue of every installed component type: a JSON schema of each,
    rendered on every code-location load (0.5 s here, a tenth of a one-partition CLI run)
    for the component authoring docs, which operators of this location do not use."""
    with warnings.catch_warnings():  # as quiet as load_from_defs_folder about beta APIs
        for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):
            warnings.simplefilter("ignore", category)
        tree = dg.ComponentTree.for_project(path_within_project=PROJECT_ROOT)
        return dg.Definitions.merge(tree.build_defs(DEFS_DIR), dg.Definitions(component_tree=tree))


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything Dagster shows for one environment."""
    flows = load_flows()
    models = load_flow_models(DEFS_DIR)
    return dg.Definitions.merge(
        flows,
        housekeeping_defs(models, settings.housekeeping, settings.timezone),
        dg.Definitions(
            jobs=[test_connections_job],
            resources=build_resources(settings),
            executor=dg.in_process_executor,
        ),
    )


_built: dict[tuple, dg.Definitions] = {}


@dg.definitions
def defs() -> dg.Definitions:
    """Built once per settings and flow files: Dagster asks again for every run and step it
    reconstructs (six times in one CLI materialization, ~0.7 s each here)."""
    settings = current_settings()
    flow_files = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in DEFS_DIR.rglob("*.yaml")))
    key = (settings.model_dump_json(), flow_files)  # content, not identity: ids get reused
    if key not in _built:
        _built.clear()
        _built[key] = build_definitions(settings)
    return _built[key]
