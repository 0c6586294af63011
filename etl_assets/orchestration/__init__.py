"""The Dagster layer: the flow and report components, the factory that wraps the engine's
steps in partitioned assets and checks, the jobs, schedules and sensors, and the housekeeping
and test-connections jobs. It holds no step logic (that is ``etl_assets.engine``).

The component types are named from here in ``defs/<flow>/defs.yaml``:
``type: etl_assets.orchestration.FlowComponent`` (or ``ReportComponent``).
"""

from etl_assets.orchestration.batches import backfill_emails_sensor
from etl_assets.orchestration.component_tree import ComponentSettings, build_component_defs
from etl_assets.orchestration.connections_job import test_connections_job
from etl_assets.orchestration.flow_component import FlowComponent, build_flow_file_defs
from etl_assets.orchestration.housekeeping_job import housekeeping_defs
from etl_assets.orchestration.lineage import TableLoaders
from etl_assets.orchestration.report_component import ReportComponent
from etl_assets.orchestration.resubmission import resubmit_defs

__all__ = [
    "ComponentSettings",
    "FlowComponent",
    "ReportComponent",
    "TableLoaders",
    "backfill_emails_sensor",
    "build_component_defs",
    "housekeeping_defs",
    "resubmit_defs",
    "build_flow_file_defs",
    "test_connections_job",
]
