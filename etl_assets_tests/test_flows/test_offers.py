"""The offers flow and its consistency with companies: parked, linked later, or rejected."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import polars as pl

from etl_assets.definitions import build_definitions
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv, materializations

YESTERDAY = date.today() - timedelta(days=1)
OFFERS_HEADER = "OFFER_ID;COMPANY_VAT;TITLE;AMOUNT;CURRENCY;STATUS;VALID_UNTIL;CREATED_AT"


def offers_csv(*rows: str) -> bytes:
    return ("\r\n".join([OFFERS_HEADER, *rows]) + "\r\n").encode("utf-8")


def offer(offer_id: str, vat: str) -> str:
    return f"{offer_id};{vat};Fornitura {offer_id};1.000,00;EUR;OPEN;31/12/2030;{YESTERDAY:%d/%m/%Y} 09:00:00"


def company(company_id: str, vat: str) -> str:
    return f"{company_id};{vat};Ditta {company_id} S.r.l.;;;;IT;;;;;;;{YESTERDAY:%d/%m/%Y} 05:00:00"


def offers_partition(hhmm: str) -> tuple[str, str]:
    """(partition key, file name) of yesterday's 5-minute partition at ``hhmm``."""
    return f"{YESTERDAY:%Y-%m-%d}-{hhmm[:2]}:{hhmm[2:]}", f"offers_{YESTERDAY:%Y%m%d}_{hhmm}.csv"


def retry_after_companies(env: FlowEnv) -> dg.ExecuteInProcessResult | None:
    """What the daemon does after a companies load: evaluate the asset sensor, run its request."""
    with env.defs_state():
        defs = build_definitions(load_settings("test"))
        sensor = defs.resolve_sensor_def("offers_parked_after_companies")
        context = dg.build_sensor_context(instance=env.instance, cursor=env.cursors.get(sensor.name))
        result = sensor.evaluate_tick(context)
        env.cursors[sensor.name] = result.cursor
        if not result.run_requests:
            return None
        (request,) = result.run_requests
        return defs.resolve_job_def("offers_parked_retry").execute_in_process(
            instance=env.instance, tags=request.tags, raise_on_error=False
        )


def test_offers_wait_for_their_company_then_link_or_get_rejected(flow_env: FlowEnv) -> None:
    key, name = offers_partition("1000")
    flow_env.put(name, offers_csv(offer("O1", "IT00000000001"), offer("O2", "IT00000000002")))
    first = flow_env.run(key, job="offers_job")
    assert first.success
    link = materializations(first, "offers_link")[0].metadata
    assert (link["parked"].value, link["parked_now"].value, link["rejected"].value) == (2, 2, 0)
    assert flow_env.query("select external_id, account_id from offers order by 1") == [
        ("O1", None),
        ("O2", None),
    ]
    assert flow_env.smtp.messages() == []  # parked is not rejected: no e-mail

    # companies arrive with O1's company only; the sensor retries the parked offers
    flow_env.put(f"companies_{YESTERDAY:%Y%m%d}.csv", companies_csv(company("C1", "IT00000000001")))
    assert flow_env.run(f"{YESTERDAY:%Y-%m-%d}").success
    retried = retry_after_companies(flow_env)
    assert retried is not None and retried.success
    assert flow_env.query(
        "select o.external_id, a.external_id from offers o left join accounts a on a.id = o.account_id order by 1"
    ) == [("O1", "C1"), ("O2", None)]
    # O2 was parked before that companies load and is still unknown: now it is an error
    error_file = flow_env.home / "errors" / "offers" / key.replace(":", "-") / "link.csv"
    errors = pl.read_csv(error_file, separator=";", infer_schema=False)
    assert errors.select(
        "OFFER_ID", "COMPANY_VAT", "error_step", "error_field", "source_file", "source_line"
    ).rows() == [("O2", "IT00000000002", "link", "COMPANY_VAT", name, "3")]
    assert "still missing after the companies load" in errors["error_reason"][0]
    (message,) = flow_env.smtp.wait_for(1)
    assert message["Subject"] == f"[etl_assets][test] offers {key}: 1 rows rejected"
    assert [p.get_filename() for p in message.iter_attachments()] == [
        f"offers_{key.replace(':', '-')}_link.csv"
    ]
    assert flow_env.query("select count(*) from etl_parked_links") == [(0,)]

    # the sensor requests one retry per companies load, not one per tick
    assert retry_after_companies(flow_env) is None


def test_offer_parked_longer_than_max_park_age_is_rejected_by_a_later_offers_run(
    flow_env: FlowEnv, write_settings
) -> None:
    settings_path = flow_env.home.parent / "settings.yaml"
    write_settings(settings_path.read_text() + "max_park_age: 0\n")
    key, name = offers_partition("1100")
    flow_env.put(name, offers_csv(offer("O3", "IT00000000003")))
    assert flow_env.run(key, job="offers_job").success
    later_key, later_name = offers_partition("1105")
    flow_env.put(later_name, offers_csv(offer("O4", "IT00000000001")))
    later = flow_env.run(later_key, job="offers_job")
    assert later.success
    metadata = materializations(later, "offers_link")[0].metadata
    assert metadata["expired_from_parking"].value == 1
    error_file = flow_env.home / "errors" / "offers" / key.replace(":", "-") / "link.csv"
    assert "longer than max_park_age" in error_file.read_text(encoding="utf-8")
    (message,) = flow_env.smtp.wait_for(1)
    assert message["Subject"] == f"[etl_assets][test] offers {later_key}: 1 rows rejected"
    assert flow_env.query("select record_key from etl_parked_links") == [("O4",)]  # parked in this run


