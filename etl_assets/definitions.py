"""The code location: the selected environment's resources and every flow's definitions.

The environment is read when Dagster loads the definitions (not at import time), from
ETL_ENV, so the same code serves dev, test and prod.
"""

from __future__ import annotations

import dagster as dg

from etl_assets.core.connections_job import test_connections_job
from etl_assets.resources import build_resources
from etl_assets.settings import Settings, load_settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """Everything Dagster shows for one environment."""
    return dg.Definitions(
        jobs=[test_connections_job],
        resources=build_resources(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
