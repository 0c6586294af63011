"""The code location: the selected environment's resources and every flow's definitions.

The environment is read when Dagster loads the definitions (not at import time), from
ETL_ENV, so the same code serves dev, test and prod. This is the one module below the CLI
that reads the settings: it hands each part what it needs. Flows come from the package's
``defs/<flow>/defs.yaml`` (the samples) and from the folders ``flows.dirs`` names (a client's
flows, outside the package): a flow added or changed there shows after "Reload definitions".
"""

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from etl_assets.model.declarations import PACKAGED_FLOWS, flows_of_environment
from etl_assets.orchestration import (
    ComponentSettings,
    TableLoaders,
    backfill_emails_sensor,
    build_component_defs,
    build_flow_file_defs,
    housekeeping_defs,
    resubmit_defs,
    test_connections_job,
)
from etl_assets.orchestration.executor import executor_for
from etl_assets.orchestration.run_scope import flows_to_build
from etl_assets.resources import build_resources
from etl_assets.settings import Settings
from etl_assets.settings.runtime import current_settings

# `dg launch --assets group:companies` (and `dagster asset materialize --select group:...`)
# parse the group through a beta parameter of Dagster's own: a warning for Dagster's
# developers, not for the operator who typed the command.
warnings.filterwarnings(
    "ignore",
    message="Parameter `include_sources` of function `AssetSelection.groups`",
    category=dg.BetaWarning,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFS_DIR = PACKAGED_FLOWS


def build_definitions(settings: Settings, argv: Sequence[str] = ()) -> dg.Definitions:
    """Everything Dagster shows for one environment; for a process whose command line
    (``argv``) runs some flows, the flows of ``flows.dirs`` it needs only (``run_scope``: the
    package's samples are always built)."""
    files = flows_of_environment(settings.flow_dirs, settings.env)
    loaders = TableLoaders.of(f.flow for f in files)
    components = ComponentSettings(
        timezone=settings.timezone,
        max_park_age=settings.max_park_age,
        report_recipients=settings.mail.report_recipients,
        loaders=loaders,
        queues=settings.executor.queues if settings.executor.kind == "celery" else {},
    )
    needed = flows_to_build(argv, [f.flow for f in files], loaders)
    client = [f for f in files if not f.packaged and (needed is None or f.flow.name in needed)]
    return dg.Definitions.merge(
        build_component_defs(PROJECT_ROOT, DEFS_DIR, components),
        build_flow_file_defs(client, components),
        housekeeping_defs([f.flow for f in files], settings.housekeeping, settings.timezone),
        resubmit_defs([f.flow for f in files]),
        dg.Definitions(
            jobs=[test_connections_job],
            sensors=[backfill_emails_sensor()],
            resources=build_resources(settings),
            executor=executor_for(settings),
        ),
    )


_built: dict[tuple, dg.Definitions] = {}


@dg.definitions
def defs() -> dg.Definitions:
    """Built once per settings and flow files: Dagster asks again for every run and step it
    reconstructs (six times in one CLI materialization, ~0.7 s each here)."""
    settings = current_settings()
    # <flow>/defs.yaml and parameters/<set>.yaml, one level down: not the revisions, which
    # grow with every save
    files = [p for d in (DEFS_DIR, *settings.flow_dirs) for p in d.glob("*/*.yaml")]
    declared = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in files))
    key = (settings.model_dump_json(), declared)  # content, not identity: ids get reused
    if key not in _built:
        _built.clear()
        _built[key] = build_definitions(settings, sys.argv)
    return _built[key]
