"""Load overhead of a code location with many flows (issue 24, point 5).

``python -m benchmarks.many_flows --flows 3 30 100`` builds, per count, a new dev ETL_HOME
whose ``flows/`` folder holds copies of the companies sample (``flowNNN``: its name, table and
source folder replaced) beside the package's sample flows (companies, contacts, offers: 3 flows
with no copy), one 10-row companies file in ``import/`` and a new DAGSTER_HOME, then times as
subprocesses:

- ``dagster definitions validate -m etl_assets.definitions`` (every definition built), wall
  and CPU seconds (the machine is shared: CPU time varies less);
- ``dagster-webserver`` until its GraphQL lists the repository (``DagsterServer`` of the tests,
  no daemon);
- ``dagster asset materialize -m etl_assets.definitions --select group:companies --partition
  <day>``: one partition of one flow, all four steps and their checks (its run's processes
  load the code location again), wall and CPU seconds.

Each ``--repeat`` times (default 3, the median counts), the counts interleaved; it checks
each exit code and that the run succeeded. Prints a table and, last, the ratios of the
largest count to the smallest: ``validate_ratio=.. validate_cpu_ratio=.. webserver_ratio=..
run_ratio=.. run_cpu_ratio=..``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from benchmarks.load.common import log
from benchmarks.orchestration import ROOT, Home, dagster_cli, make_home, materialize
from etl_assets_tests.services.dagster_server import DagsterServer

SAMPLE = ROOT / "etl_assets" / "defs" / "companies" / "defs.yaml"
SAMPLE_FLOWS = 3  # companies, contacts, offers (kpi_report is a report)
DAY = date(2026, 1, 5)
MEASURES = ("validate", "validate_cpu", "webserver", "run", "run_cpu")


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished subprocesses so far: on a shared machine a
    steadier measure of the work a command does than its wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_flows(etl_home: Path, count: int) -> None:
    """``count`` copies of the companies sample under ETL_HOME/flows, each its own table."""
    text = SAMPLE.read_text(encoding="utf-8")
    for index in range(count):
        name = f"flow{index:03d}"
        folder = etl_home / "flows" / name
        folder.mkdir(parents=True)
        copy = text.replace("companies", name).replace("accounts", f"{name}_accounts")
        (folder / "defs.yaml").write_text(copy, encoding="utf-8")


def validate(home: Home, log_path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``dagster definitions validate``; raises when it fails."""
    argv = [dagster_cli(), "definitions", "validate", "-m", "etl_assets.definitions"]
    started, cpu = time.perf_counter(), children_cpu()
    with log_path.open("wb") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=home.env)
    seconds = time.perf_counter() - started
    if code.returncode != 0:
        raise RuntimeError(f"definitions validate exited {code.returncode}: see {log_path}")
    return seconds, children_cpu() - cpu


def webserver(home: Home) -> float:
    """Seconds from spawning ``dagster-webserver`` until its GraphQL lists the repository."""
    server = DagsterServer(ROOT, home.dagster_home, home.env, base_env={}, daemon=False)
    started = time.perf_counter()
    with server:
        return time.perf_counter() - started


def one_partition(home: Home, log_path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of a one-partition CLI run of the companies flow; raises when it
    fails."""
    cpu = children_cpu()
    seconds, code, run_ok = materialize(home, [DAY], log_path)
    if code != 0 or not run_ok:
        raise RuntimeError(f"materialize exited {code} (run ok: {run_ok}): see {log_path}")
    return seconds, children_cpu() - cpu


def measure(base: Path, flows: int, round_: int) -> dict[str, float]:
    """One round of the three measures at ``flows`` flows, on a new ETL_HOME and instance."""
    home = make_home(base, f"{flows}-{round_}", [DAY], rows=10)
    write_flows(home.etl_home, flows - SAMPLE_FLOWS)
    logs = base / f"{flows}-{round_}"
    result: dict[str, float] = {}
    result["validate"], result["validate_cpu"] = validate(home, logs / "validate.log")
    result["webserver"] = webserver(home)
    result["run"], result["run_cpu"] = one_partition(home, logs / "run.log")
    log(f"{flows} flows: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.items()))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, nargs="+", default=[3, 30, 100])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if min(args.flows) < SAMPLE_FLOWS:
        parser.error(f"--flows: at least {SAMPLE_FLOWS} (the sample flows)")
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.flows}
    with tempfile.TemporaryDirectory(prefix="many_flows_") as tmp:
        for round_ in range(args.repeat):
            for flows in args.flows:
                runs[flows].append(measure(Path(tmp), flows, round_))
    median = {n: {m: statistics.median(r[m] for r in rs) for m in MEASURES} for n, rs in runs.items()}
    print("| flows | " + " | ".join(f"{m} s" for m in MEASURES) + " |")
    print("|---|" + "---|" * len(MEASURES))
    for n, values in median.items():
        spread = {m: ", ".join(f"{r[m]:.2f}" for r in runs[n]) for m in MEASURES}
        print(f"| {n} | " + " | ".join(f"{values[m]:.2f} ({spread[m]})" for m in MEASURES) + " |")
    low, high = min(args.flows), max(args.flows)
    print(" ".join(f"{m}_ratio={median[high][m] / median[low][m]:.2f}" for m in MEASURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
