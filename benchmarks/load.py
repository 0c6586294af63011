"""Load speed of the companies flow against PostgreSQL COPY, on one generated file (issue 5).

``python -m benchmarks.load --rows 1000000`` generates (or reuses, cached under /tmp) a
companies file in the SPEC.md format, then measures on that file and the same server:

- COPY: ``psql \\copy`` into an unindexed text table, the physical limit here;
- the load step: ``load_stage`` on the transform output, first load and re-load;
- the whole flow: extract -> transform -> load -> link for one partition, both loads;
- dlt's ``merge`` of the same rows (when dlt is installed), first load and re-load;
- the floor: SQLAlchemy Core ``executemany`` of 100k rows into a keyed text table.

Every path runs in its own child process and database, so its time and peak RSS (the
child's own VmHWM) are its own. It prints a table and, last, ``load_vs_copy=.. flow_vs_copy=.. dlt_vs_copy=..
peak_rss_mb_1m=.. peak_rss_mb_10m=..``. The child side is ``--only <path>``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from etl_assets.samples import CITIES, COMPANY_COLUMNS, PREFIXES, STREETS, SUFFIXES, SURNAMES

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("ETL_BENCH_CACHE", "/tmp/etl_bench_cache"))
PG_HOST = os.environ.get("ETL_BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ETL_BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("ETL_BENCH_PG_USER", "postgres")
GENERATOR_VERSION = 1
SEED = 20260115
CHUNK_ROWS = 500_000
FLOOR_ROWS = 100_000
PARTITION_KEY = "2026-01-15"
PARTITION_START = datetime(2026, 1, 15)
DLT_MISSING = "dlt: not installed (pip install dlt[postgres])"
VAT_MULTIPLIER = 7_919_113  # odd and not a multiple of 5: a bijection modulo 10**11, so VATs are unique
VAT_ADDEND = 12_345_678_901


def log(message: str) -> None:
    """Progress on a terminal only."""
    if sys.stderr.isatty():
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the companies file ---------------------------------------------------------------------


def _pick(index: pl.Expr, values: list[str]) -> pl.Expr:
    """``values[index]`` for an integer expression."""
    return index.replace_strict(dict(enumerate(values)), return_dtype=pl.String)


def _vat(number: pl.Expr) -> pl.Expr:
    """A unique Italian-looking VAT code (IT + 11 digits) for a row number."""
    digits = ((number * VAT_MULTIPLIER + VAT_ADDEND) % 10**11).cast(pl.String).str.zfill(11)
    return pl.concat_str([pl.lit("IT"), digits])


def companies_frame(offset: int, first: int, count: int, total: int, seed: int = SEED) -> pl.DataFrame:
    """Rows ``first .. first+count`` of a file of ``total`` rows whose numbers start at ``offset``.

    All columns are strings as the ERP writes them: decimal comma with thousands dots,
    dd/mm/yyyy dates, quoted ``;`` and quotes in some names, line breaks in some addresses,
    and ~10% of rows whose PARENT_VAT is another row of the same file.
    """
    i = pl.col("i")
    g = pl.col("g")

    def rand(salt: int, modulo: int) -> pl.Expr:
        return (g.hash(seed + salt) % modulo).cast(pl.Int64)

    surname = _pick(rand(2, len(SURNAMES)), SURNAMES)
    prefix, suffix = _pick(rand(1, len(PREFIXES)), PREFIXES), _pick(rand(3, len(SUFFIXES)), SUFFIXES)
    slug = _pick(rand(2, len(SURNAMES)), [s.lower().replace(" ", "") for s in SURNAMES])
    city = rand(4, len(CITIES))
    address = pl.concat_str([_pick(rand(5, len(STREETS)), STREETS), pl.lit(", "), (rand(6, 200) + 1)])
    staircase = pl.concat_str(
        [
            address,
            pl.lit("\nScala "),
            _pick(rand(7, 3), ["A", "B", "C"]),
            pl.lit(", interno "),
            rand(8, 30) + 1,
        ]
    )
    parent = rand(10, total)
    parent = pl.when(parent == i).then((parent + 1) % total).otherwise(parent)
    cents = rand(11, 4_999_000_000) + 1_000_000
    whole = cents // 100
    tail = [
        pl.lit("."),
        (whole // 1000 % 1000).cast(pl.String).str.zfill(3),
        pl.lit("."),
        (whole % 1000).cast(pl.String).str.zfill(3),
        pl.lit(","),
        (cents % 100).cast(pl.String).str.zfill(2),
    ]
    revenue = (
        pl.when(whole >= 1_000_000)
        .then(pl.concat_str([whole // 1_000_000, *tail]))
        .otherwise(pl.concat_str([whole // 1000 % 1000, *tail[2:]]))
    )
    return (
        pl.DataFrame({"i": pl.int_range(first, first + count, dtype=pl.Int64, eager=True)})
        .with_columns(g=i + offset)
        .select(
            pl.concat_str([pl.lit("C"), g.cast(pl.String).str.zfill(9)]).alias("COMPANY_ID"),
            _vat(g).alias("VAT_CODE"),
            pl.when(i % 7 == 3)
            .then(pl.concat_str([surname, pl.lit('; "'), prefix, pl.lit('" '), suffix]))
            .otherwise(pl.concat_str([prefix, surname, suffix], separator=" "))
            .alias("NAME"),
            pl.when(i % 9 == 4).then(staircase).otherwise(address).alias("ADDRESS"),
            _pick(city, [c for c, _ in CITIES]).alias("CITY"),
            _pick(city, [z for _, z in CITIES]).alias("ZIP"),
            pl.lit("IT").alias("COUNTRY"),
            pl.concat_str([pl.lit("info@"), slug, g, pl.lit(".it")]).alias("EMAIL"),
            pl.concat_str([pl.lit("+39 02 "), rand(12, 9_000_000) + 1_000_000]).alias("PHONE"),
            pl.when(rand(13, 10) == 0).then(_vat(parent + offset)).alias("PARENT_VAT"),
            revenue.alias("REVENUE"),
            (rand(14, 2500) + 1).cast(pl.String).alias("EMPLOYEES"),
            (pl.lit(date(1950, 1, 1)) + pl.duration(days=rand(15, 25_000)))
            .dt.strftime("%d/%m/%Y")
            .alias("FOUNDED"),
            (pl.lit(datetime(2026, 1, 14, 23, 0)) - pl.duration(seconds=rand(16, 3 * 365 * 86_400)))
            .dt.strftime("%d/%m/%Y %H:%M:%S")
            .alias("UPDATED_AT"),
        )
    )


def write_companies_csv(path: Path, rows: int, offset: int = 0, seed: int = SEED) -> dict[str, int]:
    """Write a companies file of ``rows`` rows (CRLF, ``;``, header), in chunks; its facts."""
    if rows < 2:
        raise ValueError("a companies file needs at least 2 rows (parents point at another row)")
    parents = 0
    partial = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as out:
        for first in range(0, rows, CHUNK_ROWS):
            chunk = companies_frame(offset, first, min(CHUNK_ROWS, rows - first), rows, seed)
            parents += chunk.get_column("PARENT_VAT").is_not_null().sum()
            chunk.write_csv(out, separator=";", line_terminator="\r\n", include_header=first == 0)
    partial.replace(path)
    return {"rows": rows, "parents": parents, "bytes": path.stat().st_size}


def cached_file(rows: int) -> tuple[Path, dict[str, int]]:
    """The companies file of ``rows`` rows, generated once per row count under CACHE."""
    path = CACHE / f"companies_v{GENERATOR_VERSION}_{rows}.csv"
    facts = path.with_suffix(".json")
    if path.exists() and facts.exists():
        return path, json.loads(facts.read_text())
    log(f"generating {rows:,} rows into {path}")
    started = time.perf_counter()
    meta = write_companies_csv(path, rows)
    facts.write_text(json.dumps(meta))
    log(f"generated {meta['bytes'] / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s")
    return path, meta


# -- the child side: one measured path per process -------------------------------------------


def _mb(kilobytes: float) -> float:
    return kilobytes / 1024


def _vm_hwm_mb() -> float:
    """This process's peak RSS so far (since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return _mb(int(line.split()[1]))
    return float("nan")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so a step's peak is its own."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@dataclass
