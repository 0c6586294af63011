"""The monthly KPI report on PostgreSQL: numbers, table, workbook with chart, PNG, e-mail."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import dagster as dg
from openpyxl import load_workbook

from etl_assets.definitions import build_definitions
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv
from etl_assets_tests.test_flows.test_offers import YESTERDAY, company, offers_csv, offers_partition

MONTH = "2025-06-01"


def offer_in_june(offer_id: str, vat: str, amount: str, status: str, day: int = 10) -> str:
    return f"{offer_id};{vat};Offerta {offer_id};{amount};EUR;{status};;{day:02d}/06/2025 09:00:00"


def test_kpi_report_for_a_month(flow_env: FlowEnv, write_settings) -> None:
    settings = (flow_env.home.parent / "settings.yaml").read_text()
    write_settings(
        settings.replace(
            "    recipients: [ops@test.example]",
            "    recipients: [ops@test.example]\n    report_recipients: {kpi_report: [sales@test.example]}",
        )
    )
    flow_env.put(
        f"companies_{YESTERDAY:%Y%m%d}.csv",
        companies_csv(company("C1", "IT00000000001"), company("C2", "IT00000000002")),
    )
    assert flow_env.run(f"{YESTERDAY:%Y-%m-%d}").success
    key, name = offers_partition("0900")
    flow_env.put(
        name,
        offers_csv(
            offer_in_june("O1", "IT00000000001", "1.000,50", "WON"),
            offer_in_june("O2", "IT00000000001", "250,00", "WON"),
            offer_in_june("O3", "IT00000000001", "99,99", "LOST"),
            offer_in_june("O4", "IT00000000002", "10,00", "OPEN", day=30),
            offer_in_june("O5", "IT00000000002", "77,00", "OPEN", day=1).replace(
                "/06/2025", "/07/2025"
            ),  # July
        ),
    )
    assert flow_env.run(key, job="offers_job").success
    flow_env.smtp.clear()

    defs = build_definitions(load_settings("test"))
    result = defs.resolve_job_def("kpi_report_job").execute_in_process(
        partition_key=MONTH, instance=flow_env.instance
    )
    assert result.success

    expected = flow_env.query(
        "select a.external_id, o.status, count(*), sum(o.amount) from offers o join accounts a on a.id = o.account_id "
        "where o.created_at >= '2025-06-01' and o.created_at < '2025-07-01' group by 1, 2 order by 1, 2"
    )
    assert expected == [
        ("C1", "LOST", 1, Decimal("99.99")),
        ("C1", "WON", 2, Decimal("1250.50")),
        ("C2", "OPEN", 1, Decimal("10.00")),
    ]
    table = flow_env.query(
        "select account, status, offers, amount from kpi_monthly where month = '2025-06-01' order by 1, 2"
    )
    assert table == expected

    # a re-run replaces the month: nothing doubles
    assert (
        defs.resolve_job_def("kpi_report_job")
        .execute_in_process(partition_key=MONTH, instance=flow_env.instance)
        .success
    )
    assert flow_env.query("select count(*) from kpi_monthly") == [(3,)]
    # Dagster's own provenance of the report against the flows' steps it reads: not stale
    assert flow_env.stale_status("kpi_report_load", MONTH) == "FRESH"

    export = flow_env.home / "export"
    book = load_workbook(export / "kpi_report_2025-06.xlsx")
    assert book.sheetnames == ["KPI", "Totals"]
    rows = list(book["KPI"].iter_rows(values_only=True))
    assert rows[0] == ("account", "account_name", "status", "offers", "amount")
    assert [(r[0], r[2], r[3], r[4]) for r in rows[1:]] == [
        ("C1", "LOST", 1, 99.99),
        ("C1", "WON", 2, 1250.5),
        ("C2", "OPEN", 1, 10.0),
    ]
    assert len(book["Totals"]._charts) == 1
    assert (export / "kpi_report_2025-06.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (export / "kpi_report_2025-06.csv").read_text().splitlines()[
        0
    ] == "account;account_name;status;offers;amount"

    message = flow_env.smtp.wait_for(1)[0]
    assert message["Subject"] == "[etl_assets][test] kpi_report 2025-06: report attached"
    assert message["To"] == "sales@test.example"
    assert [p.get_filename() for p in message.iter_attachments()] == [
        "kpi_report_2025-06.xlsx",
        "kpi_report_2025-06.csv",
        "kpi_report_2025-06.png",
    ]


def test_kpi_schedule_runs_on_the_20th_for_the_month_before(flow_env: FlowEnv) -> None:
    defs = build_definitions(load_settings("test"))
    schedule = defs.resolve_schedule_def("kpi_report_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 7 20 * *", "Europe/Rome")
    rome = ZoneInfo("Europe/Rome")
    for when, month in [
        (datetime(2026, 3, 20, 7, 0, tzinfo=rome), "2026-02-01"),  # after February's month end
        (datetime(2026, 1, 20, 7, 0, tzinfo=rome), "2025-12-01"),  # across the year
        (datetime(2026, 4, 20, 7, 0, tzinfo=rome), "2026-03-01"),  # March ends with the DST change
    ]:
        context = dg.build_schedule_context(
            instance=flow_env.instance,
            scheduled_execution_time=when,
            repository_def=defs.get_repository_def(),
        )
        assert [r.partition_key for r in schedule.evaluate_tick(context).run_requests] == [month]
