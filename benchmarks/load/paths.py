"""The child side: one measured path per process (``--only <path>``), its result as JSON."""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.load.common import (
    DELTA_PARTITION_KEY,
    DELTA_PARTITION_START,
    EXECUTEMANY_ROWS,
    PARTITION_KEY,
    PARTITION_START,
    PG_HOST,
    PG_PORT,
    PG_USER,
    ROOT,
    _mb,
)
from benchmarks.load.floor import work_keyed_floor
from benchmarks.load.modes import work_mode


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


def _resources(home: Path, source: Path, flow: Any, start: datetime = PARTITION_START) -> tuple[Any, Any]:
    """Local files (the source linked in as the partition's file name) and the runtime folders."""
    from etl_assets.engine.partition_keys import source_file_name
    from etl_assets.resources import FoldersResource, LocalFilesResource

    imports = home / "import"
    imports.mkdir(parents=True, exist_ok=True)
    target = imports / source_file_name(flow, start)
    if not target.exists():
        try:
            target.hardlink_to(source)
        except OSError:
            target.symlink_to(source)
    return LocalFilesResource(root=str(imports)), FoldersResource(home=str(home))


def _expect_actions(what: str, actions: dict[str, int], allowed: set[str]) -> None:
    other = {a: n for a, n in actions.items() if a not in allowed}
    assert not other, f"{what}: expected only {sorted(allowed)}, got {actions}"


def work_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Extract and transform (not timed): the input of the load-step path."""
    from etl_assets.engine.extract import extract_partition
    from etl_assets.engine.staging import PartitionStage
    from etl_assets.engine.transform.stage import transform_stage

    flow = companies_flow()
    home = Path(args.work) / prepared_home(args.delta)
    files, folders = _resources(home, Path(args.file), flow)
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
        loaded = load_stage(conn, flow, stage.file("transform.parquet"), response)
    for write in getattr(loaded, "after_commit", ()):  # the table's snapshot, as FlowSteps._load
        write(engine)
    return loaded


def prepared_home(delta: bool = False) -> str:
    """The folder ``prepare`` leaves the first file's (or the delta's) transform output in."""
    return "prepare_delta_home" if delta else "prepare_home"


def prepared_stage(work: Path, delta: bool = False) -> Any:
    """The staged files ``prepare`` left: the load step's input."""
    from etl_assets.engine.staging import PartitionStage
    from etl_assets.resources import FoldersResource

    return PartitionStage(
        companies_flow().name, PARTITION_KEY, FoldersResource(home=str(work / prepared_home(delta)))
    )


def _allowed(args: argparse.Namespace, first: set[str]) -> set[str]:
    """The actions a step may answer with: a first load's, all unchanged, or (the delta's) any;
    the parent checks the delta's counts against the generator's."""
    if args.delta:
        return first | {"updated", "unchanged"}
    return {"unchanged"} if args.reload else first


def work_load(args: argparse.Namespace) -> dict[str, Any]:
    """The load step: transform.parquet upserted a batch at a time, in one transaction."""
    flow = companies_flow()
    stage = prepared_stage(Path(args.work), args.delta)
    engine = _engine(args.db)
    baseline = _vm_hwm_mb()
    started = time.perf_counter()
    loaded = _load(flow, stage, engine)
    seconds = time.perf_counter() - started
    actions = {a: n for a, n in loaded.actions.items() if n}
    _expect_actions("load", actions, _allowed(args, {"inserted"}))
    return {"seconds": seconds, "rows": loaded.rows_in, "actions": actions, "baseline_mb": baseline}


EXTRACT = "FlowSteps.extract (fetch, sha256, backup, decode, parse, parquet)"
TRANSFORM = "FlowSteps.transform (map, duplicates, parquet, catcher)"
LOAD = "FlowSteps.load (upsert in one transaction, catcher, reconcile counts)"
LINK = "FlowSteps.link (links in one transaction, catcher)"


def work_flow(args: argparse.Namespace) -> dict[str, Any]:
    """The whole flow for one partition: the ``FlowSteps`` calls the Dagster assets make, step by step."""
    from etl_assets.engine.ledger.record import Ledger
    from etl_assets.engine.load.partition_loads import utc_now
    from etl_assets.engine.steps import FlowSteps

    flow = companies_flow()
    key, start = PARTITION_KEY, PARTITION_START
    if args.delta:  # the next day's delivery
        key, start = DELTA_PARTITION_KEY, DELTA_PARTITION_START
    files, folders = _resources(Path(args.work) / "flow_home", Path(args.file), flow, start)
    engine = _engine(args.db)
    # with the ledger, as a Dagster run has it: its rows and the target's etl_object_id are measured
    run_id = f"benchmark-{'delta' if args.delta else args.reload}"
    steps = FlowSteps(flow, folders, ledger=Ledger(flow, run_id, lambda: engine))
    clock = Clock(progress=Path(args.result).with_suffix(".progress"))
    baseline = _vm_hwm_mb()
    started = time.perf_counter()
    with clock.step("extract"), clock.part("extract", EXTRACT):
        extracted = steps.extract(key, start, files)
    with clock.step("transform"), clock.part("transform", TRANSFORM):
        transformed = steps.transform(key)
    assert transformed.caught.count == 0, f"transform rejected {transformed.caught.count} generated rows"
    with clock.step("load"), clock.part("load", LOAD):
        loaded = steps.load(key, engine)
    now = utc_now()
    with clock.step("link"), clock.part("link", LINK):
        linked = steps.link(key, engine, now)
    seconds = time.perf_counter() - started
    load_actions = {a: n for a, n in loaded.loaded.actions.items() if n}
    link_actions = {a: n for a, n in linked.linked.actions.items() if n}
    _expect_actions("load", load_actions, _allowed(args, {"inserted"}))
    _expect_actions("link", link_actions, _allowed(args, {"updated", "unchanged"}))
    return {
        "seconds": seconds,
        "rows": extracted.extracted.rows,
        "good": transformed.good_rows,
        "load_actions": load_actions,
        "link_actions": link_actions,
        "segments": clock.segments,
        "peaks": clock.peaks,
        "baseline_mb": baseline,
    }


def work_executemany(args: argparse.Namespace) -> dict[str, Any]:
    """SQLAlchemy Core executemany of the first rows into a text table keyed on COMPANY_ID."""
    import sqlalchemy as sa

    frame = pl.read_csv(args.file, separator=";", infer_schema=False, n_rows=EXECUTEMANY_ROWS)
    rows = frame.rename(str.lower).to_dicts()
    metadata = sa.MetaData()
    table = sa.Table(
        "companies_executemany",
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
    "executemany": work_executemany,
    "keyed_floor": work_keyed_floor,
    "mode": work_mode,
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
