"""A companies backfill launched as the UI launches it, into PostgreSQL, while the offers file
sensor keeps requesting runs: the scenario of ``test_load_backfill`` and of
``benchmarks/backfill_load.py``, at the size each asks for.

``run_backfill_load`` writes the companies files (the demo generator; each day also re-sends a
few of the day before's companies, updated: keys shared between partitions, as a real ERP sends
them), starts the webserver, launches the backfill through GraphQL, starts the daemon, drops an
offers file every few seconds while the backfill runs, samples the memory of the server's whole
process tree, and gathers what an assertion or a report needs: the backfill, every run, the
materializations per partition from the event log, the target's rows and the expectation
computed from the files alone.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from etl_assets.samples import write_demo_data
from etl_assets_tests.scenarios.expected import Expected, expected_from_files, read_rows
from etl_assets_tests.scenarios.probes import MemoryPeak, MemorySampler, OffersDropper
from etl_assets_tests.services import DagsterServer

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ["companies_extract", "companies_transform", "companies_load", "companies_link"]
UNFINISHED = frozenset(
    {
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    }
)
UNFINISHED_NAMES = frozenset(s.value for s in UNFINISHED)
PAGE_RECORDS = 10_000
SENSOR_TICKS = """
query Ticks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 200) { status timestamp runIds error { message } } } }
  }
}
"""


@dataclass(frozen=True)
class Scenario:
    """The size of the scenario: `days` daily partitions ending `end`, `rows` companies a day
    (plus `resend` of the day before's), `offers_before` offers files waiting at the launch and
    one more every `offers_every_s` seconds; after the backfill, wait for the first
    `settle_offers` offers runs it saw requested."""

    days: int = 60
    rows: int = 200
    resend: int = 3
    offers_every_s: float = 4.0
    offers_before: int = 4  # files already waiting at the launch: the sensor's first look sees them
    settle_offers: int = 3
    end: date = field(default_factory=lambda: date.today() - timedelta(days=2))  # inside any timezone's days
    timeout_s: float = 600.0

    @property
    def keys(self) -> list[str]:
        return [f"{self.end - timedelta(days=n):%Y-%m-%d}" for n in range(self.days - 1, -1, -1)]


@dataclass
class RunSummary:
    """One Dagster run, as the run list shows it (times: seconds since the epoch)."""

    run_id: str
    job: str
    status: str
    created: float
    start: float | None
    end: float | None
    tags: dict[str, str]

    @classmethod
    def of(cls, record: dg.RunRecord) -> RunSummary:
        run, created = record.dagster_run, record.create_timestamp
        if created.tzinfo is None:  # stored as UTC
            created = created.replace(tzinfo=UTC)
        return cls(
            run.run_id,
            run.job_name,
            run.status.value,
            created.timestamp(),
            record.start_time,
            record.end_time,
            dict(run.tags),
        )

    @property
    def scheduled(self) -> bool:
        """Started by a schedule: the wall clock's, not the scenario's (``companies_schedule`` at
        06:00 asks for today's file, which the scenario does not write; the 4-hour extracts
        refresh and the nightly re-run re-materialize the newest partition loaded)."""
        return "dagster/schedule_name" in self.tags

    @property
    def finished(self) -> bool:
        return self.status not in UNFINISHED_NAMES


@dataclass
class Outcome:
    """What the scenario left: for assertions (the test) and figures (the benchmark)."""

    scenario: Scenario
    expected: Expected
    backfill: dict[str, Any]
    launched_at: float  # time.time() of the launch
    wall_s: float  # launch -> the backfill's final status
    load_status: dict[str, str]  # companies_load's Partitions tab
    materializations: dict[str, Counter[str]]  # asset -> partition -> ASSET_MATERIALIZATION events
    materializing_runs: dict[str, list[str]]  # companies_load partition -> run ids
    scheduled_materializations: Counter[str]  # step -> events of schedule runs (not counted above)
    runs: list[RunSummary]  # every run, as it stood when the scenario stopped waiting
    sensor_ticks: list[dict[str, Any]]  # offers_file_sensor
    dropped: list[tuple[float, str]]  # offers files: (time, name)
    accounts: tuple[int, int]  # count(*), count(distinct external_id)
    partition_loads: int  # etl_partition_loads rows of companies
    stale_keys: list[str]  # keys holding another name than their latest row's (an older day loaded last)
    memory: MemoryPeak

    @property
    def ended_at(self) -> float:
        return self.launched_at + self.wall_s

    def since_launch(self, moment: float | None) -> str:
        return "-" if moment is None else f"{moment - self.launched_at:.0f}"

    @property
    def backfill_runs(self) -> list[RunSummary]:
        runs = [r for r in self.runs if r.tags.get("dagster/backfill") == self.backfill["id"]]
        return sorted(runs, key=lambda r: r.start or float("inf"))

    @property
    def landed_s(self) -> float:
        """Launch -> the end of the backfill's last run (the last partition landed)."""
        return max((r.end or 0) for r in self.backfill_runs) - self.launched_at

    @property
    def offers_runs(self) -> list[RunSummary]:
        """Runs the offers sensor requested while the backfill ran (launch to final status)."""
        return [
            r
            for r in self.runs
            if r.tags.get("dagster/sensor_name") == "offers_file_sensor"
            and self.launched_at <= r.created <= self.ended_at
        ]

    @property
    def offers_succeeded_during(self) -> list[RunSummary]:
        """Offers runs requested during the backfill that succeeded before its final status."""
        return [r for r in self.offers_runs if r.status == "SUCCESS" and r.end and r.end <= self.ended_at]

    @property
    def offers_succeeded_while_landing(self) -> list[RunSummary]:
        """Offers runs requested during the backfill that succeeded before its last partition
        landed (the final status comes at the backfill daemon's next tick, up to 30 s later)."""
        landed = self.launched_at + self.landed_s
        return [r for r in self.offers_runs if r.status == "SUCCESS" and r.end and r.end <= landed]

    @property
    def offers_beside_chunks(self) -> list[RunSummary]:
        """Offers runs that executed while a chunk of the backfill executed."""
        chunks = [(r.start, r.end) for r in self.backfill_runs if r.start and r.end]
        return [
            r
            for r in self.offers_runs
            if r.start and r.end and any(r.start < end and start < r.end for start, end in chunks)
        ]

    @property
    def failed_runs(self) -> list[RunSummary]:
        """The scenario's runs (not the schedules') that ended otherwise than SUCCESS."""
        return [r for r in self.runs if r.finished and r.status != "SUCCESS" and not r.scheduled]

    @property
    def unfinished_runs(self) -> list[RunSummary]:
        return [r for r in self.runs if not r.finished]

    def describe(self) -> str:
        """The figures in a few lines, for a test's output and its assertion messages."""
        scenario, offers = self.scenario, self.offers_runs
        chunks = ", ".join(
            f"{r.tags.get('dagster/asset_partition_range_start')}...{r.tags.get('dagster/asset_partition_range_end')}"
            f" {r.status} {self.since_launch(r.start)}-{self.since_launch(r.end)} s"
            for r in self.backfill_runs
        )
        waits = sorted(r.start - r.created for r in offers if r.start)
        first_start = min((r.start for r in offers if r.start), default=None)
        return (
            f"{scenario.days} partitions x {scenario.rows} rows (+{scenario.resend} re-sent a day): backfill "
            f"{self.backfill['status']} in {self.wall_s:.1f} s from launch to final status (last partition "
            f"landed at {self.landed_s:.1f} s), {scenario.days / self.wall_s:.2f} partitions/s\n"
            f"  chunks (s after launch): {chunks}\n"
            f"  memory of the server tree: {self.memory.describe()}\n"
            f"  offers: {len(self.dropped)} files dropped (one every {scenario.offers_every_s:g} s), "
            f"{len(offers)} runs requested during the backfill, {len(self.offers_succeeded_while_landing)} succeeded "
            f"before its last partition landed and {len(self.offers_succeeded_during)} before its final status, {len(self.offers_beside_chunks)} ran beside a chunk; first offers run "
            f"started at {self.since_launch(first_start)} s; queue wait of those started "
            f"{', '.join(f'{w:.0f}' for w in waits) or '-'} s\n"
            f"  runs: {dict(Counter((r.job, r.status) for r in self.runs if not r.scheduled))}; schedules' "
            f"runs (left out): {dict(Counter((r.job, r.status) for r in self.runs if r.scheduled)) or 'none'}\n"
            f"  accounts {self.accounts[0]} rows, {self.accounts[1]} keys; expected "
            f"{len(self.expected.keys_landing)} ({len(self.expected.keys_in_files)} keys in "
            f"{self.expected.files} files, {len(self.expected.keys_lost)} lost to the map); "
            f"{len(self.stale_keys)} keys hold an older day's row than their latest: {self.stale_keys[:5]}"
        )


def write_companies_files(folder: Path, scenario: Scenario) -> list[Path]:
    """The scenario's companies files, oldest first; each after the first also re-sends the
    first `resend` rows of the day before's file, renamed and updated that morning."""
    written = write_demo_data(folder, days=scenario.days, end=scenario.end, rows_per_day=scenario.rows)
    for path in written:
        if not path.name.startswith("companies_"):
            path.unlink()  # demo offers: the scenario's offers come from its own dropper
    paths = sorted(p for p in written if p.name.startswith("companies_"))
    for before, path in zip(paths, paths[1:], strict=False):
        day = f"{path.stem[-2:]}/{path.stem[-4:-2]}/{path.stem[-8:-4]} 05:00:00"
        rows = read_rows(before)[: scenario.resend]
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
        writer.writerows([{**r, "NAME": f"{r['NAME']} (updated)", "UPDATED_AT": day}.values() for r in rows])
        with path.open("ab") as handle:
            handle.write(buffer.getvalue().encode("utf-8"))
    return paths


def wait_finished(instance: dg.DagsterInstance, run_ids: list[str], timeout: float) -> None:
    """Wait until each of these runs has finished, or `timeout` (the outcome shows which did not)."""
    deadline = time.monotonic() + timeout
    pending = list(run_ids)
    while pending and time.monotonic() < deadline:
        pending = [i for i in pending if (run := instance.get_run_by_id(i)) and run.status in UNFINISHED]
        if pending:
            time.sleep(1)


def count_materializations(
    instance: dg.DagsterInstance, outside: set[str]
) -> tuple[dict[str, Counter[str]], dict[str, list[str]], Counter[str]]:
    """ASSET_MATERIALIZATION events of each step per partition, over the whole event log but
    for the runs `outside` the scenario; the runs that materialized each companies_load
    partition; and the events of the runs left out, per step."""
    counts: dict[str, Counter[str]] = {}
    runs: dict[str, list[str]] = {}
    left_out: Counter[str] = Counter()
    for asset in ASSETS:
        records, cursor = [], None
        while True:  # a page at a time: the event log answers at most 10,000 records a call
            page = instance.fetch_materializations(dg.AssetKey(asset), limit=PAGE_RECORDS, cursor=cursor)
            records += page.records
            if not page.has_more:
                break
            cursor = page.cursor
        left_out[asset] = sum(r.run_id in outside for r in records)
        records = [r for r in records if r.run_id not in outside]
        counts[asset] = Counter(r.partition_key or "<none>" for r in records)
        if asset == "companies_load":
            for record in records:
                runs.setdefault(record.partition_key or "<none>", []).append(record.run_id)
    return counts, runs, left_out


def sensor_ticks(dagster: DagsterServer, sensor: str) -> list[dict[str, Any]]:
    """The sensor's recent ticks as its page lists them."""
    selector = {
        "repositoryName": "__repository__",
        "repositoryLocationName": "etl_assets",
        "sensorName": sensor,
    }
    result = dagster.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
    if result["__typename"] != "Sensor":
        raise RuntimeError(f"sensorOrError({sensor}): {result}")
    return result["sensorState"]["ticks"]


def wait_sensor_run(instance: dg.DagsterInstance, timeout: float) -> None:
    """Until the offers sensor has requested a run (its first tick after the daemon started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/sensor_name": "offers_file_sensor"}), limit=1
        )
        if runs:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the offers sensor requested no run within {timeout:.0f} s of the daemon's start")


def target_state(dsn: str) -> tuple[tuple[int, int], int, dict[str, str]]:
    """(count(*), count(distinct external_id)) of accounts; companies rows of
    etl_partition_loads; each key's name."""
    with psycopg.connect(dsn) as conn:
        (rows, keys), *_ = conn.execute(
            "select count(*), count(distinct external_id) from accounts"
        ).fetchall()
        ((loads,),) = conn.execute(
            "select count(*) from etl_partition_loads where flow = 'companies'"
        ).fetchall()
        names = dict(conn.execute("select external_id, name from accounts").fetchall())
    return (rows, keys), loads, names


def run_backfill_load(
    scenario: Scenario,
    etl_home: Path,
    dagster_home: Path,
    env: Mapping[str, str],
    dsn: str,
    instance_config: Mapping[str, Any] | None = None,
) -> Outcome:
    """The whole scenario. `env` is the servers' ETL_* environment (ETL_ENV, ETL_HOME,
    ETL_SETTINGS, the key; no other ETL_* variable of this process reaches them), `dsn` the
    target database's connection string, `instance_config` merged into the shipped instance."""
    import_dir = etl_home / "import"
    expected = expected_from_files(write_companies_files(import_dir, scenario))
    dropper = OffersDropper(import_dir, sorted(set(expected.vat_codes)), scenario.offers_every_s)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    server = DagsterServer(ROOT, dagster_home, env, base_env, instance_config, daemon=False)
    with server as dagster, dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        sampler = MemorySampler(dagster.process_ids)
        sampler.start()
        for _ in range(scenario.offers_before):
            dropper.drop()
        dropper.start()
        # the daemon first, until the sensor has asked for a run: its ticks (every 30 s) then
        # fall inside the backfill, which waits for the backfill daemon's next tick (30 s) too
        dagster.start_daemon()
        wait_sensor_run(instance, timeout=max(120.0, scenario.timeout_s / 4))
        launched_at, started = time.time(), time.monotonic()
        try:
            backfill_id = dagster.launch_backfill(scenario.keys, ASSETS)
            backfill = dagster.wait_backfill(backfill_id, timeout=scenario.timeout_s, poll=0.5)
            wall_s = time.monotonic() - started
        finally:
            dropped = dropper.stop()
            memory = sampler.stop()
        # offers files keep coming faster than runs start (each launch waits for its worker to
        # import the code location): wait for the first few requested during the backfill only
        offers = [
            r.dagster_run.run_id
            for r in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)
            if r.dagster_run.tags.get("dagster/sensor_name") == "offers_file_sensor"
        ]
        wait_finished(instance, offers[: scenario.settle_offers], timeout=max(120.0, scenario.timeout_s / 4))
        load_status = dagster.partition_status("companies_load")
        ticks = sensor_ticks(dagster, "offers_file_sensor")
        runs = [RunSummary.of(r) for r in instance.get_run_records()]
        materializations, materializing_runs, scheduled_materializations = count_materializations(
            instance, {r.run_id for r in runs if r.scheduled}
        )
    accounts, partition_loads, names = target_state(dsn)
    return Outcome(
        scenario=scenario,
        expected=expected,
        backfill=backfill,
        launched_at=launched_at,
        wall_s=wall_s,
        load_status=load_status,
        materializations=materializations,
        materializing_runs=materializing_runs,
        scheduled_materializations=scheduled_materializations,
        runs=sorted(runs, key=lambda r: r.created),
        sensor_ticks=ticks,
        dropped=dropped,
        accounts=accounts,
        partition_loads=partition_loads,
        stale_keys=sorted(k for k, name in expected.latest_name.items() if names.get(k, name) != name),
        memory=memory,
    )


