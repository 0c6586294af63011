"""The dlt peer of ``benchmarks.load``: dlt's ``merge`` of a companies file into PostgreSQL.

Run by ``benchmarks.load`` as a child (possibly with another interpreter, ``--dlt-python``),
so it imports only the standard library, dlt and, when present, pyarrow: never etl_assets.
With pyarrow the file streams in as Arrow record batches (dlt's fastest path, loaded with
COPY from csv files); without it, as dicts from the csv module. All columns are text.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BATCH_ROWS = 100_000


def arrow_batches(path: str) -> Iterator[Any]:
    """The file as Arrow record batches of strings (``;``, quoted line breaks)."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    with open(path, "rb") as handle:
        names = handle.readline().decode("utf-8").strip().split(";")
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=64 << 20),
        parse_options=pacsv.ParseOptions(delimiter=";", newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}),
    )
    yield from reader


def dict_batches(path: str) -> Iterator[list[dict[str, str]]]:
    """The file as lists of dicts (no pyarrow)."""
    with open(path, encoding="utf-8", newline="") as handle:
        batch: list[dict[str, str]] = []
        for row in csv.DictReader(handle, delimiter=";"):
            batch.append(row)
            if len(batch) == BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch


def merge(path: str, dsn: str, pipelines_dir: str) -> dict[str, Any]:
    """One ``pipeline.run`` with ``write_disposition='merge'`` on COMPANY_ID; its time."""
    import dlt

    arrow = importlib.util.find_spec("pyarrow") is not None
    rows = 0

    def counted() -> Iterator[Any]:
        nonlocal rows
        for batch in (arrow_batches if arrow else dict_batches)(path):
            rows += batch.num_rows if arrow else len(batch)
            yield batch

    pipeline = dlt.pipeline(
        pipeline_name="etl_bench",
        destination=dlt.destinations.postgres(dsn),
        dataset_name="dlt_bench",
        pipelines_dir=pipelines_dir,
    )
    resource = dlt.resource(counted, name="companies", write_disposition="merge", primary_key="COMPANY_ID")
    started = time.perf_counter()
    info = pipeline.run(resource(), loader_file_format="csv" if arrow else None)
    seconds = time.perf_counter() - started
    info.raise_on_failed_jobs()
    return {
        "seconds": seconds,
        "rows": rows,
        "source": "arrow batches, csv + COPY" if arrow else "dicts, insert_values",
        "dlt": f"dlt {dlt.__version__}",
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float | None:
    """This process's VmHWM (its own peak RSS, unlike ru_maxrss after fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dlt_peer", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--file", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    try:
        result = merge(args.file, args.dsn, args.pipelines_dir)
    except Exception as exc:  # the parent shows the reason in its table
        Path(args.result).write_text(json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:300]}"}))
        raise
    Path(args.result).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
