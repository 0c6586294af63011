"""Housekeeping on the real sshd and a real ETL_HOME: what it moves, deletes and leaves."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from etl_assets.definitions import build_definitions
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv

ROW = "C1;IT00000000001;Ditta S.r.l.;;;;IT;;;;;;;14/01/2026 10:00:00"


def aged(path: Path, days: float, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    past = time.time() - days * 86_400
    os.utime(path, (past, past))
    return path


def test_housekeeping_archives_processed_files_and_deletes_only_what_is_past_retention(
    flow_env: FlowEnv,
) -> None:
    flow_env.put("companies_20260115.csv", companies_csv(ROW))
    assert flow_env.run("2026-01-15").success
    flow_env.put("companies_20260116.csv", companies_csv(ROW))  # arrived, not loaded yet
    flow_env.put("readme.txt", b"not a flow's file")

    home = flow_env.home
    old_error = aged(home / "errors/companies/2025-10-01/transform.csv", 100)
    new_error = aged(home / "errors/companies/2026-01-10/transform.csv", 10)
    old_stage = aged(home / "data/companies/2025-12-01/extract.parquet", 40)
    stranger = aged(home / "data/notes.txt", 400)
    old_mail = aged(home / "logs/outbox/20251001T000000_abc.eml", 40)
    unsent = aged(home / "logs/unsent/20251001T000000_abc_companies.eml", 400)
    old_backup = aged(home / "backup/companies/2025/09/companies_20250901.csv", 100)
    odd_backup = aged(home / "backup/companies/2025/09/readme.txt", 100)

    defs = build_definitions(load_settings("test"))
    result = defs.resolve_job_def("housekeeping").execute_in_process(instance=flow_env.instance)
    assert result.success
    summary = result.output_for_node("tidy_up")

    folder = flow_env.sshd.root / flow_env.folder.lstrip("/")
    assert (folder / "processed" / "companies_20260115.csv").read_bytes() == companies_csv(ROW)
    assert not (folder / "companies_20260115.csv").exists()
    assert (folder / "companies_20260116.csv").exists()  # not loaded: never moved
    assert (folder / "readme.txt").exists()
    assert summary["archived_sources"] == 1
    assert summary["sources_not_yet_processed"] == 1

    assert (
        not old_error.exists()
        and not old_stage.exists()
        and not old_mail.exists()
        and not old_backup.exists()
    )
    assert new_error.exists() and stranger.exists() and unsent.exists() and odd_backup.exists()
    assert (
        summary["removed_errors"],
        summary["removed_data"],
        summary["removed_logs"],
        summary["removed_backup"],
    ) == (
        1,
        1,
        1,
        1,
    )
    assert summary["unaccounted_files_left"] == 2  # data/notes.txt and the backup's readme.txt
    # what the run loaded is still there: raw file, backup, staged data
    assert (home / "data/companies/2026-01-15/raw/companies_20260115.csv").exists()
    assert list((home / "backup/companies").glob("*/*/companies_20260115.csv"))


def test_housekeeping_never_touches_a_source_whose_backup_is_missing(flow_env: FlowEnv) -> None:
    flow_env.put("companies_20260115.csv", companies_csv(ROW))
    assert flow_env.run("2026-01-15").success
    for copy in (flow_env.home / "backup").rglob("companies_20260115.csv"):
        copy.unlink()
    defs = build_definitions(load_settings("test"))
    result = defs.resolve_job_def("housekeeping").execute_in_process(instance=flow_env.instance)
    assert result.output_for_node("tidy_up")["archived_sources"] == 0
    assert (flow_env.sshd.root / flow_env.folder.lstrip("/") / "companies_20260115.csv").exists()


def test_housekeeping_deletes_processed_sources_where_the_settings_say_so(
    flow_env: FlowEnv, write_settings
) -> None:
    settings = (flow_env.home.parent / "settings.yaml").read_text()
    write_settings(settings + "housekeeping:\n  processed: delete\n")
    flow_env.put("companies_20260115.csv", companies_csv(ROW))
    assert flow_env.run("2026-01-15").success
    flow_env.put("companies_20260116.csv", companies_csv(ROW))  # not loaded: stays
    defs = build_definitions(load_settings("test"))
    summary = (
        defs.resolve_job_def("housekeeping")
        .execute_in_process(instance=flow_env.instance)
        .output_for_node("tidy_up")
    )
    folder = flow_env.sshd.root / flow_env.folder.lstrip("/")
    assert summary["deleted_sources"] == 1 and summary["archived_sources"] == 0
    assert not (folder / "companies_20260115.csv").exists() and not (folder / "processed").exists()
    assert (folder / "companies_20260116.csv").exists()
    # the bytes are still on our side: raw copy and backup
    assert list((flow_env.home / "backup/companies").glob("*/*/companies_20260115.csv"))


def test_a_file_name_that_is_not_utf8_or_a_path_is_skipped_everywhere(flow_env: FlowEnv) -> None:
    """One file in the client's folder whose name is not UTF-8 (or holds a control character,
    or ``..``) breaks neither the extract, the sensor's listing, nor housekeeping: each skips
    it with a warning that shows it escaped."""
    flow_env.put("companies_20260115.csv", companies_csv(ROW))
    folder = os.fsencode(flow_env.sshd.root / flow_env.folder.lstrip("/"))
    for raw in (b"companies_\xff\xfe.csv", b"companies_\x07bell.csv", b"companies_..csv"):
        with open(os.path.join(folder, raw), "wb") as handle:
            handle.write(b"not to be read")

    result = flow_env.run("2026-01-15")
    assert result.success
    assert flow_env.query("select external_id from accounts") == [("C1",)]

    settings = load_settings("test")
    defs = build_definitions(settings)
    files = defs.resources["files"]
    listing = files.list_files(flow_env.folder)
    assert [f.name for f in listing if not f.name.startswith(".")] == ["companies_20260115.csv"]
    assert sorted(listing.refused) == sorted(
        [
            f"'companies_\\xff\\xfe.csv' in {flow_env.folder}: not valid UTF-8, skipped",
            f"'companies_\\x07bell.csv' in {flow_env.folder}: holds a control character, skipped",
            f"'companies_..csv' in {flow_env.folder}: holds '..', skipped",
        ]
    )

    # the offers sensor and its catch-up schedule list the same folder
    sensor = defs.resolve_sensor_def("offers_file_sensor")
    tick = sensor.evaluate_tick(
        dg.build_sensor_context(instance=flow_env.instance, resources=defs.resources, definitions=defs)
    )
    assert tick.run_requests == [] and "refused: 'companies_" in tick.skip_message, tick.skip_message
    catch_up = defs.resolve_schedule_def("offers_catch_up_schedule")
    when = datetime.now(UTC)
    with dg.build_schedule_context(
        instance=flow_env.instance, resources=defs.resources, scheduled_execution_time=when
    ) as context:
        listed = catch_up.evaluate_tick(context)  # listing the folder did not fail on the names
    assert not listed.run_requests and "every file in the folder" in (listed.skip_message or "")

    housekeeping = defs.resolve_job_def("housekeeping").execute_in_process(instance=flow_env.instance)
    assert housekeeping.success
    assert housekeeping.output_for_node("tidy_up")["refused_file_names"] == 3
    for raw in (b"companies_\xff\xfe.csv", b"companies_\x07bell.csv", b"companies_..csv"):
        assert os.path.exists(os.path.join(folder, raw))  # left where it is, never moved or deleted
