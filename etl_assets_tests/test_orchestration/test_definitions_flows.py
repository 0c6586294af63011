"""The companies flow as Dagster sees it: assets, checks, job and its 06:00 schedule."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from etl_assets.definitions import build_definitions
from etl_assets.model.declarations import PACKAGED_FLOWS, read_flow
from etl_assets.model.versions import flow_versions
from etl_assets.settings import load_settings

ROME = ZoneInfo("Europe/Rome")


@pytest.fixture(scope="module")
def defs() -> Iterator[dg.Definitions]:
    # definitions load with an instance, as in dagster (a stale one may linger from other tests)
    with dg.instance_for_test():
        yield build_definitions(load_settings("dev"))


def test_companies_flow_has_four_partitioned_assets_in_its_group(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"companies_extract", "companies_transform", "companies_load", "companies_link"} <= keys
    companies = read_flow(PACKAGED_FLOWS / "companies" / "defs.yaml")
    for step in ("extract", "transform", "load", "link"):
        node = graph.get(dg.AssetKey(f"companies_{step}"))
        assert node.group_name == "companies"
        assert node.partitions_def is not None
        # stale partitions show when the stage's declaration or code changes
        assert node.code_version == flow_versions(companies)[step]
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("companies_transform", "rejected_rows") in checks
    assert ("companies_load", "reconciliation") in checks
    assert ("companies_link", "rejected_rows") in checks


def tick(defs: dg.Definitions, when: datetime) -> list[str]:
    schedule = defs.resolve_schedule_def("companies_schedule")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        result = schedule.evaluate_tick(context)
    return [r.partition_key for r in result.run_requests or []]


def test_daily_schedule_runs_at_six_for_the_partition_of_that_day(defs: dg.Definitions) -> None:
    schedule = defs.resolve_schedule_def("companies_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "Europe/Rome"
    assert tick(defs, datetime(2026, 3, 10, 6, 0, tzinfo=ROME)) == ["2026-03-10"]
    # the DST change (29 March 2026 in Rome) still gives that day's partition
    assert tick(defs, datetime(2026, 3, 29, 6, 0, tzinfo=ROME)) == ["2026-03-29"]


def test_at_0559_the_next_tick_is_0600_the_same_day(defs: dg.Definitions) -> None:
    schedule = defs.resolve_schedule_def("companies_schedule")
    from dagster._utils.schedules import cron_string_iterator

    start = datetime(2026, 3, 10, 5, 59, tzinfo=ROME).timestamp()
    first = next(cron_string_iterator(start, schedule.cron_schedule, "Europe/Rome"))
    assert first == datetime(2026, 3, 10, 6, 0, tzinfo=ROME)
