"""What every part of the benchmark shares: where things are, the server, progress."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the project root
CACHE = Path(os.environ.get("ETL_BENCH_CACHE", "/tmp/etl_bench_cache"))
PG_HOST = os.environ.get("ETL_BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ETL_BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("ETL_BENCH_PG_USER", "postgres")
EXECUTEMANY_ROWS = 100_000
PARTITION_KEY = "2026-01-15"
PARTITION_START = datetime(2026, 1, 15)
DELTA_PARTITION_KEY = "2026-01-16"  # the daily delta: the next day's delivery
DELTA_PARTITION_START = datetime(2026, 1, 16)
DLT_MISSING = "dlt: not installed (pip install dlt[postgres])"


def log(message: str) -> None:
    """Progress on a terminal only."""
    if sys.stderr.isatty():
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _mb(kilobytes: float) -> float:
    return kilobytes / 1024
