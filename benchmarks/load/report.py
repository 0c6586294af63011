"""The table of one file, its medians over rounds, and the last line."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.load.common import PG_HOST, PG_PORT


@dataclass
class Measured:
    """One row of the table."""

    key: str
    label: str
    rows: int
    seconds: float | None = None
    rss_mb: float | None = None
    check: str = ""
    ok: bool = True
    capped: bool = False  # killed at --rss-cap-mb: rss_mb is a lower bound
    detail: dict[str, Any] = field(default_factory=dict)

    def rate(self) -> float | None:
        return self.rows / self.seconds if self.seconds else None


@dataclass
class Report:
    """Every path measured on one file."""

    rows: int
    file: Path
    facts: dict[str, int]
    server: str
    measured: list[Measured] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    delta_facts: dict[str, int] = field(default_factory=dict)

    def get(self, key: str) -> Measured | None:
        return next((m for m in self.measured if m.key == key and m.ok and m.seconds), None)

    def ratio(self, key: str) -> float | None:
        copy, other = self.get("copy"), self.get(key)
        if not copy or not other:
            return None
        copy_rate, rate = copy.rate(), other.rate()
        return rate / copy_rate if rate and copy_rate else None

    def time_ratio(self, key: str, other: str) -> float | None:
        """``other``'s time over ``key``'s (load_vs_floor: the floor's over the load step's)."""
        one, two = self.get(key), self.get(other)
        return two.seconds / one.seconds if one and two and one.seconds and two.seconds else None

    def step_ratio(self, step: str) -> float | None:
        """A step's time in the whole flow's delta over its time in the first load."""
        first, delta = self.get("flow"), self.get("flow_delta")
        if not first or not delta:
            return None
        seconds = [sum(t for s, _, t in m.detail.get("segments", []) if s == step) for m in (first, delta)]
        return seconds[1] / seconds[0] if seconds[0] else None

    def peak_rss(self) -> str:
        """Peak RSS of our own paths (load step and whole flow, both loads); ``>N`` when one was killed."""
        ours = [m for m in self.measured if m.key.startswith(("load", "flow")) and m.rss_mb]
        if not ours:
            return "n/a"
        peak = max(m.rss_mb for m in ours if m.rss_mb)
        return f">{peak:.0f}" if any(m.capped for m in ours) else f"{peak:.0f}"


def representative(runs: list[Any], seconds: Callable[[Any], float], ok: Callable[[Any], bool]) -> Any:
    """The run of median time; a failed run instead, if any (a failure must show)."""
    failed = next((r for r in runs if not ok(r)), None)
    return failed or sorted(runs, key=seconds)[len(runs) // 2]


def medians(measured: list[Measured]) -> list[Measured]:
    """One row per path: the run of median time when a path ran several rounds (any failed
    run instead), its peak RSS the highest of all, its check listing every time."""
    keys = list(dict.fromkeys(m.key for m in measured))
    merged = []
    for key in keys:
        runs = [m for m in measured if m.key == key]
        if len(runs) == 1:
            merged.append(runs[0])
            continue
        chosen = representative(runs, lambda m: m.seconds or 0, lambda m: m.ok and m.seconds is not None)
        times = ", ".join(f"{m.seconds:.2f}" for m in runs if m.seconds is not None)
        peaks = [m.rss_mb for m in runs if m.rss_mb]
        merged.append(
            replace(
                chosen,
                rss_mb=max(peaks) if peaks else None,
                capped=any(m.capped for m in runs),
                check=f"{chosen.check}; median of {len(runs)} runs: {times} s",
            )
        )
    return merged


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_report(report: Report) -> None:
    """The table of one file, then the whole flow step by step."""
    print(
        f"\ncompanies load benchmark: {report.rows:,} rows, {report.facts['bytes'] / 1e6:.0f} MB "
        f"({report.file}), PostgreSQL {report.server} on {PG_HOST}:{PG_PORT}, {os.cpu_count()} cores"
    )
    header = (
        f"{'path':<50} {'rows':>11} {'seconds':>8} {'rows/s':>10} {'vs COPY':>7} {'peak RSS MB':>11}  check"
    )
    print(header)
    print("-" * len(header))
    for m in report.measured:
        ratio = report.ratio(m.key) if m.ok else None
        print(
            f"{m.label:<50} {m.rows:>11,} {_num(m.seconds, '.2f'):>8} {_num(m.rate(), ',.0f'):>10} "
            f"{_num(ratio, '.2f'):>7} {('>' if m.capped else '') + _num(m.rss_mb, ',.0f'):>11}  {m.check}"
        )
    for note in report.notes:
        print(note)
    facts = report.delta_facts
    if facts:
        print(
            f"daily delta: {facts['rows']:,} rows, {facts['changed']:,} changed "
            f"({facts['parents_changed']:,} of them parents, {facts['relinked']:,} with another PARENT_VAT), "
            f"{facts['new']:,} new "
            f"({facts['new_with_parent']:,} with a parent), {facts['missing']:,} missing"
        )
    flows = [m for m in report.measured if m.key in ("flow", "flow_reload", "flow_delta") and m.ok]
    if not flows:
        return
    names = {"flow": "first load", "flow_reload": "re-load", "flow_delta": "delta"}
    shown = " | ".join(names[m.key] for m in flows)
    print(f"\nwhole flow by step: seconds ({shown}); step peak RSS MB from VmHWM reset per step")
    parts: dict[tuple[str, str], list[float | None]] = {}
    for column, m in enumerate(flows):
        for step, part, seconds in m.detail["segments"]:
            parts.setdefault((step, part), [None] * len(flows))[column] = seconds
    width = max(64, *(len(part) for _, part in parts))  # the labels of the parts, aligned
    for (step, part), seconds in parts.items():
        cells = " | ".join(_num(s, "7.2f") for s in seconds)
        print(f"  {step:<10} {part:<{width}} {cells}")
    for step in ("extract", "transform", "load", "link"):
        peaks = " | ".join(_num(m.detail["peaks"].get(step), "7,.0f") for m in flows)
        print(f"  {step:<10} {'peak RSS MB during the step':<{width}} {peaks}")
    baseline = " | ".join(_num(m.detail.get("baseline_mb"), "7,.0f") for m in flows)
    print(f"  {'':<10} {'RSS MB after imports, before the flow':<{width}} {baseline}")


def delta_step_line(report: Report) -> str:
    """The delta's load and link steps against their first-load times (target: each under 1/3)."""
    load, link = (_num(report.step_ratio(step), ".2f") for step in ("load", "link"))
    return f"delta_step_vs_first load={load} link={link} (target: each < 0.33)"


def final_line(reports: list[Report]) -> str:
    """``load_vs_copy=.. flow_vs_copy=.. delta_flow_vs_copy=.. identical_flow_vs_copy=..
    load_vs_floor=.. dlt_vs_copy=.. peak_rss_mb_1m=.. peak_rss_mb_10m=..``, of the first size."""
    main = reports[0]
    by_rows = {r.rows: r for r in reports}

    def rss(rows: int) -> str:
        return by_rows[rows].peak_rss() if rows in by_rows else "n/a"

    return (
        f"load_vs_copy={_num(main.ratio('load'), '.2f')} "
        f"flow_vs_copy={_num(main.ratio('flow'), '.2f')} "
        f"delta_flow_vs_copy={_num(main.ratio('flow_delta'), '.2f')} "
        f"identical_flow_vs_copy={_num(main.ratio('flow_reload'), '.2f')} "
        f"load_vs_floor={_num(main.time_ratio('load', 'keyed_floor'), '.2f')} "
        f"dlt_vs_copy={_num(main.ratio('dlt'), '.2f')} "
        f"peak_rss_mb_1m={rss(1_000_000)} peak_rss_mb_10m={rss(10_000_000)}"
    )
