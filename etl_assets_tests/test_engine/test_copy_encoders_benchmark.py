"""benchmarks.copy_encoders at CI size: every encoder writes the same table as ours (its md5
check), and the last line scripts read is there. Speed is the benchmark's business, not this test's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from etl_assets_tests.services.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]


def test_every_encoder_writes_what_ours_writes(postgres: PostgresServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ETL_BENCH_CACHE": str(tmp_path / "cache"),
        "ETL_BENCH_PG_HOST": postgres.host,
        "ETL_BENCH_PG_PORT": str(postgres.port),
        "ETL_BENCH_PG_USER": postgres.user,
        "PGPASSWORD": postgres.password,  # libpq's: psql, psycopg and ADBC all read it
    }
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.copy_encoders", "--rows", "2000", "--repeat", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2].startswith("checks: every typed path's md5"), done.stdout
    adbc = r"n/a" if "adbc: not installed" in done.stdout else r"[0-9.]+"
    assert re.fullmatch(
        rf"ours_s=[0-9.]+ adbc_s={adbc} psycopg_rows_s=[0-9.]+ adbc_vs_ours={adbc}", lines[-1]
    ), lines[-1]
