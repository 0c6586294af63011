"""Lineage across flows: which flow loads which table, and the asset deps that follow from it.

Each flow is built alone, so by itself the asset graph shows every flow and report as an
island. The declarations say more: a link reads the table another flow loads (offers link to
``accounts``, which companies loads), and a report's query reads the tables flows load. Those
are edges of the asset graph, derived here from the declarations (never written by hand), so
the UI's lineage shows what feeds what and ``+kpi_report_load`` selects the steps it reads.

A dep does not make a run wait for its upstream (Dagster runs what it is asked to): the edges
tell the UI, the asset selection and a backfill over both ends which comes first. Flows and
reports have different partitions (daily, five-minute, monthly): a partition depends on the
upstream partitions its time window covers, and an upstream partition that does not exist
(before its start, outside a five-minute flow's window) is no fault.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from etl_assets.model.flow import FlowModel
from etl_assets.model.report import ReportModel
from etl_assets.model.sql_names import tables_named

# One partition's window against another's, whatever their cadence. The parameter is beta in
# Dagster 1.13: a warning for Dagster's developers, not for the operator loading the location.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    CROSS_FLOW_MAPPING = dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)


def ready_step(flow: FlowModel) -> str:
    """The flow's last step that writes its table: a reader of the table waits for it."""
    return "link" if flow.links else "load"


@dataclass(frozen=True)
class TableLoaders:
    """The flows of the code location by the table each loads (two flows may load one table
    on one key: ``declarations.check_together``)."""

    by_table: dict[str, tuple[FlowModel, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, flows: Iterable[FlowModel]) -> TableLoaders:
        by_table: dict[str, tuple[FlowModel, ...]] = {}
        for flow in flows:
            by_table[flow.target.table] = (*by_table.get(flow.target.table, ()), flow)
        return cls(by_table)

    def loading(self, table: str) -> tuple[FlowModel, ...]:
        return self.by_table.get(table, ())

    def link_deps(self, flow: FlowModel) -> list[dg.AssetDep]:
        """The link step's deps beyond its own load: the load of every other flow loading a
        table it links to (its ``match`` column comes from there)."""
        keys = [
            dg.AssetKey(other.asset_name("load"))
            for link in flow.links
            for other in self.loading(link.table)
            if other.name != flow.name
        ]
        return [dg.AssetDep(key, partition_mapping=CROSS_FLOW_MAPPING) for key in dict.fromkeys(keys)]

    def report_deps(self, report: ReportModel) -> list[dg.AssetDep]:
        """The report's deps: the last step of each flow loading a table its query reads."""
        keys = [
            dg.AssetKey(flow.asset_name(ready_step(flow)))
            for table in tables_named(report.query)
            if table.in_default_schema
            for flow in self.loading(table.name)
        ]
        return [dg.AssetDep(key, partition_mapping=CROSS_FLOW_MAPPING) for key in dict.fromkeys(keys)]
