"""What every fault test needs: an input worth comparing, a clean run of it to compare with, the
target and the error files as rows and bytes, and checks that nothing half-written looks complete.

A fault test runs a file through the flow while something breaks, lets the product recover,
then calls ``assert_same_as_clean(env, deliveries)``: the target tables' rows (surrogate ids
replaced by natural keys, load timestamps left out) and the error files' bytes equal those of
the same deliveries run on a fresh database, a fresh ETL_HOME and a fresh Dagster instance with
nothing broken (``clean_run``, done once per input in a session).
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
import yaml
from psycopg import sql

import etl_assets
from etl_assets.engine.deliveries import delivered_name
from etl_assets.model.flow import FlowModel
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv

T = TypeVar("T")
FLOW = "companies"
DAY = "2026-01-15"
FILE = "companies_20260115.csv"
# 5 MB: a first load of this size takes the fast path (COPY straight in, indexes rebuilt), and a
# download lasts long enough to be cut; a run costs about what a run of 100 rows costs
ROWS = 30_000
# columns a run writes with the time it ran: the only ones a clean run cannot reproduce
LOAD_TIMESTAMPS = frozenset({"etl_loaded_at", "loaded_at", "first_seen"})
# the ledger's delivery of a row, by its checksum (its id depends on the sequence, as ``id`` does)
OBJECT_CHECKSUM = "(select o.checksum from etl_data_objects o where o.id = t.{column}) as {column}"
# the ledger's stages are a history of runs (a killed run's tries have rows of their own): what a
# clean run must match is each stage of each partition done once with the same version and counts
LEDGER_STAGES = sql.SQL(
    "select distinct t.flow, t.partition_key, t.stage, t.stage_version, t.pipeline_version, "
    + OBJECT_CHECKSUM.format(column="object_id")
    + ", t.rows_in, t.rows_out, t.rows_rejected from etl_data_object_stages t where t.status = 'succeeded' "
    "order by 1, 2, 3, 4, 5, 6, 7, 8, 9"
)
LEDGER_OBJECT_LOCAL = frozenset({"id", "raw_path"})  # a sequence's id, a path under this ETL_HOME


@functools.cache
def flows() -> dict[str, FlowModel]:
    """The package's flows, read from their declarations (the target tables, keys and links)."""
    found = {}
    for path in sorted((Path(etl_assets.__file__).parent / "defs").glob("*/defs.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if str(document.get("type", "")).endswith(".FlowComponent"):
            flow = FlowModel.model_validate(document.get("attributes") or {})
            found[flow.name] = flow
    return found


# -- input ------------------------------------------------------------------------------
def company_rows(count: int, *, day: int = 15, version: int = 0) -> list[str]:
    """``count`` companies as the ERP writes them, with what a real day holds: parents to link,
    three bad values, a key given twice (the later wins), an exact duplicate (collapsed) and an
    unknown parent (rejected by link): 5 rejected rows, under the flow's warn_limit of 10, so the
    run lands and e-mails its error files. ``version`` changes every name and the time (a later
    file of the same companies: updates)."""
    stamp = f"{day:02d}/01/2026 0{5 + version % 4}:00:00"
    rows = []
    for i in range(count):
        parent = f"IT{(i // 10) * 10:011d}" if i % 10 else ""
        rows.append(
            f"C{i};IT{i:011d};Ditta {i} v{version} S.r.l.;Via Roma {i};milano;20{i % 1000:03d};it;"
            f"info{i}@ditta{i % 97}.example;+39 02 {i:07d};{parent};{i * 7 % 100000},{i % 100:02d};"
            f"{i % 500};01/0{1 + i % 9}/19{50 + i % 50};{stamp}"
        )
    bad = [
        f"B1;IT90000000001;Bad date v{version};;;;IT;;;;;;31/02/2019;{stamp}",
        f"B2;IT90000000002;Bad mail v{version};;;;IT;not-an-email;;;;;;{stamp}",
        f"B3;IT90000000003;Bad zip v{version};;;zip!;IT;;;;;;;{stamp}",
    ]
    twice = [  # C1 again, later: this one wins, the first C1 is rejected as a key given twice
        f"C1;IT{1:011d};Ditta 1 renamed v{version} S.r.l.;;;;IT;;;;;;;{day:02d}/01/2026 09:30:00",
    ]
    orphan = [f"O1;IT90000000009;Orphan v{version} S.r.l.;;;;IT;;;IT99999999999;;;;{stamp}"]
    rows[3:3] = bad
    rows.insert(len(rows) // 2, rows[len(rows) // 2])  # an exact duplicate line: collapsed
    return rows + twice + orphan


def companies_file(count: int, *, day: int = 15, version: int = 0) -> bytes:
    return companies_csv(*company_rows(count, day=day, version=version))


def put_aged(env: FlowEnv, name: str, data: bytes, folder: str | None = None) -> Path:
    """Place a file on SFTP with an mtime an hour ago: it arrived before the run (a fresh mtime
    makes extract wait ``settle_seconds`` for a possible upload in progress)."""
    path = env.sshd.put_file(f"{folder or env.folder}/{name}", data)
    then = time.time() - 3600
    os.utime(path, (then, then))
    return path


# -- what a run left: rows and bytes ----------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    """The target database as sorted rows per table, and every error file's bytes."""

    tables: dict[str, list[tuple]]
    columns: dict[str, list[str]]
    error_files: dict[str, bytes]

    def column(self, table: str, name: str) -> list[object]:
        index = self.columns[table].index(name)
        return [row[index] for row in self.tables[table]]


def _table_query(conn: psycopg.Connection, table: str, models: Mapping[str, FlowModel]) -> sql.Composed:
    """SELECT of every column but load timestamps; a flow's surrogate ``id`` as its natural key
    and a link column as the natural key of the row it points to (ids depend on the sequence,
    which a rolled-back attempt advances: a retry that equals a clean run still has other ids)."""
    if table == "etl_data_object_stages":
        return sql.Composed([LEDGER_STAGES])
    columns = [
        name
        for (name,) in conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'public' and table_name = %s order by ordinal_position",
            (table,),
        )
        if name not in LOAD_TIMESTAMPS and not (table == "etl_data_objects" and name in LEDGER_OBJECT_LOCAL)
    ]
    owner = next((f for f in models.values() if f.target.table == table), None)
    links = {link.column: link for link in owner.links} if owner else {}
    keys = {f.target.table: f.target.key for f in models.values()}
    parts = []
    for name in columns:
        if owner is not None and name == "id":
            continue  # the row's key column is selected anyway
        link = links.get(name)
        if name == "etl_object_id":
            parts.append(sql.SQL(OBJECT_CHECKSUM.format(column=name)))
        elif link is None:
            parts.append(sql.SQL("t.{}").format(sql.Identifier(name)))
        else:
            referenced = keys.get(link.table, link.match)
            parts.append(
                sql.SQL("(select r.{} from {} r where r.id = t.{}) as {}").format(
                    sql.Identifier(referenced),
                    sql.Identifier(link.table),
                    sql.Identifier(name),
                    sql.Identifier(name),
                )
            )
    order = sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, len(parts) + 1))
    return sql.SQL("select {} from {} t order by {}").format(
        sql.SQL(", ").join(parts), sql.Identifier(table), order
    )


