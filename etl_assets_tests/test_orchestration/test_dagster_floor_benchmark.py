"""benchmarks.dagster_floor at CI size: its generated module validates in both shapes (a
broken shape fails the command), and the last line scripts read is there. Speed is the
benchmark's business, not this test's."""

from __future__ import annotations

import re
from pathlib import Path

from etl_assets_tests.benchmark_cli import run_benchmark


def test_dagster_alone_validates_both_shapes_and_prints_the_ratios(tmp_path: Path) -> None:
    done = run_benchmark(
        "dagster_floor", *("--flows", "1", "2", "--repeat", "1"), env={"DAGSTER_HOME": str(tmp_path)}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    rows = [line for line in lines if re.match(r"\| (jobs|assets) \| [12] \|", line)]
    assert len(rows) == 4, done.stdout
    number = r"-?[0-9.]+"
    assert re.fullmatch(
        rf"jobs_ratio={number} assets_ratio={number} jobs_ms_per_flow={number} assets_ms_per_flow={number}",
        lines[-1],
    ), lines[-1]
