"""Lineage as the UI shows it: edges across flows derived from the declarations, and each
load's column schema and column lineage from its map."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from etl_assets.definitions import build_definitions
from etl_assets.model.declarations import PACKAGED_FLOWS, read_flow
from etl_assets.model.report import ReportModel
from etl_assets.orchestration.lineage import TableLoaders
from etl_assets.settings import load_settings

STEPS = ("extract", "transform", "load", "link")


@pytest.fixture(scope="module")
def graph() -> Iterator[dg.AssetGraph]:
    with dg.instance_for_test():
        yield build_definitions(load_settings("dev")).resolve_asset_graph()


def parents(graph: dg.AssetGraph, key: str) -> set[str]:
    return {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys}


def selected(graph: dg.AssetGraph, selection: str) -> set[str]:
    return {k.to_user_string() for k in dg.AssetSelection.from_string(selection).resolve(graph)}


def test_a_link_to_a_table_another_flow_loads_depends_on_that_load(graph: dg.AssetGraph) -> None:
    assert parents(graph, "offers_link") == {"offers_load", "companies_load"}
    # companies links to its own table: no edge beyond its own chain
    assert parents(graph, "companies_link") == {"companies_load"}


def test_a_report_depends_on_the_last_step_of_the_flows_its_query_reads(graph: dg.AssetGraph) -> None:
    assert parents(graph, "kpi_report_load") == {"companies_link", "offers_link"}
    assert parents(graph, "kpi_report_export") == {"kpi_report_load"}


def test_plus_selects_the_direct_deps_and_star_every_ancestor(graph: dg.AssetGraph) -> None:
    assert selected(graph, "+kpi_report_load") == {"kpi_report_load", "companies_link", "offers_link"}
    assert selected(graph, "*kpi_report_load") == {
        "kpi_report_load",
        *(f"{flow}_{step}" for flow in ("companies", "offers") for step in STEPS),
    }


def test_cross_flow_deps_map_time_windows_of_different_cadences(graph: dg.AssetGraph) -> None:
    """A 5-minute offers partition reads the companies day it falls in; a report month reads
    the days (and the five-minute partitions) of the month that exist."""
    offers, companies = dg.AssetKey("offers_link"), dg.AssetKey("companies_load")
    offers_partitions = graph.get(offers).partitions_def
    # noon: a business-hours window (the day's last one, 18:55, lasts until the next
    # morning's first tick and so reads two companies days; the last key depends on the clock)
    key = next(k for k in reversed(offers_partitions.get_partition_keys()) if k.endswith("-12:00"))
    upstream = graph.get_parent_partition_keys_for_child(key, companies, offers)
    assert upstream.partitions_subset.get_partition_keys() == [key[:10]]
    month = graph.get_parent_partition_keys_for_child(
        "2025-03-01", dg.AssetKey("companies_link"), dg.AssetKey("kpi_report_load")
    )
    days = sorted(month.partitions_subset.get_partition_keys())
    assert (days[0], days[-1], len(days)) == ("2025-03-01", "2025-03-31", 31)
    assert not month.required_but_nonexistent_subset.get_partition_keys()


def test_the_load_publishes_the_target_columns_and_their_lineage(graph: dg.AssetGraph) -> None:
    flow = read_flow(PACKAGED_FLOWS / "companies" / "defs.yaml")
    metadata = graph.get(dg.AssetKey("companies_load")).metadata
    assert metadata["dagster/table_name"] == "accounts"
    schema = {c.name: c.type for c in metadata["dagster/column_schema"].columns}
    assert list(schema) == [
        "id",
        *flow.map,
        "parent_account_id",
        "etl_row_hash",
        "etl_source_file",
        "etl_source_line",
        "etl_loaded_at",
        "etl_object_id",
    ]
    assert (schema["external_id"], schema["revenue"], schema["employees"]) == (
        "TEXT",
        "NUMERIC(18, 2)",
        "BIGINT",
    )
    assert (schema["founded"], schema["updated_at"]) == ("DATE", "TIMESTAMP WITHOUT TIME ZONE")
    lineage = metadata["dagster/column_lineage"].deps_by_column
    extract = dg.AssetKey("companies_extract")
    assert {column: [(d.asset_key, d.column_name) for d in deps] for column, deps in lineage.items()} == {
        name: [(extract, flow.source_column(name))] for name in flow.map
    }
    assert lineage["external_id"][0].column_name == "COMPANY_ID"  # source: COMPANY_ID in the map
    assert lineage["vat_code"][0].column_name == "VAT_CODE"  # the name in upper case


def test_a_link_column_comes_from_the_linked_tables_match_column(graph: dg.AssetGraph) -> None:
    lineage = graph.get(dg.AssetKey("offers_link")).metadata["dagster/column_lineage"].deps_by_column
    assert {(d.asset_key.to_user_string(), d.column_name) for d in lineage["account_id"]} == {
        ("offers_load", "company_vat"),
        ("companies_load", "vat_code"),
    }
    source = graph.get(dg.AssetKey("offers_extract")).metadata["dagster/column_schema"]
    assert [c.name for c in source.columns][:2] == ["OFFER_ID", "COMPANY_VAT"]


def test_tables_a_report_reads_outside_the_default_schema_or_unloaded_are_no_edges() -> None:
    flow = read_flow(PACKAGED_FLOWS / "offers" / "defs.yaml")
    report = ReportModel.model_validate(
        {
            "name": "r",
            "query": "with x as (select 1) select * from audit.offers, x, public.offers o "
            "join currencies c on c.code = o.currency where o.created_at >= :start and o.created_at < :end",
            "table": "r",
            "export": {"file": "r", "chart": {"title": "t", "category": "a", "value": "b"}},
        }
    )
    deps = TableLoaders.of([flow]).report_deps(report)
    assert [d.asset_key.to_user_string() for d in deps] == ["offers_link"]