def settings_yaml(host: str, port: int, user: str, database: str, password_token: str) -> str:
    """An environment (``test``) whose target is this PostgreSQL database: no ``sftp`` (files
    from ETL_HOME/import) and no ``mail.smtp`` (e-mails to ETL_HOME/logs/outbox), as
    ``resources/build.py`` chooses them."""
    return f"""timezone: Europe/Rome
require_encrypted_secrets: true
mail:
  sender: etl@test.example
  recipients: [ops@test.example]
test:
  database:
    driver: postgresql
    host: {host}
    port: {port}
    database: {database}
    user: {user}
    password: {password_token}
"""


def scenario_env(base: Path, postgres: Any) -> tuple[dict[str, str], str]:
    """A database of the scenario's own on ``postgres`` (a ``PostgresServer``), a key made as
    ``etl-assets init-key`` makes one, and the settings file: the server processes' environment
    and the database's name."""
    import secrets

    from etl_assets.settings import encrypt, init_key

    database = f"etl_load_{secrets.token_hex(6)}"
    postgres.create_database(database)
    key_file = init_key(base / "keys" / "secret.key")
    token = encrypt(postgres.password, key_file.read_bytes().strip())
    settings = base / "settings.yaml"
    settings.write_text(settings_yaml(postgres.host, postgres.port, postgres.user, database, token))
    env = {
        "ETL_ENV": "test",
        "ETL_HOME": str(base / "etl_home"),
        "ETL_SETTINGS": str(settings),
        "ETL_SECRET_KEY_FILE": str(key_file),
    }
    return env, database
