"""The command line: the parent runs every path per row count, a child (``--only``) one path."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

from benchmarks import load as package
from benchmarks.load.common import log
from benchmarks.load.modes import mode_lines
from benchmarks.load.paths import WORKERS, child_main
from benchmarks.load.report import delta_step_line, final_line, print_report
from benchmarks.load.runner import Bench


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=package.__doc__.splitlines()[0]
    )
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
        help="rounds of COPY, keyed floor, load step and whole flow (first, re-load, delta), "
        "interleaved; the median run counts (default 1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work directory")
    parser.add_argument("--no-dlt", action="store_true", help="skip the dlt peer")
    parser.add_argument("--dlt-python", help="an interpreter with dlt (default: this one, if it has dlt)")
    parser.add_argument(
        "--rss-cap-mb", type=float, default=12_000, help="kill a path whose RSS passes this (default 12000)"
    )
    parser.add_argument(
        "--modes",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        default=[],
        help="load modes measured beside, e.g. upsert,snapshot,history: first load, re-load, "
        "10%% changed, 5%% missing each (benchmarks/load/modes.py)",
    )
    parser.add_argument("--only", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--reload", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--delta", action="store_true", help=argparse.SUPPRESS)
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
        bench = Bench(rows, args.keep, dlt_python, args.rss_cap_mb, args.repeat, args.modes)
        report = bench.run(with_dlt=not args.no_dlt)
        print_report(report)
        print(delta_step_line(report))
        for line in mode_lines(report, args.modes):
            print(line)
        reports.append(report)
    print()
    print(final_line(reports))
    failed = [m.label for r in reports for m in r.measured if not m.ok]
    return 1 if failed else 0