def snapshot_of(dsn: str, home: Path) -> Snapshot:
    models = flows()
    tables: dict[str, list[tuple]] = {}
    columns: dict[str, list[str]] = {}
    with psycopg.connect(dsn) as conn:
        names = [
            name
            for (name,) in conn.execute(
                "select table_name from information_schema.tables "
                "where table_schema = 'public' and table_type = 'BASE TABLE' order by 1"
            )
        ]
        for name in names:
            cursor = conn.execute(_table_query(conn, name, models))
            tables[name] = cursor.fetchall()
            columns[name] = [column.name for column in cursor.description or []]
    errors = home / "errors"
    # a temporary file a killed run left (``.<name>.<pid>.<random>.part``) is no error file
    files = {
        str(p.relative_to(errors)): p.read_bytes()
        for p in sorted(errors.rglob("*"))
        if p.is_file() and not p.name.endswith(".part")
    }
    return Snapshot(tables, columns, files)


def snapshot(env: FlowEnv) -> Snapshot:
    return snapshot_of(env.postgres.dsn(env.database), env.home)


# -- the clean run to compare with ------------------------------------------------------
Delivery = tuple[str, Mapping[str, bytes]]  # a partition run after these files were put on SFTP
_CLEAN: dict[tuple, Snapshot] = {}


def clean_run(env: FlowEnv, deliveries: Sequence[Delivery]) -> Snapshot:
    """The same deliveries run in the same order on a fresh database, a fresh ETL_HOME and a
    fresh Dagster instance, nothing broken (its e-mails go to its own outbox, not to the test's
    SMTP server). Kept for the session: the same input gives the same clean run."""
    key = tuple(
        (partition, tuple(sorted((n, hashlib.sha256(b).hexdigest()) for n, b in files.items())))
        for partition, files in deliveries
    )
    if key not in _CLEAN:
        _CLEAN[key] = _fresh_run(env, deliveries)
    return _CLEAN[key]


def _fresh_run(env: FlowEnv, deliveries: Sequence[Delivery]) -> Snapshot:
    token = secrets.token_hex(4)
    database, folder = f"etl_clean_{token}", f"/outbound/clean_{token}"
    home = env.home.parent / f"clean_{token}" / "etl_home"
    home.parent.mkdir(parents=True)
    settings = yaml.safe_load(Path(os.environ["ETL_SETTINGS"]).read_text(encoding="utf-8"))
    settings["test"]["database"]["database"] = database
    settings["test"]["sftp"]["folders"] = {FLOW: folder}
    del settings["test"]["mail"]["smtp"]  # the outbox of its own ETL_HOME
    settings_path = home.parent / "settings.yaml"
    settings_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    env.postgres.create_database(database)
    try:
        with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
            patch.setenv("ETL_HOME", str(home))
            patch.setenv("ETL_SETTINGS", str(settings_path))
            for name in [n for n in os.environ if n.startswith("ETL__")]:
                patch.delenv(name)  # a test's override of its own connectors, not the clean run's
            clean = FlowEnv(home, folder, env.sshd, env.smtp, env.postgres, database, instance)
            for partition, files in deliveries:
                for name, data in files.items():
                    put_aged(env, name, data, folder)
                result = clean.run(partition)
                assert result.success, f"the clean run of {partition} failed"
                assert not retries(result), "the clean run was retried: it is not clean"
            return snapshot_of(env.postgres.dsn(database), home)
    finally:
        env.postgres.drop_database(database)


