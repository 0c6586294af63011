"""Issue 21's registry and ledger on real PostgreSQL and real Dagster runs: each partition's
delivery and stages recorded against the files on disk and the run in Dagster's instance, a row
of the target traced to the delivery that last wrote it, a new model version when (and only
when) a map changes, and the partitions an older version made listed stale."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import pytest

from etl_assets import cli
from etl_assets.definitions import build_definitions
from etl_assets.engine.ledger.show import StalePartition, StaleStage, stale_partitions
from etl_assets.model.versions import flow_versions
from etl_assets.resources import build_resources
from etl_assets.sdk import Project
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv, materializations
from etl_assets_tests.test_flows.test_companies import BAD, FILE, GOOD

PARTITION = "2026-01-15"
STAGES = ["extract", "transform", "load", "link"]


def objects(env: FlowEnv, flow: str = "companies") -> list[tuple]:
    return env.query(
        "select id, partition_key, checksum, name, size, rows, raw_path from etl_data_objects "
        f"where flow = '{flow}' order by id"
    )


def stage_rows(env: FlowEnv, flow: str = "companies") -> list[tuple]:
    return env.query(
        "select stage, run_id, object_id, stage_version, pipeline_version, staged_path, rows_in, rows_out, "
        "rows_rejected, status, error_file, started_at <= finished_at from etl_data_object_stages "
        f"where flow = '{flow}' order by started_at"
    )


def target_rows(env: FlowEnv) -> dict[str, tuple]:
    rows = env.query("select external_id, etl_object_id, etl_loaded_at, name from accounts")
    return {row[0]: row[1:] for row in rows}


def test_a_partitions_ledger_matches_its_files_its_run_and_the_target(
    flow_env: FlowEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    flow_env.put(FILE, companies_csv(*GOOD, *BAD))
    first = flow_env.run(PARTITION)  # rejected rows in transform and link: warnings
    assert materializations(first, "companies_link")

    # the delivery: the kept raw file's checksum, name, size and rows
    [(object_id, key, checksum, name, size, rows, raw_path)] = objects(flow_env)
    kept = Path(raw_path)
    assert (key, name) == (PARTITION, FILE)
    assert checksum == hashlib.sha256(kept.read_bytes()).hexdigest()
    assert size == kept.stat().st_size
    assert rows == len(GOOD) + len(BAD)

    # a row per stage, of this run, with its current version; staged files on disk
    flow = Project.open(env="test").flows.get("companies").model
    versions = flow_versions(flow)
    found = stage_rows(flow_env)
    assert [r[0] for r in found] == STAGES
    assert {r[1] for r in found} == {first.run_id}
    assert flow_env.instance.get_run_by_id(first.run_id) is not None
    assert {r[2] for r in found} == {object_id}
    assert [r[3] for r in found] == [versions[s] for s in STAGES]
    assert {r[4] for r in found} == {versions.pipeline}
    assert all(Path(r[5]).is_file() for r in found)
    assert all(r[11] for r in found)
    by_stage = {r[0]: r for r in found}
    assert by_stage["extract"][6:9] == (rows, rows, 0)
    transform = materializations(first, "companies_transform")[0].metadata
    assert by_stage["transform"][6:9] == (rows, transform["rows_out"].value, transform["rejected"].value)
    assert transform["rejected"].value > 0
    assert by_stage["transform"][10] == str(flow_env.error_file(PARTITION, "transform"))
    assert by_stage["load"][6] == by_stage["transform"][7]
    assert by_stage["link"][8] == 1  # the unknown parent
    # the UI shows the stage's version on each materialization; Dagster's code version agrees
    materialized = materializations(first, "companies_transform")[0]
    assert materialized.metadata["stage_version"].value == versions["transform"]
    assert materialized.metadata["object_id"].value == object_id

    # every target row points at the delivery that wrote it
    loaded = target_rows(flow_env)
    assert {row[0] for row in loaded.values()} == {object_id}
    # the registry: one version of companies
    assert flow_env.query("select pipeline_version, transform_version from etl_data_models") == [
        (versions.pipeline, versions["transform"])
    ]

    # the same delivery again: the same object, rows untouched, a stage row per stage of the new run
    again = flow_env.run(PARTITION)
    assert objects(flow_env) == [(object_id, key, checksum, name, size, rows, raw_path)]
    assert target_rows(flow_env) == loaded
    assert [(r[0], r[1]) for r in stage_rows(flow_env)[4:]] == [(s, again.run_id) for s in STAGES]
    assert len(flow_env.query("select * from etl_data_models")) == 1

    # a corrected delivery: a new object; only the row it changed points at it
    renamed = GOOD[2].replace("Bianchi S.n.c.", "Bianchi & Figli S.n.c.")
    flow_env.put(FILE, companies_csv(GOOD[0], GOOD[1], renamed))
    flow_env.run(PARTITION)
    [(_, *first_object), (new_id, *_)] = objects(flow_env)
    assert first_object[1] == checksum
    # the first delivery is still kept, under its content: its object's file holds its bytes
    assert hashlib.sha256(Path(first_object[5]).read_bytes()).hexdigest() == checksum
    after = target_rows(flow_env)
    assert after["C3"][0] == new_id
    assert {after[k][0] for k in ("C1", "C2")} == {object_id}

    # the CLI: the partition's objects and their stages, readable
    assert cli.main(["ledger", "show", "companies", PARTITION]) == cli.EXIT_OK
    shown = capsys.readouterr().out
    assert f"object {new_id}  partition {PARTITION}  {FILE}" in shown
    assert f"object {object_id}  partition {PARTITION}" in shown
    assert again.run_id in shown and versions["load"] in shown
    assert cli.main(["ledger", "stale", "companies"]) == cli.EXIT_OK
    assert capsys.readouterr().out.strip() == "companies: no stale partitions"
    assert cli.main(["ledger", "show", "nosuchflow"]) == cli.EXIT_USAGE


def code_versions(flow: str) -> dict[str, str]:
    graph = build_definitions(load_settings("test")).resolve_asset_graph()
    return {s: graph.get(dg.AssetKey(f"{flow}_{s}")).code_version for s in STAGES}


def test_a_map_change_is_a_new_version_and_the_older_partitions_are_stale(
    flow_env: FlowEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    project = Project.open(env="test")
    flow = project.create_flow("suppliers", template="companies")
    folder = flow.model.source.folder
    days = ["2026-02-01", "2026-02-02", "2026-02-03"]
    for day in days:
        flow_env.sshd.put_file(f"{folder}/suppliers_{day.replace('-', '')}.csv", companies_csv(*GOOD))
    for day in days:
        assert flow_env.run(day, job="suppliers_job").success
    engine = build_resources(load_settings("test"))["database"].engine()
    old = flow_versions(project.flows.get("suppliers").model)
    before = code_versions("suppliers")
    assert before == old.stages
    assert stale_partitions(engine, project.flows.get("suppliers").model) == []

    # a run of the same model adds no version
    assert flow_env.run(days[0], job="suppliers_job").success
    registry = "select pipeline_version from etl_data_models where flow = 'suppliers' order by first_seen"
    assert flow_env.query(registry) == [(old.pipeline,)]

    flow = project.flows.get("suppliers")
    flow.map["city"].pattern = "^[A-Za-z' ]+$"  # a rule of the map: the transform's, no column changes
    project.update_flow(flow)
    new = flow_versions(project.flows.get("suppliers").model)
    after = code_versions("suppliers")
    assert after["transform"] != before["transform"]
    assert {s: after[s] for s in ("extract", "load", "link")} == {
        s: before[s] for s in ("extract", "load", "link")
    }
    assert after == new.stages

    assert flow_env.run(days[2], job="suppliers_job").success
    assert flow_env.query(registry) == [(old.pipeline,), (new.pipeline,)]
    stale = stale_partitions(engine, project.flows.get("suppliers").model)
    assert stale == [
        StalePartition(
            day, [StaleStage("transform", old["transform"], new["transform"], stale[i].stages[0].run_id)]
        )
        for i, day in enumerate(days[:2])
    ]
    assert cli.main(["ledger", "stale", "suppliers"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "suppliers: 2 stale partition(s)" in out
    assert f"  {days[0]}  transform {old['transform']} -> {new['transform']}" in out
    assert days[2] not in out

    # reprocessing runs exactly the stale ones, from transform, and leaves the third alone
    def rows_of(day: str) -> list[tuple]:
        return flow_env.query(
            "select stage, run_id, stage_version from etl_data_object_stages where flow = 'suppliers' "
            f"and partition_key = '{day}' order by started_at"
        )

    def ui_stale(day: str) -> bool:
        """What the UI marks: Dagster's own staleness of the transform asset's partition."""
        return flow_env.stale_status("suppliers_transform", day) == "STALE"

    assert [ui_stale(day) for day in days] == [True, True, False]  # the UI agrees with the ledger
    # and the webserver's GraphQL, which the UI's asset page reads, says so
    assert flow_env.webserver_stale_status("suppliers_transform", days) == ["STALE", "STALE", "FRESH"]
    untouched = rows_of(days[2])
    extracts = {day: [r for r in rows_of(day) if r[0] == "extract"] for day in days[:2]}
    assert cli.main(["ledger", "reprocess", "suppliers", "--dry-run"]) == cli.EXIT_OK
    assert capsys.readouterr().out.splitlines() == [f"  {day}: would run from transform" for day in days[:2]]
    assert cli.main(["ledger", "reprocess", "suppliers"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "reprocess of suppliers: 2 stale partition(s)" in out
    for day in days[:2]:
        assert f"  {day}: from transform: ok (run " in out
        rows = rows_of(day)
        assert [r for r in rows if r[0] == "extract"] == extracts[day]  # the source was not read again
        assert [(stage, version) for stage, _, version in rows[-3:]] == [
            (stage, new[stage]) for stage in ("transform", "load", "link")
        ]
    assert rows_of(days[2]) == untouched
    assert [ui_stale(day) for day in days] == [False, False, False]
    assert stale_partitions(engine, project.flows.get("suppliers").model) == []
    assert cli.main(["ledger", "reprocess", "suppliers"]) == cli.EXIT_OK
    assert "no stale partition" in capsys.readouterr().out


def test_a_stopped_partition_and_a_failed_extract_say_so_in_the_ledger(flow_env: FlowEnv) -> None:
    bad_dates = [
        f"D{i};IT1000000000{i};Ditta {i};;;;IT;;;;;;32/01/2020;14/01/2026 09:00:00" for i in range(11)
    ]
    flow_env.put(FILE, companies_csv(GOOD[0], *bad_dates))
    blocked = flow_env.run(PARTITION)
    assert not blocked.success
    found = flow_env.query(
        "select stage, status, error, rows_rejected from etl_data_object_stages where run_id = "
        f"'{blocked.run_id}' order by started_at"
    )
    assert [(stage, status) for stage, status, _, _ in found] == [
        ("extract", "succeeded"),
        ("transform", "stopped"),
    ]
    assert found[1][2].startswith("transform check rejected_rows") and found[1][3] == 11

    missing = flow_env.run("2026-01-16")  # no file that day
    assert not missing.success
    [(stage, status, error, object_id)] = flow_env.query(
        "select stage, status, error, object_id from etl_data_object_stages where run_id = "
        f"'{missing.run_id}'"
    )
    assert (stage, status, object_id) == ("extract", "failed", None)
    assert "companies_20260116.csv: missing" in error


def test_runs_starting_side_by_side_on_a_new_database_create_the_ledger_once(flow_env: FlowEnv) -> None:
    """Two transactions meeting no ledger: the second waits for the first's tables, no error."""
    import threading

    from etl_assets.engine.ledger.tables import ensure_ledger

    engine = build_resources(load_settings("test"))["database"].engine()
    first = engine.connect()
    transaction = first.begin()
    ensure_ledger(first)  # created, not committed yet
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with engine.begin() as conn:
                ensure_ledger(conn)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    waiting = threading.Thread(target=second)
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # held by the first creator's lock
    transaction.commit()
    first.close()
    waiting.join(10)
    assert not waiting.is_alive() and errors == []
    assert len(flow_env.query("select * from etl_data_models")) == 0


def test_a_ledger_made_before_kind_and_origin_gets_them(flow_env: FlowEnv) -> None:
    """A database whose etl_data_objects predates the columns: added on the next write, its
    objects deliveries; the run's object found as before."""
    from etl_assets.engine.ledger import tables

    flow_env.put(FILE, companies_csv(*GOOD))
    assert flow_env.run(PARTITION).success
    flow_env.execute("alter table etl_data_objects drop column kind, drop column origin_object_id")
    tables._MIGRATED.clear()  # a process that has not seen this database yet
    [(object_id, *_)] = objects(flow_env)
    again = flow_env.run(PARTITION)
    assert again.success
    assert flow_env.query("select id, kind, origin_object_id from etl_data_objects") == [
        (object_id, "delivery", None)
    ]
    assert flow_env.query(
        f"select distinct object_id from etl_data_object_stages where run_id = '{again.run_id}'"
    ) == [(object_id,)]
