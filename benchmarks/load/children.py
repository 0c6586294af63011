"""The parent's tools: psql on the benchmark's server, a quiet server, child processes and their peak RSS."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.load.common import PG_HOST, PG_PORT, PG_USER, ROOT, _mb


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


def psql_with_keys(database: str, keys: Path, sql: str) -> str:
    """``sql`` in a session whose temporary table ``keys (k text)`` holds the lines of ``keys``."""
    done = subprocess.run(
        [
            *psql_argv(database),
            "-Atq",
            "-c",
            "CREATE TEMP TABLE keys (k text PRIMARY KEY)",
            "-c",
            f"\\copy keys FROM '{keys}'",
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"psql {database}: {done.stderr.strip()}")
    return done.stdout.strip()