def test_file_sensor_waits_for_a_complete_file_and_requests_it_once(flow_env: FlowEnv) -> None:
    defs = build_definitions(load_settings("test"))
    sensor = defs.resolve_sensor_def("offers_file_sensor")

    def tick() -> dg.SensorExecutionData:
        context = dg.build_sensor_context(
            instance=flow_env.instance,
            cursor=flow_env.cursors.get(sensor.name),
            resources=defs.resources,
            definitions=defs,
        )
        result = sensor.evaluate_tick(context)
        flow_env.cursors[sensor.name] = result.cursor
        return result

    first = tick()
    assert first.run_requests == [] and "no new file" in first.skip_message
    key, name = offers_partition("1200")
    remote = flow_env.sshd.put_file(f"{flow_env.folder}/{name}", offers_csv(offer("O9", "IT1")))
    assert tick().run_requests == []  # first look: size noted
    with open(remote, "ab") as handle:  # the upload goes on
        handle.write(offer("O10", "IT1").encode() + b"\r\n")
    growing = tick()
    assert (
        growing.run_requests == []
        and f"waiting for 1 file(s) to stop growing: {name}" in growing.skip_message
    )
    stable = tick()
    assert [r.partition_key for r in stable.run_requests] == [key]
    assert tick().run_requests == []  # never the same file twice
    # a file outside the partitions (before the rolling window) is refused with a reason
    flow_env.sshd.put_file(f"{flow_env.folder}/offers_20200101_0700.csv", offers_csv(offer("O11", "IT1")))
    refused = tick()
    assert refused.run_requests == []
    assert (
        "offers_20200101_0700.csv: partition 2020-01-01-07:00 is outside the flow's partitions"
        in refused.skip_message
    )
    # 19:05 is after the day's last 5-minute partition (18:55): refused too, not silently dropped
    late = f"offers_{YESTERDAY:%Y%m%d}_1905.csv"
    flow_env.sshd.put_file(f"{flow_env.folder}/{late}", offers_csv(offer("O12", "IT1")))
    assert (
        f"{late}: partition {YESTERDAY:%Y-%m-%d}-19:05 is outside the flow's partitions"
        in tick().skip_message
    )


def test_catch_up_schedule_requests_the_1855_file_at_1900_without_waiting_for_the_next_morning(
    flow_env: FlowEnv,
) -> None:
    rome = ZoneInfo("Europe/Rome")
    key, name = offers_partition("1855")
    remote = flow_env.sshd.put_file(f"{flow_env.folder}/{name}", offers_csv(offer("O20", "IT1")))
    arrived = (
        datetime.combine(YESTERDAY, datetime.min.time()).replace(hour=18, minute=57, tzinfo=rome).timestamp()
    )
    os.utime(remote, (arrived, arrived))
    defs = build_definitions(load_settings("test"))
    schedule = defs.resolve_schedule_def("offers_catch_up_schedule")

    def tick(hour: int, minute: int) -> list[str]:
        when = datetime.combine(YESTERDAY, datetime.min.time()).replace(hour=hour, minute=minute, tzinfo=rome)
        context = dg.build_schedule_context(
            instance=flow_env.instance,
            scheduled_execution_time=when,
            resources=defs.resources,
            repository_def=defs.get_repository_def(),
        )
        result = schedule.evaluate_tick(context)
        return [r.partition_key for r in result.run_requests or []]

    assert tick(19, 0) == []  # arrived 3 minutes ago: the sensor's turn
    assert tick(19, 15) == [key]
    assert flow_env.run(key, job="offers_job").success
    assert tick(19, 30) == []  # extracted: not requested again


