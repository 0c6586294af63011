"""The daily delta's paths (issue 23), parent side: the delivery after the first file
(``deltafile.py``), loaded after a first load (and its identical re-load) of the first file.

- ``delta load step``: ``load_stage`` of the delta's transform output, in the load step's database;
- ``delta whole flow``: extract -> transform -> load -> link of the delta as the next day's
  partition, in the whole flow's database and home.

Checks: the load's inserted / updated / unchanged counts are the generator's new / changed /
rest; link's updated count is the rows whose PARENT_VAT changed plus the new rows with a
parent; the rows of the delivery's keys equal (every column but the id and the bookkeeping,
a link as its parent's key) those of a fresh load of the delivery into a new database; the
first file's rows the delivery lacks are still there, unchanged (upsert, the companies
flow's mode, leaves them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.load.children import psql, psql_with_keys
from benchmarks.load.deltafile import missing_file
from benchmarks.load.paths import companies_flow


def delivery_state(database: str, missing: Path, linked: bool) -> tuple[int, str]:
    """Count and checksum of the rows whose key is not among ``missing``: every map column and
    the row hash (the id and the etl_loaded_at / etl_object_id / etl_source_* bookkeeping left
    out), with ``linked`` the parent's key in place of its id."""
    columns = [f"a.{c}" for c in companies_flow().map] + ["a.etl_row_hash"]
    columns += ["p.external_id"] if linked else []
    sql = (
        f"SELECT count(*), coalesce(sum(hashtextextended(row({', '.join(columns)})::text, 0)), 0) "
        "FROM accounts a LEFT JOIN accounts p ON p.id = a.parent_account_id "
        "WHERE NOT EXISTS (SELECT 1 FROM keys WHERE keys.k = a.external_id)"
    )
    count, checksum = psql_with_keys(database, missing, sql).split("|")
    return int(count), checksum


def missing_state(database: str, missing: Path) -> tuple[int, str]:
    """Count and checksum (every column) of the rows whose key is among ``missing``."""
    sql = (
        "SELECT count(*), coalesce(sum(hashtextextended(a::text, 0)), 0) "
        "FROM accounts a JOIN keys ON keys.k = a.external_id"
    )
    count, checksum = psql_with_keys(database, missing, sql).split("|")
    return int(count), checksum


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {action: n for action, n in counts.items() if n}


class Delta:
    """The delta's paths of one Bench: its file, its fresh reference, its checks."""

    def __init__(self, bench: Any, file: Path, facts: dict[str, int]) -> None:
        self.bench, self.file, self.facts = bench, file, facts
        self.missing = missing_file(file)
        self.reference: dict[bool, tuple[int, str]] = {}  # linked or not -> state of a fresh load

    @property
    def file_args(self) -> list[str]:
        return ["--delta", "--file", str(self.file)]

    def prepare(self) -> bool:
        """The delta's transform output for the load step (extract + transform, not timed), and
        the fresh load it must equal (the whole flow into a new database, not timed)."""
        bench = self.bench
        prepared = bench.child("prepare", "postgres", name="prepare_delta", extra=self.file_args)
        if prepared.error:
            bench.report.notes.append(f"delta not measured: prepare failed: {prepared.error}")
            return False
        database = bench.database("delta_fresh")
        fresh = bench.work / "delta_fresh"
        fresh.mkdir(exist_ok=True)
        extra = ["--file", str(self.file), "--work", str(fresh)]
        child = bench.child("flow", database, name="delta_fresh", extra=extra)
        if child.error:
            bench.report.notes.append(f"delta not measured: its fresh load failed: {child.error}")
            return False
        linked = int(psql(database, "SELECT count(parent_account_id) FROM accounts"))
        if linked != self.facts["parents"]:
            expected = self.facts["parents"]
            bench.report.notes.append(f"delta not measured: fresh load linked {linked}, expected {expected}")
            return False
        self.reference = {flag: delivery_state(database, self.missing, flag) for flag in (False, True)}
        bench.done_with(database)
        return True

    def expected_load(self) -> dict[str, int]:
        facts = self.facts
        rest = facts["rows"] - facts["new"] - facts["changed"]
        return _nonzero({"inserted": facts["new"], "updated": facts["changed"], "unchanged": rest})

    def expected_link(self) -> dict[str, int]:
        relinked = self.facts["relinked"] + self.facts["new_with_parent"]
        return _nonzero({"updated": relinked, "unchanged": self.facts["rows"] - relinked})

    def run(self, only: str, database: str) -> None:
        """The delta of ``only`` (load or flow) in the database its first load and re-load left."""
        if not self.reference:
            return
        bench, linked = self.bench, only == "flow"
        before = missing_state(database, self.missing)

        def check(child: Any) -> str:
            loaded = child.result.get("load_actions" if linked else "actions")
            assert loaded == self.expected_load(), f"load actions {loaded}, expected {self.expected_load()}"
            if linked:
                links = child.result.get("link_actions")
                assert links == self.expected_link(), f"link actions {links}, expected {self.expected_link()}"
            state = delivery_state(database, self.missing, linked)
            assert state == self.reference[linked], (
                f"the delivery's rows {state} differ from a fresh load's {self.reference[linked]}"
            )
            after = missing_state(database, self.missing)
            missing = self.facts["missing"]
            assert after[0] == missing, f"{after[0]} missing rows left, expected {missing}"
            assert after == before, f"the missing rows changed: {before} -> {after}"
            shown = ", ".join(f"{a} {n:,}" for a, n in loaded.items())
            link = f"; link updated {self.expected_link().get('updated', 0):,}" if linked else ""
            return f"ok: {shown}{link}; = fresh load; {after[0]:,} missing kept"

        name = "whole flow" if linked else "load step"
        child = bench.child(only, database, name=f"{only}_delta", extra=self.file_args)
        bench.from_child(f"{only}_delta", f"{name}, daily delta", child, check, self.facts["rows"])