class Clock:
    """Seconds per (step, part) and peak RSS per step, inside one child."""

    progress: Path | None = None  # where the step in progress is noted, for a child killed mid-way
    segments: list[tuple[str, str, float]] = field(default_factory=list)
    peaks: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.note(name)
        _reset_peak()
        yield
        self.peaks[name] = _vm_hwm_mb()
        self.note(None)

    def note(self, running: str | None) -> None:
        if self.progress:
            steps = {s: round(sum(t for st, _, t in self.segments if st == s), 2) for s in self.peaks}
            self.progress.write_text(json.dumps({"running": running, "peaks": self.peaks, "seconds": steps}))

    @contextmanager
    def part(self, step: str, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.segments.append((step, name, time.perf_counter() - started))


def companies_flow() -> Any:
    """The companies flow of ``defs.yaml``, with no settle wait on the source file."""
    import yaml

    from etl_assets.model.flow import FlowModel

    text = (ROOT / "etl_assets" / "defs" / "companies" / "defs.yaml").read_text(encoding="utf-8")
    flow = FlowModel.model_validate(yaml.safe_load(text)["attributes"])
    return flow.model_copy(update={"source": flow.source.model_copy(update={"settle_seconds": 0.0})})


def _engine(database: str) -> Any:
    from etl_assets.resources import DatabaseResource

    resource = DatabaseResource(
        driver="postgresql", host=PG_HOST, port=PG_PORT, database=database, user=PG_USER
    )
    return resource.engine()


def _resources(home: Path, source: Path, flow: Any) -> tuple[Any, Any]:
    """Local files (the source linked in as the partition's file name) and the runtime folders."""
    from etl_assets.engine.partition_keys import source_file_name
    from etl_assets.resources import FoldersResource, LocalFilesResource

    imports = home / "import"
    imports.mkdir(parents=True, exist_ok=True)
    target = imports / source_file_name(flow, PARTITION_START)
    if not target.exists():
        try:
            target.hardlink_to(source)
        except OSError:
            target.symlink_to(source)
    return LocalFilesResource(root=str(imports)), FoldersResource(home=str(home))


def _expect_actions(what: str, actions: dict[str, int], allowed: set[str]) -> None:
    other = {a: n for a, n in actions.items() if a not in allowed}
    assert not other, f"{what}: expected only {sorted(allowed)}, got {actions}"


def _rejections(response: pl.DataFrame, field_name: str) -> pl.DataFrame:
    """Rejected rows of a response frame in the catcher's shape (as the step bodies pass them)."""
    from etl_assets.engine.columns import ERROR_FIELD, ERROR_REASON, LINE

    return response.filter(pl.col("action") == "rejected").select(
        LINE, pl.lit(field_name).alias(ERROR_FIELD), pl.col("reason").alias(ERROR_REASON)
    )


def work_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Extract and transform (not timed): the input of the load-step path."""
    from etl_assets.engine.extract import extract_partition
    from etl_assets.engine.staging import PartitionStage
    from etl_assets.engine.transform.stage import transform_stage

    flow = companies_flow()
    files, folders = _resources(Path(args.work) / "prepare_home", Path(args.file), flow)
    started = time.perf_counter()
    extract_partition(flow, PARTITION_KEY, PARTITION_START, files, folders)
    stage = PartitionStage(flow.name, PARTITION_KEY, folders)
    result = transform_stage(flow, stage.file("extract.parquet"), stage.dir)
    assert result.rejected_rows == 0, f"transform rejected {result.rejected_rows} generated rows"
    return {"seconds": time.perf_counter() - started, "rows": result.good_rows}


def _load(flow: Any, stage: Any, engine: Any) -> Any:
    """The load step's work for one partition: ``load_stage`` in one transaction, its
    response file renamed into place after the commit."""
    from etl_assets.engine.load.upsert import RESPONSE_SCHEMA, load_stage
    from etl_assets.engine.staging import StagedWriter

    with StagedWriter(stage.file("load.parquet"), RESPONSE_SCHEMA) as response, engine.begin() as conn:
        return load_stage(conn, flow, stage.file("transform.parquet"), response)


def work_load(args: argparse.Namespace) -> dict[str, Any]:
    """The load step: transform.parquet upserted a batch at a time, in one transaction."""
    from etl_assets.engine.staging import PartitionStage
    from etl_assets.resources import FoldersResource

    flow = companies_flow()
    folders = FoldersResource(home=str(Path(args.work) / "prepare_home"))
    stage = PartitionStage(flow.name, PARTITION_KEY, folders)
    engine = _engine(args.db)
    baseline = _vm_hwm_mb()
    started = time.perf_counter()
    loaded = _load(flow, stage, engine)
    seconds = time.perf_counter() - started
    actions = {a: n for a, n in loaded.actions.items() if n}
    _expect_actions("load", actions, {"unchanged"} if args.reload else {"inserted"})
    return {"seconds": seconds, "rows": loaded.rows_in, "actions": actions, "baseline_mb": baseline}


def _extract_step(flow: Any, files: Any, folders: Any, clock: Clock) -> int:
    from etl_assets.engine.extract import extract_partition

    with clock.part("extract", "extract_partition (fetch, sha256, backup, decode, parse, parquet)"):
        return extract_partition(flow, PARTITION_KEY, PARTITION_START, files, folders).rows


def _catch(flow: Any, stage: Any, step: str, rejected: pl.DataFrame | Path) -> None:
    """The catcher, as the step bodies call it (source rows read only for rejected lines);
    ``rejected`` staged in a file (transform) or in memory (load, link)."""
    from etl_assets.engine import catcher

    catch = catcher.catch_staged if isinstance(rejected, Path) else catcher.catch
    catch(
        step,
        PARTITION_KEY,
        rejected,
        lambda lines: catcher.source_rows(stage.file("extract.parquet"), lines),
        stage.error_file(step),
        flow.source.delimiter,
    )


def _transform_step(flow: Any, stage: Any, clock: Clock) -> int:
    from etl_assets.engine.transform.stage import transform_stage

    with clock.part("transform", "transform_stage (map, duplicates, 3 parquet)"):
        result = transform_stage(flow, stage.file("extract.parquet"), stage.dir)
    with clock.part("transform", "catcher"):
        _catch(flow, stage, "transform", stage.file("transform_rejected.parquet"))
    assert result.rejected_rows == 0, f"transform rejected {result.rejected_rows} generated rows"
    return result.good_rows


def _load_step(flow: Any, stage: Any, engine: Any, clock: Clock) -> dict[str, int]:
    from etl_assets.engine.staging import count_rows

    with clock.part("load", "load_stage (in engine.begin)"):
        loaded = _load(flow, stage, engine)
    with clock.part("load", "catcher + reconcile counts"):
        _catch(flow, stage, "load", _rejections(loaded.rejected, flow.source_column(flow.target.key)))
        for name in ("extract", "transform_rejected", "transform_collapsed"):
            count_rows(stage.file(f"{name}.parquet"))
    return {a: n for a, n in loaded.actions.items() if n}


def _link_step(flow: Any, stage: Any, engine: Any, clock: Clock) -> dict[str, int]:
    from etl_assets.engine.link.linker import link_stage
    from etl_assets.engine.load.upsert import RESPONSE_SCHEMA
    from etl_assets.engine.staging import StagedWriter

    with (
        clock.part("link", "link_stage (in engine.begin)"),
        StagedWriter(stage.file("link.parquet"), RESPONSE_SCHEMA) as response,
        engine.begin() as conn,
    ):
        linked = link_stage(conn, flow, stage.file("transform.parquet"), stage.file("load.parquet"), response)
    with clock.part("link", "catcher"):
        _catch(flow, stage, "link", _rejections(linked.rejected, flow.source_column(flow.links[0].field)))
    return {a: n for a, n in linked.actions.items() if n}


def work_flow(args: argparse.Namespace) -> dict[str, Any]:
    """The whole flow for one partition, as the Dagster step bodies do it, step by step."""
    from etl_assets.engine.staging import PartitionStage

    flow = companies_flow()
    files, folders = _resources(Path(args.work) / "flow_home", Path(args.file), flow)
    stage = PartitionStage(flow.name, PARTITION_KEY, folders)
    engine = _engine(args.db)
    clock = Clock(progress=Path(args.result).with_suffix(".progress"))
    baseline = _vm_hwm_mb()
    started = time.perf_counter()
    with clock.step("extract"):
        rows_in = _extract_step(flow, files, folders, clock)
    with clock.step("transform"):
        good = _transform_step(flow, stage, clock)
    with clock.step("load"):
        load_actions = _load_step(flow, stage, engine, clock)
    with clock.step("link"):
        link_actions = _link_step(flow, stage, engine, clock)
    seconds = time.perf_counter() - started
    if args.reload:
        _expect_actions("load re-load", load_actions, {"unchanged"})
        _expect_actions("link re-load", link_actions, {"unchanged"})
    else:
        _expect_actions("load", load_actions, {"inserted"})
        _expect_actions("link", link_actions, {"updated", "unchanged"})
    return {
        "seconds": seconds,
        "rows": rows_in,
        "good": good,
        "load_actions": load_actions,
        "link_actions": link_actions,
        "segments": clock.segments,
        "peaks": clock.peaks,
        "baseline_mb": baseline,
    }


def work_floor(args: argparse.Namespace) -> dict[str, Any]:
    """SQLAlchemy Core executemany of the first rows into a text table keyed on COMPANY_ID."""
    import sqlalchemy as sa

    frame = pl.read_csv(args.file, separator=";", infer_schema=False, n_rows=FLOOR_ROWS)
    rows = frame.rename(str.lower).to_dicts()
    metadata = sa.MetaData()
    table = sa.Table(
        "companies_floor",
        metadata,
        *(sa.Column(c.lower(), sa.Text(), primary_key=c == "COMPANY_ID") for c in frame.columns),
    )
    engine = _engine(args.db)
    metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    return {"seconds": time.perf_counter() - started, "rows": len(rows)}


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "prepare": work_prepare,
    "load": work_load,
    "flow": work_flow,
    "floor": work_floor,
}


def child_main(args: argparse.Namespace) -> int:
    """Run one path and write its result as JSON; a failed check exits 1 with the reason."""
    try:
        result = WORKERS[args.only](args)
    except Exception as exc:  # the parent shows the reason in the table
        traceback.print_exc()
        Path(args.result).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    result["peak_rss_mb"] = max(
        _vm_hwm_mb(), result.get("baseline_mb", 0.0), *result.get("peaks", {}).values()
    )
    Path(args.result).write_text(json.dumps(result))
    return 0


# -- the parent side --------------------------------------------------------------------------


def psql_argv(database: str) -> list[str]:
    """psql on the benchmark's server and database, stopping at the first error."""
    return ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", database, "-v", "ON_ERROR_STOP=1"]


def psql(database: str, sql: str) -> str:
    """One statement through psql; its unaligned output."""
    done = subprocess.run(
        [*psql_argv(database), "-Atqc", sql],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"psql {database}: {done.stderr.strip()}")
    return done.stdout.strip()


def quiesce(timeout: float = 120.0) -> None:
    """A quiet server before a measurement: dirty buffers written, and no autovacuum worker
    still busy with an earlier path's table (vacuuming 1M fresh rows competes with the
    next path for both cores and the disk)."""
    psql("postgres", "CHECKPOINT")
    deadline = time.monotonic() + timeout
    busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    while int(psql("postgres", busy)) and time.monotonic() < deadline:
        time.sleep(0.5)


def table_state(database: str, table: str) -> tuple[int, str]:
    """Row count and an order-independent checksum of every column of every row."""
    count, checksum = psql(
        database, f"SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {table} t"
    ).split("|")
    return int(count), checksum


@dataclass
class Child:
    """What a child process left: its result, wall time and peak RSS."""

    code: int
    wall: float
    rss_mb: float
    result: dict[str, Any]
    log: Path
    killed: bool = False

    @property
    def error(self) -> str | None:
        if self.code == 0 and "error" not in self.result:
            return None
        if "error" in self.result:
            return str(self.result["error"])
        lines = self.log.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit {self.code}"


def _hwm_of(pid: int) -> float | None:
    """VmHWM of a running process, None once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next(
        (_mb(int(line.split()[1])) for line in status.splitlines() if line.startswith("VmHWM:")), None
    )


def run_child(
    argv: list[str], work: Path, name: str, env: dict[str, str] | None = None, cap_mb: float = float("inf")
) -> Child:
    """Run ``argv`` in its own process; its peak RSS is the VmHWM it reports, else the one watched.

    Not ``wait4``/``RUSAGE_CHILDREN``: on exec Linux carries the forking process's peak RSS
    into the child's ``ru_maxrss``, so every child would show at least this parent's RSS.
    A child whose RSS passes ``cap_mb`` is killed (this machine is shared: no OOM killer roulette).
    """
    log_path, result_path = work / f"{name}.log", work / f"{name}.json"
    result_path.unlink(missing_ok=True)
    watched: list[float] = [0.0]
    done = threading.Event()
    with log_path.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, "--result", str(result_path)] if argv[0] != "psql" else argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )

        def watch() -> None:
            while not done.wait(0.02):
                watched[0] = max(watched[0], _hwm_of(proc.pid) or 0.0)
                if watched[0] > cap_mb:
                    proc.kill()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code = proc.wait()
        wall = time.perf_counter() - started
        done.set()
        watcher.join()
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    killed = watched[0] > cap_mb
    if killed:
        result = {"error": _killed(cap_mb, result_path.with_suffix(".progress"))}
    return Child(
        code, wall, result.get("peak_rss_mb") or watched[0] or float("nan"), result, log_path, killed
    )


def _killed(cap_mb: float, progress: Path) -> str:
    """Why and where a child was killed, with the steps it finished before."""
    reason = f"killed: RSS passed the cap of {cap_mb:,.0f} MB (--rss-cap-mb)"
    if not progress.exists():
        return reason
    state = json.loads(progress.read_text())
    done = ", ".join(
        f"{step} {state['seconds'].get(step, 0):.1f} s peak {peak:,.0f} MB"
        for step, peak in state["peaks"].items()
    )
    return f"{reason} in step {state['running']}" + (f"; before it: {done}" if done else "")


@dataclass
class Measured:
    """One row of the table."""

    key: str
    label: str
    rows: int
    seconds: float | None = None
    rss_mb: float | None = None
    check: str = ""
    ok: bool = True
    capped: bool = False  # killed at --rss-cap-mb: rss_mb is a lower bound
    detail: dict[str, Any] = field(default_factory=dict)

    def rate(self) -> float | None:
        return self.rows / self.seconds if self.seconds else None


@dataclass
class Report:
    """Every path measured on one file."""

    rows: int
    file: Path
    facts: dict[str, int]
    server: str
    measured: list[Measured] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def get(self, key: str) -> Measured | None:
        return next((m for m in self.measured if m.key == key and m.ok and m.seconds), None)

    def ratio(self, key: str) -> float | None:
        copy, other = self.get("copy"), self.get(key)
        if not copy or not other:
            return None
        copy_rate, rate = copy.rate(), other.rate()
        return rate / copy_rate if rate and copy_rate else None

    def worst_ratio(self, *keys: str) -> float | None:
        """The slower of first load and re-load: both must meet a target."""
        ratios = [self.ratio(k) for k in keys]
        known = [r for r in ratios if r is not None]
        return min(known) if len(known) == len(ratios) else None

    def peak_rss(self) -> str:
        """Peak RSS of our own paths (load step and whole flow, both loads); ``>N`` when one was killed."""
        ours = [m for m in self.measured if m.key.startswith(("load", "flow")) and m.rss_mb]
        if not ours:
            return "n/a"
        peak = max(m.rss_mb for m in ours if m.rss_mb)
        return f">{peak:.0f}" if any(m.capped for m in ours) else f"{peak:.0f}"


def representative(runs: list[Any], seconds: Callable[[Any], float], ok: Callable[[Any], bool]) -> Any:
    """The run of median time; a failed run instead, if any (a failure must show)."""
    failed = next((r for r in runs if not ok(r)), None)
    return failed or sorted(runs, key=seconds)[len(runs) // 2]


def medians(measured: list[Measured]) -> list[Measured]:
    """One row per path: the run of median time when a path ran several rounds (any failed
    run instead), its peak RSS the highest of all, its check listing every time."""
    keys = list(dict.fromkeys(m.key for m in measured))
    merged = []
    for key in keys:
        runs = [m for m in measured if m.key == key]
        if len(runs) == 1:
            merged.append(runs[0])
            continue
        chosen = representative(runs, lambda m: m.seconds or 0, lambda m: m.ok and m.seconds is not None)
        times = ", ".join(f"{m.seconds:.2f}" for m in runs if m.seconds is not None)
        peaks = [m.rss_mb for m in runs if m.rss_mb]
        merged.append(
            replace(
                chosen,
                rss_mb=max(peaks) if peaks else None,
                capped=any(m.capped for m in runs),
                check=f"{chosen.check}; median of {len(runs)} runs: {times} s",
            )
        )
    return merged


class Bench:
    """The paths on one file, each in a fresh database of its own."""

    def __init__(self, rows: int, keep: bool, dlt_python: str | None, cap_mb: float, repeat: int = 1) -> None:
        self.rows = rows
        self.repeat = repeat
        self.round = 0
        self.keep = keep
        self.dlt_python = dlt_python
        self.cap_mb = cap_mb
        self.tag = uuid.uuid4().hex[:8]
        self.work = Path(tempfile.mkdtemp(prefix=f"etl_bench_{self.tag}_"))
        self.databases: list[str] = []
        self.file, self.facts = cached_file(rows)
        self.report = Report(rows, self.file, self.facts, psql("postgres", "SHOW server_version"))

    def database(self, name: str) -> str:
        database = f"etl_bench_{self.tag}_{name}" + (f"_{self.round}" if self.round else "")
        psql("postgres", f"CREATE DATABASE {database}")
        self.databases.append(database)
        return database

    def done_with(self, database: str) -> None:
        """Drop a path's database once checked: its table's autovacuum must not run during
        the next path's measurement (unless --keep)."""
        if not self.keep:
            psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            self.databases.remove(database)

    def close(self) -> None:
        if self.keep:
            self.report.notes.append(f"kept: work dir {self.work}, databases {', '.join(self.databases)}")
            return
        for database in self.databases:
            psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(self.work, ignore_errors=True)

    def child(self, only: str, database: str, reload: bool = False, name: str | None = None) -> Child:
        """A path in a child process; the whole flow gets a home of its own each round."""
        quiesce()
        work = self.work / f"round{self.round}" if only == "flow" and self.round else self.work
        work.mkdir(exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "benchmarks.load",
            "--only",
            only,
            "--file",
            str(self.file),
            "--db",
            database,
            "--work",
            str(work),
        ]
        return run_child([*argv, "--reload"] if reload else argv, work, name or only, cap_mb=self.cap_mb)

    def add(self, measured: Measured) -> Measured:
        rate = measured.rate()
        log(f"{measured.label}: {measured.seconds or 0:.2f} s, {rate or 0:,.0f} rows/s, {measured.check}")
        self.report.measured.append(measured)
        return measured

    def from_child(
        self, key: str, label: str, child: Child, check: Callable[[Child], str], rows: int | None = None
    ) -> Measured:
        measured = Measured(
            key,
            label,
            int(child.result.get("rows", rows or self.rows)),
            child.result.get("seconds"),
            child.rss_mb,
            capped=child.killed,
            detail=child.result,
        )
        if child.error:
            measured.ok, measured.check = False, f"FAILED: {child.error}"
        else:
            try:
                measured.check = check(child)
            except AssertionError as exc:
                measured.ok, measured.check = False, f"FAILED: {exc}"
        return self.add(measured)

    # -- the paths ---------------------------------------------------------------------------
    def copy(self) -> None:
        database = self.database("copy")
        columns = ", ".join(f"{c.lower()} text" for c in COMPANY_COLUMNS)
        psql(database, f"CREATE TABLE companies_raw ({columns})")
        quiesce()
        command = (
            f"\\copy companies_raw FROM '{self.file}' WITH (FORMAT csv, DELIMITER ';', HEADER true, "
            "ENCODING 'UTF8')"
        )
        child = run_child(
            [*psql_argv(database), "-qc", command],
            self.work,
            "copy",
        )
        child.result = {"rows": self.rows, "seconds": child.wall}

        def check(_: Child) -> str:
            count = int(psql(database, "SELECT count(*) FROM companies_raw"))
            assert count == self.rows, f"{count} rows in companies_raw, expected {self.rows}"
            return f"ok: {count:,} rows"

        self.from_child("copy", "COPY: psql \\copy, unindexed text table", child, check)
        self.done_with(database)

    def load(self) -> None:
        if self.round == 0:
            log("preparing the transform output for the load step (extract + transform, not timed)")
            prepared = self.child("prepare", "postgres")
            if prepared.error:
                self.report.notes.append(f"load step not measured: prepare failed: {prepared.error}")
                return
        elif not (self.work / "prepare_home").exists():
            return
        self.first_and_reload("load", "load step (load_stage), first load", "load step", "all unchanged")

    def flow(self) -> None:
        parents = self.facts["parents"]

        def linked(database: str) -> str:
            count = int(psql(database, "SELECT count(parent_account_id) FROM accounts"))
            assert count == parents, f"{count} parents linked, expected {parents}"
            return f", {count:,} parents linked"

        first_label = "whole flow (extract>transform>load>link), first"
        self.first_and_reload("flow", first_label, "whole flow", "load+link all unchanged", linked)

    def first_and_reload(
        self,
        only: str,
        first_label: str,
        name: str,
        unchanged: str,
        extra: Callable[[str], str] | None = None,
    ) -> None:
        """A path's first load into a new database, then its re-load: the table must not change."""
        database = self.database(only)
        state: dict[str, tuple[int, str]] = {}

        def first(child: Child) -> str:
            state["first"] = table_state(database, "accounts")
            count = state["first"][0]
            assert count == self.rows, f"{count} rows in accounts, expected {self.rows}"
            return f"ok: {self.rows:,} inserted" + (extra(database) if extra else "")

        def again(child: Child) -> str:
            after = table_state(database, "accounts")
            assert after == state.get("first"), f"re-load changed the table: {state.get('first')} -> {after}"
            return f"ok: {unchanged}, table identical"

        if self.from_child(only, first_label, self.child(only, database), first).ok:
            reload = self.child(only, database, True, f"{only}_reload")
            self.from_child(f"{only}_reload", f"{name}, re-load", reload, again)
        else:
            self.report.notes.append(f"{name} re-load not run: the first load failed")
        self.done_with(database)

    def dlt(self) -> None:
        python = self.dlt_python
        if not python:
            self.report.notes.append(DLT_MISSING)
            return
        database = self.database("dlt")
        dsn = (
            f"postgresql://{PG_USER}:{os.environ.get('PGPASSWORD') or 'trust'}@{PG_HOST}:{PG_PORT}/{database}"
        )
        env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false", "RUNTIME__LOG_LEVEL": "WARNING"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

        def run(name: str) -> Child:
            quiesce()
            argv = [
                python,
                "-m",
                "benchmarks.dlt_peer",
                "--file",
                str(self.file),
                "--dsn",
                dsn,
                "--pipelines-dir",
                str(self.work / "dlt_pipelines"),
            ]
            return run_child(argv, self.work, name, env, self.cap_mb)

        def check(child: Child) -> str:
            count = int(psql(database, "SELECT count(*) FROM dlt_bench.companies"))
            assert count == self.rows, f"{count} rows in dlt_bench.companies, expected {self.rows}"
            return f"ok: {count:,} rows ({child.result.get('source', '?')}, {child.result.get('dlt', '?')})"

        if self.from_child("dlt", "dlt merge, first load", run("dlt"), check).ok:
            self.from_child("dlt_reload", "dlt merge, re-load", run("dlt_reload"), check)
        else:
            self.report.notes.append("dlt re-load not run: the first load failed")
        self.done_with(database)

    def floor(self) -> None:
        database = self.database("floor")
        expected = min(FLOOR_ROWS, self.rows)

        def check(_: Child) -> str:
            count = int(psql(database, "SELECT count(*) FROM companies_floor"))
            assert count == expected, f"{count} rows in companies_floor, expected {expected}"
            return f"ok: {count:,} rows"

        self.from_child(
            "floor",
            f"SQLAlchemy executemany, {expected // 1000}k rows, keyed",
            self.child("floor", database),
            check,
            expected,
        )

    def run(self, with_dlt: bool) -> Report:
        try:
            for round_ in range(self.repeat):  # COPY, load and flow interleaved, round by round
                self.round = round_
                if self.repeat > 1:
                    log(f"round {self.round + 1} of {self.repeat}")
                self.copy()
                self.load()
                self.flow()
            self.round = 0
            self.report.measured = medians(self.report.measured)
            if with_dlt:
                self.dlt()
            else:
                self.report.notes.append("dlt: skipped (--no-dlt)")
            self.floor()
        finally:
            self.close()
        return self.report


def find_dlt_python(given: str | None) -> str | None:
    """An interpreter that can import dlt: --dlt-python / ETL_BENCH_DLT_PYTHON, else this one."""
    candidate = given or os.environ.get("ETL_BENCH_DLT_PYTHON")
    if candidate:
        try:
            works = subprocess.run([candidate, "-c", "import dlt"], capture_output=True).returncode == 0
        except OSError:  # no such interpreter: the table says dlt is missing, the run goes on
            works = False
        return candidate if works else None
    return sys.executable if importlib.util.find_spec("dlt") else None


# -- printing -------------------------------------------------------------------------------


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_report(report: Report) -> None:
    """The table of one file, then the whole flow step by step."""
    print(
        f"\ncompanies load benchmark: {report.rows:,} rows, {report.facts['bytes'] / 1e6:.0f} MB "
        f"({report.file}), PostgreSQL {report.server} on {PG_HOST}:{PG_PORT}, {os.cpu_count()} cores"
    )
    header = (
        f"{'path':<50} {'rows':>11} {'seconds':>8} {'rows/s':>10} {'vs COPY':>7} {'peak RSS MB':>11}  check"
    )
    print(header)
    print("-" * len(header))
    for m in report.measured:
        ratio = report.ratio(m.key) if m.ok else None
        print(
            f"{m.label:<50} {m.rows:>11,} {_num(m.seconds, '.2f'):>8} {_num(m.rate(), ',.0f'):>10} "
            f"{_num(ratio, '.2f'):>7} {('>' if m.capped else '') + _num(m.rss_mb, ',.0f'):>11}  {m.check}"
        )
    for note in report.notes:
        print(note)
    flows = [m for m in report.measured if m.key in ("flow", "flow_reload") and m.ok]
    if not flows:
        return
    print("\nwhole flow by step: seconds (first load | re-load); step peak RSS MB from VmHWM reset per step")
    parts: dict[tuple[str, str], list[float | None]] = {}
    for column, m in enumerate(flows):
        for step, part, seconds in m.detail["segments"]:
            parts.setdefault((step, part), [None] * len(flows))[column] = seconds
    for (step, part), seconds in parts.items():
        cells = " | ".join(_num(s, "7.2f") for s in seconds)
        print(f"  {step:<10} {part:<64} {cells}")
    for step in ("extract", "transform", "load", "link"):
        peaks = " | ".join(_num(m.detail["peaks"].get(step), "7,.0f") for m in flows)
        print(f"  {step:<10} {'peak RSS MB during the step':<64} {peaks}")
    baseline = " | ".join(_num(m.detail.get("baseline_mb"), "7,.0f") for m in flows)
    print(f"  {'':<10} {'RSS MB after imports, before the flow':<64} {baseline}")


def final_line(reports: list[Report]) -> str:
    """``load_vs_copy=.. flow_vs_copy=.. dlt_vs_copy=.. peak_rss_mb_1m=.. peak_rss_mb_10m=..``."""
    main = reports[0]
    by_rows = {r.rows: r for r in reports}

    def rss(rows: int) -> str:
        return by_rows[rows].peak_rss() if rows in by_rows else "n/a"

    return (
        f"load_vs_copy={_num(main.worst_ratio('load', 'load_reload'), '.2f')} "
        f"flow_vs_copy={_num(main.worst_ratio('flow', 'flow_reload'), '.2f')} "
        f"dlt_vs_copy={_num(main.worst_ratio('dlt', 'dlt_reload'), '.2f')} "
        f"peak_rss_mb_1m={rss(1_000_000)} peak_rss_mb_10m={rss(10_000_000)}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        default=[1_000_000],
        help="row counts, each measured on its own file (ratios are those of the first)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of COPY, load step and whole flow, interleaved; the median run counts (default 1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work directory")
    parser.add_argument("--no-dlt", action="store_true", help="skip the dlt peer")
    parser.add_argument("--dlt-python", help="an interpreter with dlt (default: this one, if it has dlt)")
    parser.add_argument(
        "--rss-cap-mb", type=float, default=12_000, help="kill a path whose RSS passes this (default 12000)"
    )
    parser.add_argument("--only", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--reload", action="store_true", help=argparse.SUPPRESS)
    for name in ("--file", "--db", "--work", "--result"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        return child_main(args)
    dlt_python = None if args.no_dlt else find_dlt_python(args.dlt_python)
    reports = []
    for rows in args.rows:
        log(f"benchmark of {rows:,} rows")
        bench = Bench(rows, args.keep, dlt_python, args.rss_cap_mb, args.repeat)
        report = bench.run(with_dlt=not args.no_dlt)
        print_report(report)
        reports.append(report)
    print()
    print(final_line(reports))
    failed = [m.label for r in reports for m in r.measured if not m.ok]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