def assert_same_as_clean(env: FlowEnv, deliveries: Sequence[Delivery]) -> Snapshot:
    """The target and the error files equal a clean run's, row for row and byte for byte;
    a difference is reported as rows lost and rows extra (doubled or changed)."""
    got, want = snapshot(env), clean_run(env, deliveries)
    assert sorted(got.tables) == sorted(want.tables)
    assert got.columns == want.columns
    for table, rows in want.tables.items():
        mine = got.tables[table]
        if mine != rows:
            lost, extra = Counter(rows) - Counter(mine), Counter(mine) - Counter(rows)
            raise AssertionError(
                f"{table}: {len(mine)} rows, the clean run {len(rows)}; {sum(lost.values())} lost "
                f"(e.g. {list(lost)[:2]}), {sum(extra.values())} extra or doubled (e.g. {list(extra)[:2]})"
            )
    differ = sorted(
        name
        for name in set(got.error_files) | set(want.error_files)
        if got.error_files.get(name) != want.error_files.get(name)
    )
    assert not differ, {name: (got.error_files.get(name), want.error_files.get(name)) for name in differ}
    return got


def run_in_thread(env: FlowEnv, partition: str) -> Callable[[], dg.ExecuteInProcessResult]:
    """Start a run of the partition; the returned call waits for its result (a fault is caused
    meanwhile, from the test's thread)."""
    outcome: dict[str, dg.ExecuteInProcessResult] = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("run", env.run(partition)))
    worker.start()

    def result() -> dg.ExecuteInProcessResult:
        worker.join(timeout=300)
        assert "run" in outcome, "the run did not end"
        return outcome["run"]

    return result


def retries(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


# -- nothing half-written that looks complete ------------------------------------------
def stage_dir(home: Path, partition: str = DAY) -> Path:
    return home / "data" / FLOW / partition


def assert_nothing_looks_complete_that_is_not(
    home: Path, deliveries: Iterable[tuple[str, bytes]]
) -> list[str]:
    """Every file under a final name is whole: a staged parquet has its footer and reads, a copy
    of a delivered file (``raw/``, ``raw/deliveries/``, ``backup/``) holds exactly the bytes of
    one delivery of that name (and of the one its ``<sha16>_`` prefix names), a recorded
    checksum is its raw file's, an error file ends with its last record. Returns the names
    found, for the caller to see what the fault left."""
    sent: dict[str, set[str]] = {}
    for name, data in deliveries:
        sent.setdefault(name, set()).add(hashlib.sha256(data).hexdigest())
    found = []
    for path in sorted(p for p in home.rglob("*") if p.is_file() and not p.name.endswith(".part")):
        relative = path.relative_to(home)
        top = relative.parts[0]
        if path.suffix == ".parquet":
            pq.read_table(path)  # a parquet file cut short has no footer: this raises
        elif top in ("data", "backup") and (top == "backup" or "raw" in relative.parts):
            if path.name.endswith(".sha256"):
                recorded = path.read_text().split()
                raw = path.with_name(path.name.removesuffix(".sha256"))
                assert recorded and recorded[0] == hashlib.sha256(raw.read_bytes()).hexdigest(), path
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                name = delivered_name(path.name)
                assert digest in sent.get(name, ()), f"{relative}: not the whole of a delivery of {name}"
                if name != path.name:
                    assert digest.startswith(path.name.partition("_")[0]), (
                        f"{relative}: named for other bytes"
                    )
        elif top == "errors" and path.suffix == ".csv":  # the companies flow's: its header first
            text = path.read_bytes()
            assert text.startswith(b"COMPANY_ID;") and text.endswith(b"\n"), f"{relative}: cut short"
        else:
            continue
        found.append(str(relative))
    return found


def partial_files(home: Path) -> list[Path]:
    """Temporary files (``.<name>.<pid>.<random>.part``) left under ETL_HOME."""
    return sorted(p for p in home.rglob("*.part") if p.is_file())


def poll(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.001) -> T:
    """``condition()``'s first truthy value, polled every ``interval`` seconds (a fault is caused
    at a moment only the product's own traces show: a file appearing, a statement running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def scan(directory: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of a folder that may not exist yet (or may vanish while listed)."""
    try:
        with os.scandir(directory) as entries:
            yield from list(entries)
    except FileNotFoundError:
        return
