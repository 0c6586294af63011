"""The load modes (``--modes upsert,snapshot,history``): each mode's load step on the same
transform output, four deliveries in a row into one database of its own:

- first: the file into an empty table (all ``inserted``);
- re-load: the same file again (all ``unchanged``, table identical);
- changed: 10% of the rows with another name (``updated``; history opens a version each);
- missing: the changed delivery less 5% of its rows (snapshot marks them deleted, upsert and
  history leave them).

Each delivery is ``load_delivery`` (engine/load/modes.py) in one transaction, in a child
process (``--only mode --mode M --phase P``). The deliveries' files are derived from the
prepared ``transform.parquet`` once, untimed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import polars as pl

PHASES = ("first", "reload", "changed", "missing")
CHANGED_EVERY = 10  # 10% of the rows changed
MISSING_EVERY = 20  # 5% of the rows missing


def delivery_files(work: Path) -> dict[str, Path]:
    """The transform output of each phase: the prepared one, 10% changed, then 5% missing."""
    from benchmarks.load.paths import prepared_stage

    prepared = prepared_stage(work).file("transform.parquet")
    folder = work / "mode_deliveries"
    files = {"first": prepared, "reload": prepared, "changed": folder / "changed.parquet"}
    files["missing"] = folder / "missing.parquet"
    if not files["missing"].exists():
        folder.mkdir(exist_ok=True)
        frame = pl.read_parquet(prepared).with_row_index("_n")
        changed = frame.with_columns(
            pl.when(pl.col("_n") % CHANGED_EVERY == 0)
            .then(pl.col("name") + " (changed)")
            .otherwise(pl.col("name"))
            .alias("name")
        )
        changed.drop("_n").write_parquet(files["changed"])
        changed.filter(pl.col("_n") % MISSING_EVERY != 1).drop("_n").write_parquet(files["missing"])
    return files


def expected(mode: str, phase: str, rows: int) -> tuple[dict[str, int], int]:
    """The actions a phase must answer with, and the rows the table then holds."""
    changed = len(range(0, rows, CHANGED_EVERY))
    missing = len(range(1, rows, MISSING_EVERY))
    versions = rows + changed if mode == "history" else rows
    if phase == "first":
        return {"inserted": rows}, rows
    if phase == "reload":
        return {"unchanged": rows}, rows
    if phase == "changed":
        return {"updated": changed, "unchanged": rows - changed}, versions
    answer = {"unchanged": rows - missing}
    if mode == "snapshot":
        answer["deleted"] = missing
    return answer, versions


def work_mode(args: argparse.Namespace) -> dict[str, Any]:
    """One delivery of one mode's phase, timed: ``load_delivery`` in one transaction."""
    import time

    from benchmarks.load.common import PARTITION_KEY
    from benchmarks.load.paths import _engine, companies_flow
    from etl_assets.engine.load.modes import load_delivery
    from etl_assets.engine.load.response import RESPONSE_SCHEMA
    from etl_assets.engine.staging import StagedWriter

    flow = companies_flow()
    flow = flow.model_copy(update={"target": flow.target.model_copy(update={"mode": args.mode})})
    good = delivery_files(Path(args.work))[args.phase]
    engine = _engine(args.db)
    response_path = Path(args.work) / f"mode_{args.mode}_{args.phase}_load.parquet"
    started = time.perf_counter()
    with StagedWriter(response_path, RESPONSE_SCHEMA) as response, engine.begin() as conn:
        loaded = load_delivery(conn, flow, good, response, partition=PARTITION_KEY)
    seconds = time.perf_counter() - started
    actions = {a: n for a, n in loaded.actions.items() if n}
    return {"seconds": seconds, "rows": loaded.rows_in, "actions": actions, "notes": loaded.notes}


def run_modes(bench: Any, modes: list[str]) -> None:
    """Each mode's four deliveries (parent side), each checked against ``expected``."""
    if not (bench.work / "prepare_home").exists():
        bench.report.notes.append("load modes not measured: the transform output was not prepared")
        return
    for mode in modes:
        database = bench.database(f"mode_{mode}")
        first_state: list[tuple[int, str]] = []
        for phase in PHASES:
            extra = ["--mode", mode, "--phase", phase]
            child = bench.child("mode", database, name=f"mode_{mode}_{phase}", extra=extra)
            check = _checker(bench.rows, database, mode, phase, first_state)
            if not bench.from_child(f"mode_{mode}_{phase}", f"load mode {mode}, {phase}", child, check).ok:
                bench.report.notes.append(f"load mode {mode}: stopped after {phase} failed")
                break
        bench.done_with(database)


def _checker(rows: int, database: str, mode: str, phase: str, first_state: list) -> Any:
    """The check of one phase: its actions, the rows the table holds, a re-load's table identical."""
    from benchmarks.load.children import table_state

    def check(done: Any) -> str:
        actions, held = expected(mode, phase, rows)
        got = done.result.get("actions")
        assert got == actions, f"actions {got}, expected {actions}"
        state = table_state(database, "accounts")
        assert state[0] == held, f"{state[0]} rows in accounts, expected {held}"
        if phase == "first":
            first_state.append(state)
        if phase == "reload":
            assert state == first_state[0], "the re-load changed the table"
        return f"ok: {', '.join(f'{a} {n:,}' for a, n in actions.items())}"

    return check


def mode_lines(report: Any, modes: list[str]) -> list[str]:
    """A line per mode with each phase's ratio to COPY; then history's time against upsert's."""
    lines = []
    for mode in modes:
        cells = " ".join(f"{phase}={_ratio(report.ratio(f'mode_{mode}_{phase}'))}" for phase in PHASES)
        lines.append(f"mode_{mode}_vs_copy {cells}")
    if "history" in modes and "upsert" in modes:
        worst = []
        for phase in PHASES:
            history, upsert = report.get(f"mode_history_{phase}"), report.get(f"mode_upsert_{phase}")
            if history and upsert:
                worst.append(history.seconds / upsert.seconds)
        shown = f"{max(worst):.2f}" if len(worst) == len(PHASES) else "n/a"
        lines.append(f"history_vs_upsert_time_worst={shown} (limit 2.00)")
    return lines


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