def test_extracts_refresh_and_nightly_rerun_the_newest_loaded_partition(flow_env: FlowEnv) -> None:
    defs = build_definitions(load_settings("test"))
    refresh = defs.resolve_schedule_def("companies_extracts_refresh_schedule")
    nightly = defs.resolve_schedule_def("companies_nightly_schedule")
    assert (refresh.cron_schedule, nightly.cron_schedule) == ("0 */4 * * *", "30 1 * * *")

    def tick(schedule: dg.ScheduleDefinition) -> list[dg.RunRequest]:
        context = dg.build_schedule_context(
            instance=flow_env.instance,
            scheduled_execution_time=datetime.now(),
            repository_def=defs.get_repository_def(),
        )
        return list(schedule.evaluate_tick(context).run_requests or [])

    assert tick(refresh) == []  # nothing loaded yet
    day = f"{YESTERDAY:%Y-%m-%d}"
    flow_env.put(f"companies_{YESTERDAY:%Y%m%d}.csv", companies_csv(company("C1", "IT00000000001")))
    assert flow_env.run(day).success
    [request] = tick(refresh)
    assert request.partition_key == day
    assert [r.partition_key for r in tick(nightly)] == [day]
    assert [r.asset_selection for r in tick(nightly)] == [None]  # the whole companies_job
    assert refresh.job_name == nightly.job_name == "companies_job"
    assert [k.to_user_string() for k in request.asset_selection] == ["companies_extract"]
    assert {c.name for c in request.asset_check_keys} == {"schema_drift", "source_unchanged"}
    job = defs.resolve_job_def("companies_job").get_subset(
        asset_selection=set(request.asset_selection), asset_check_selection=set(request.asset_check_keys)
    )
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"companies_extract"}
    # the source changed on the server since it was loaded: the refresh's quality check says so
    flow_env.put(
        f"companies_{YESTERDAY:%Y%m%d}.csv",
        companies_csv(company("C1", "IT00000000001"), company("C2", "IT2")),
    )
    refreshed = job.execute_in_process(partition_key=day, instance=flow_env.instance)
    checks = {c.check_name: c for c in refreshed.get_asset_check_evaluations()}
    assert not checks["source_unchanged"].passed
    assert checks["schema_drift"].passed


def test_parked_rows_expire_only_after_a_load_of_their_day_whoever_retries(flow_env: FlowEnv) -> None:
    """The rule reads the target's data: an operator's retry (``dg launch``), the sensor's and a
    later link step all decide the same, and an older companies day expires nothing newer."""
    from etl_assets_tests.test_flows.test_cli_runs import dg_launch

    key, name = offers_partition("0900")
    flow_env.put(name, offers_csv(offer("O5", "IT00000000005")))
    assert flow_env.run(key, job="offers_job").success
    parked = "select record_key from etl_parked_links"
    assert flow_env.query(parked) == [("O5",)]

    def operator_retry() -> None:
        run = dg_launch("--assets", "offers_parked", home=flow_env.home)
        assert run.returncode == 0, run.stderr[-3000:]

    operator_retry()  # before any companies load: it waits
    assert flow_env.query(parked) == [("O5",)]

    older = YESTERDAY - timedelta(days=1)  # a backfill of an older day
    flow_env.put(f"companies_{older:%Y%m%d}.csv", companies_csv(company("C9", "IT00000000009")))
    assert flow_env.run(f"{older:%Y-%m-%d}").success
    retried = retry_after_companies(flow_env)
    assert retried is not None and retried.success
    operator_retry()
    assert flow_env.query(parked) == [("O5",)]  # that load said nothing of yesterday's companies
    error_file = flow_env.home / "errors" / "offers" / key.replace(":", "-") / "link.csv"
    assert not error_file.exists()

    flow_env.put(f"companies_{YESTERDAY:%Y%m%d}.csv", companies_csv(company("C1", "IT00000000001")))
    assert flow_env.run(f"{YESTERDAY:%Y-%m-%d}").success
    operator_retry()  # by hand, before the sensor: the same rule expires it
    assert flow_env.query(parked) == []
    errors = pl.read_csv(error_file, separator=";", infer_schema=False)
    assert errors["OFFER_ID"].to_list() == ["O5"]
    assert f"still missing after the companies load of {YESTERDAY:%Y-%m-%d} at " in errors["error_reason"][0]
    loads = flow_env.query(
        "select partition_key from etl_partition_loads where flow = 'companies' order by 1"
    )
    assert loads == [(f"{older:%Y-%m-%d}",), (f"{YESTERDAY:%Y-%m-%d}",)]


def test_offers_link_is_fresh_after_the_companies_it_linked_to_and_stale_once_they_change(
    flow_env: FlowEnv,
) -> None:
    """The link's dep on companies_load (another flow, daily against five-minute partitions) in
    the UI's stale marks: fresh while the day it linked to is what it was, stale once it changed."""
    day = f"{YESTERDAY:%Y-%m-%d}"
    companies = f"companies_{YESTERDAY:%Y%m%d}.csv"
    flow_env.put(companies, companies_csv(company("C1", "IT00000000001")))
    assert flow_env.run(day).success
    key, name = offers_partition("1200")
    flow_env.put(name, offers_csv(offer("O1", "IT00000000001")))
    assert flow_env.run(key, job="offers_job").success
    steps = [f"offers_{step}" for step in ("extract", "transform", "load", "link")]
    assert [flow_env.stale_status(step, key) for step in steps] == ["FRESH"] * 4

    assert flow_env.run(day).success  # the same companies file again: the same data
    assert flow_env.stale_status("offers_link", key) == "FRESH"

    flow_env.put(companies, companies_csv(company("C1", "IT00000000001"), company("C2", "IT2")))
    assert flow_env.run(day).success
    assert [flow_env.stale_status(step, key) for step in steps] == ["FRESH"] * 3 + ["STALE"]
