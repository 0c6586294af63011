"""benchmarks.copy_encoders at CI size: every encoder writes the same table as ours (its md5
check), and the last line scripts read is there. Speed is the benchmark's business, not this test's."""

from __future__ import annotations

import re
from pathlib import Path

from etl_assets_tests.benchmark_cli import run_benchmark
from etl_assets_tests.services.postgres import PostgresServer


def test_every_encoder_writes_what_ours_writes(postgres: PostgresServer, tmp_path: Path) -> None:
    done = run_benchmark(
        "copy_encoders",
        *("--rows", "2000", "--repeat", "1"),
        env={
            "ETL_BENCH_CACHE": str(tmp_path / "cache"),
            "ETL_BENCH_PG_HOST": postgres.host,
            "ETL_BENCH_PG_PORT": str(postgres.port),
            "ETL_BENCH_PG_USER": postgres.user,
            "PGPASSWORD": postgres.password,  # libpq's: psql, psycopg and ADBC all read it
        },
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2].startswith("checks: every typed path's md5"), done.stdout
    adbc = r"n/a" if "adbc: not installed" in done.stdout else r"[0-9.]+"
    assert re.fullmatch(
        rf"ours_s=[0-9.]+ adbc_s={adbc} psycopg_rows_s=[0-9.]+ adbc_vs_ours={adbc}", lines[-1]
    ), lines[-1]
