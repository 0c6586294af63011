"""Two threads beside a scenario: one samples the memory of a process tree, one drops offers
files into the import folder the way the CRM does, only faster."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from etl_assets.samples import offers_file

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


# What each process of the tree is, from its command line (as seen with Dagster 1.13.27): the
# daemon's code server starts each run worker with multiprocessing (spawn), and each worker
# captures its output through two `tail -F` with a watcher each.
KINDS = (
    ("spawn_main", "run worker"),
    ("resource_tracker", "multiprocessing tracker"),
    ("watch_orphans", "log watcher"),
    ("tail -F", "log tail"),
    ("api grpc", "code server"),
    ("dagster-webserver", "webserver"),
    ("dagster-daemon", "daemon"),
)


def process_kind(pid: int) -> str:
    """What a process of the Dagster tree is, from its command line."""
    try:
        line = (
            (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return "gone"
    for needle, kind in KINDS:
        if needle in line:
            return kind
    return line.split(" ", 1)[0].rpartition("/")[2] or "?"


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it is gone)."""
    try:
        return int((Path("/proc") / str(pid) / "statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class MemoryPeak:
    """The highest sum of RSS over the tree at one sample, and the highest single process.

    A sum of RSS counts pages shared between processes (forked or mapped libraries) once per
    process: an upper bound of what the tree holds."""

    samples: int = 0
    peak_sum: int = 0
    peak_sum_processes: dict[str, int] = field(default_factory=dict)  # kind -> count at that sample
    peak_single: int = 0
    peak_single_kind: str = ""
    peak_by_kind: dict[str, int] = field(default_factory=dict)  # kind -> highest single RSS

    def describe(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.peak_sum_processes.items()))
        by_kind = ", ".join(f"{k} {v / MB:.0f}" for k, v in sorted(self.peak_by_kind.items()))
        return (
            f"peak RSS sum {self.peak_sum / MB:.0f} MB ({kinds}); peak single process "
            f"{self.peak_single / MB:.0f} MB ({self.peak_single_kind}); highest per kind MB: {by_kind}; "
            f"{self.samples} samples"
        )


class MemorySampler(threading.Thread):
    """Every `interval` s, the RSS of every process `pids()` names; the peaks in `peak`."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.2) -> None:
        super().__init__(name="memory-sampler", daemon=True)
        self.pids, self.interval, self.peak = pids, interval, MemoryPeak()
        self._stop_event = threading.Event()

    def sample(self) -> None:
        sizes = {pid: rss_bytes(pid) for pid in self.pids()}
        sizes = {pid: size for pid, size in sizes.items() if size}
        kinds = {pid: process_kind(pid) for pid in sizes}
        peak = self.peak
        peak.samples += 1
        total = sum(sizes.values())
        if total > peak.peak_sum:
            peak.peak_sum = total
            peak.peak_sum_processes = {}
            for kind in kinds.values():
                peak.peak_sum_processes[kind] = peak.peak_sum_processes.get(kind, 0) + 1
        for pid, size in sizes.items():
            peak.peak_by_kind[kinds[pid]] = max(size, peak.peak_by_kind.get(kinds[pid], 0))
            if size > peak.peak_single:
                peak.peak_single, peak.peak_single_kind = size, kinds[pid]

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError):
                self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> MemoryPeak:
        self._stop_event.set()
        self.join(timeout=10)
        return self.peak


def offers_slots(today: date) -> list[tuple[date, str]]:
    """Every 5-minute offers partition (07:00-18:55) of the last 29 days, newest day first:
    each names a file the sensor accepts (inside the flow's 30-day window, already begun)."""
    times = [f"{h:02d}{m:02d}" for h in range(7, 19) for m in range(0, 60, 5)]
    return [(today - timedelta(days=n), hhmm) for n in range(1, 30) for hhmm in times]


class OffersDropper(threading.Thread):
    """Drops a new offers file into `folder` every `every_s` seconds until stopped; each file
    is written under a hidden name and renamed, as a careful uploader does (the listing skips
    dot files), so the sensor sees it whole."""

    def __init__(self, folder: Path, vat_codes: list[str], every_s: float, timezone: str = "Europe/Rome"):
        super().__init__(name="offers-dropper", daemon=True)
        self.folder, self.vat_codes, self.every_s = folder, vat_codes, every_s
        self.slots = offers_slots(datetime.now(ZoneInfo(timezone)).date())
        self.dropped: list[tuple[float, str]] = []  # (time.time(), file name)
        self.rng = random.Random(20261202)
        self._stop_event = threading.Event()

    def drop(self) -> None:
        day, hhmm = self.slots[len(self.dropped)]
        name = f"offers_{day:%Y%m%d}_{hhmm}.csv"
        part = self.folder / f".{name}.part"
        part.write_bytes(offers_file(day, hhmm, self.vat_codes, self.rng))
        os.replace(part, self.folder / name)
        self.dropped.append((time.time(), name))

    def run(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        while not self._stop_event.is_set() and len(self.dropped) < len(self.slots):
            self.drop()
            self._stop_event.wait(self.every_s)

    def stop(self) -> list[tuple[float, str]]:
        self._stop_event.set()
        self.join(timeout=10)
        return self.dropped
