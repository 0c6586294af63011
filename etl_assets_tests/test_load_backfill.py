"""Load (issue 19, point 8): a 60-day companies backfill into PostgreSQL, launched as the UI
launches it, while the offers file sensor keeps requesting runs.

The scenario (``scenarios/backfill_load.py``) runs once for the module, on the real webserver,
daemon, code servers and run workers (no mocks), with the shipped instance (run queue: two runs
at a time, one per partition or chunk) and a fresh database on the project's private PostgreSQL
as the target (environment ``test``: files from ETL_HOME/import, e-mails to the outbox, the
password encrypted). Each test states one claim about it:

- every one of the 60 partitions lands exactly once: one ASSET_MATERIALIZATION of
  ``companies_load`` (and of each other step) per partition in the whole event log, none
  missing, none outside the backfill; the Partitions tab shows all 60 materialized;
- the target holds exactly what the files say: ``accounts`` has one row per key, and as many
  keys as the 60 files hold less those whose every row fails the map, computed from the files
  with csv and re (``scenarios/expected.py``), not by the product, although each day re-sends
  companies of the day before (keys shared between partitions);
- the sensor is not held up by the backfill: an offers file arrives every 4 s throughout, and
  the sensor requests runs for them during the backfill;
- nothing fails: the backfill ends COMPLETED_SUCCESS, no run ends otherwise than SUCCESS, no
  sensor tick fails (runs a schedule starts meanwhile are the wall clock's, not the scenario's:
  listed in the figures, left out of the claims; ``companies_schedule`` at 06:00 asks for
  today's file, which the scenario does not write);
- offers runs requested during the backfill also succeed during it (not yet: see the test);
- each key holds its latest row (not yet: chunks run side by side, so the first day of a chunk
  can load before the last day of the chunk before it, whose older row then overwrites it).

It measures, and prints (``pytest -s``) and puts in every assertion message: the backfill's
wall time from launch to final status, and the peak memory of the server's whole process tree
(the sum of RSS of webserver, daemon, code servers and run workers, sampled every 0.2 s, and the
largest single process). The same scenario at any size: ``python -m benchmarks.backfill_load``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from etl_assets_tests.scenarios.backfill_load import (
    ASSETS,
    Outcome,
    Scenario,
    run_backfill_load,
    scenario_env,
)
from etl_assets_tests.services import PostgresServer

# 200 companies a day (+3 re-sent): the module takes about 3.5 minutes on the 2-core machine.
SCENARIO = Scenario(days=60, rows=200, resend=3, offers_every_s=4.0, settle_offers=3, timeout_s=420.0)
MIN_OFFERS_RUNS = 3


@pytest.fixture(scope="module")
def outcome(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    """The scenario, once for the module's claims: its own database on the private cluster, its
    own key (``init_key``, as ``etl-assets init-key`` makes one) and settings file."""
    base = tmp_path_factory.mktemp("load_backfill")
    env, database = scenario_env(base, postgres)
    try:
        result = run_backfill_load(
            SCENARIO, base / "etl_home", base / "dagster_home", env, postgres.dsn(database)
        )
        print(f"\nload backfill: {result.describe()}")
        yield result
    finally:
        postgres.drop_database(database)


def test_the_backfill_completes_with_each_partition_materialized_exactly_once(outcome: Outcome) -> None:
    """One ASSET_MATERIALIZATION per step and partition in the whole event log; none missing."""
    figures, keys = outcome.describe(), SCENARIO.keys
    assert outcome.backfill["status"] == "COMPLETED_SUCCESS", f"{outcome.backfill}\n{figures}"
    assert all(a["numPartitionsFailed"] == 0 for a in outcome.backfill["assets"].values()), figures
    for asset in ASSETS:
        counts = outcome.materializations[asset]
        twice = {k: n for k, n in counts.items() if n != 1}
        runs = {k: outcome.materializing_runs.get(k) for k in twice} if asset == "companies_load" else ""
        assert not twice, f"{asset}: partitions materialized more than once: {twice} {runs}\n{figures}"
        assert sorted(counts) == keys, (
            f"{asset}: missing {sorted(set(keys) - set(counts))}, outside the backfill "
            f"{sorted(set(counts) - set(keys))}\n{figures}"
        )
    assert {k for k, v in outcome.load_status.items() if v == "materialized"} == set(keys), figures
    assert outcome.partition_loads == len(keys), figures


def test_accounts_hold_exactly_the_keys_the_files_say(outcome: Outcome) -> None:
    """count(*) = count(distinct external_id) = keys in the files less those the map rejects."""
    rows, distinct = outcome.accounts
    expected = outcome.expected
    assert rows == distinct == len(expected.keys_landing), (
        f"accounts: {rows} rows, {distinct} keys; expected {len(expected.keys_landing)} keys "
        f"({len(expected.keys_in_files)} in the files less {len(expected.keys_lost)}: "
        f"{sorted(expected.keys_lost)[:8]}...)\n{outcome.describe()}"
    )


def test_the_offers_sensor_keeps_requesting_runs_during_the_backfill(outcome: Outcome) -> None:
    """The sensor ticks on beside the backfill: a run per file, and the first ones succeed."""
    figures, offers = outcome.describe(), outcome.offers_runs
    assert len(offers) >= MIN_OFFERS_RUNS, f"the sensor requested {len(offers)} offers runs\n{figures}"
    first = offers[: SCENARIO.settle_offers]
    assert [r.status for r in first] == ["SUCCESS"] * len(first), f"{[(r.run_id, r.status) for r in first]}"
    failed_ticks = [t for t in outcome.sensor_ticks if t["status"] == "FAILURE"]
    assert not failed_ticks, failed_ticks


def test_nothing_failed(outcome: Outcome) -> None:
    """No run of the scenario ended otherwise than SUCCESS (runs still queued at the end are not
    counted: offers files keep arriving faster than runs start)."""
    failed = [(r.run_id, r.job, r.status) for r in outcome.failed_runs]
    assert not failed, f"{failed}\n{outcome.describe()}"


@pytest.mark.xfail(
    strict=False,
    reason="a slot is kept for them (backfills take 2 of 3) and they carry dagster/priority, but the "
    "daemon launches one run at a time and a launch takes 11-19 s here: in a one-minute backfill "
    "0-1 offers runs finish before its last partition, not 3 (seen in this session's runs)",
)
def test_offers_runs_succeed_while_the_backfill_runs(outcome: Outcome) -> None:
    """A 5-minute flow is not held up for the length of a backfill: offers runs requested during
    it also succeed before its last partition lands."""
    done = outcome.offers_succeeded_while_landing
    assert len(done) >= MIN_OFFERS_RUNS, (
        f"{len(done)} offers runs succeeded before the backfill's last partition landed\n{outcome.describe()}"
    )


def test_each_key_holds_its_latest_row(outcome: Outcome) -> None:
    """A company re-sent the next day keeps the next day's version, whichever day loaded last."""
    assert not outcome.stale_keys, (
        f"{len(outcome.stale_keys)} keys hold an older day's row: {outcome.stale_keys[:10]}\n{outcome.describe()}"
    )
