"""What a companies load must leave in the target, computed from the files alone.

An oracle independent of the product: the standard library's csv and re applied to the flow's
declared map (``defs/companies/defs.yaml``, read as data), never the engine's Polars code, so a
fault in the engine's map cannot hide in its own expectation. A key lands when at least one of
its rows passes every field of the map (duplicates are settled after the map: the latest row of
a key wins among the rows that passed, so a key whose rows all fail is the only key lost).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

DEFS = Path(__file__).resolve().parents[2] / "etl_assets" / "defs" / "companies" / "defs.yaml"
# The map's field types as the README states them (a copy of the rules, not of the code).
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
PHONE_RE = re.compile(r"^\+?[0-9]{6,15}$")
PHONE_SEPARATORS = re.compile(r"[\s./()-]")
DECIMAL_RE = re.compile(r"^-?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$")
INTEGER_RE = re.compile(r"^-?(\d{1,3}(\.\d{3})+|\d+)$")
INT64_MAX = 2**63 - 1
DECIMAL_PRECISION = 18
TEXT_TYPES = frozenset({"String", "UppercaseString", "TitlecaseString"})


@dataclass
class Expected:
    """The keys the files hold, the keys that must land, and what the files' rows reference."""

    files: int = 0
    rows: int = 0
    rows_failing_map: int = 0
    keys_in_files: set[str] = field(default_factory=set)
    keys_landing: set[str] = field(default_factory=set)
    vat_codes: list[str] = field(default_factory=list)  # of good rows, for offers that link
    # each landing key's NAME in its latest row: the latest file, then the latest `latest_by`
    latest_name: dict[str, str] = field(default_factory=dict)

    @property
    def keys_lost(self) -> set[str]:
        return self.keys_in_files - self.keys_landing


def flow_map(defs: Path = DEFS) -> tuple[dict[str, dict[str, Any]], str, str]:
    """The declared map (field -> spec), the source column of the target's key and the field
    that settles a key given twice (``dedupe.latest_by``)."""
    attributes = yaml.safe_load(defs.read_text(encoding="utf-8"))["attributes"]
    fields = attributes["map"]
    key = attributes["target"]["key"]
    return fields, fields[key].get("source", key.upper()), attributes["dedupe"]["latest_by"]


def field_passes(spec: Mapping[str, Any], value: str | None) -> bool:
    """One field of one row, as the README's map rules read."""
    raw = value.strip() if value is not None else ""
    raw = raw or spec.get("default")
    if raw is None:
        return not spec.get("required", False)
    if "\x00" in raw:
        return False
    if spec.get("max_length") is not None and len(raw) > spec["max_length"]:
        return False
    if spec.get("pattern") is not None and not re.search(spec["pattern"], raw):
        return False
    kind = spec["type"]
    if kind in TEXT_TYPES:
        return True
    if kind == "Integer":
        return bool(INTEGER_RE.search(raw)) and abs(int(raw.replace(".", ""))) <= INT64_MAX
    if kind == "Decimal":
        whole = raw.replace(".", "").partition(",")[0].lstrip("-")
        return bool(DECIMAL_RE.search(raw)) and len(whole.lstrip("0")) <= DECIMAL_PRECISION - spec["scale"]
    if kind in ("Date", "DateTime"):
        try:
            datetime.strptime(raw, spec["format"])
        except ValueError:
            return False
        return True
    if kind == "Email":
        return bool(EMAIL_RE.search(raw.lower()))
    if kind == "Phone":
        return bool(PHONE_RE.search(PHONE_SEPARATORS.sub("", raw)))
    raise NotImplementedError(f"the oracle knows no map type {kind}: teach it the README's rule")


def read_rows(path: Path, delimiter: str = ";") -> list[dict[str, str]]:
    """A file's rows by column name (BOM, quoted delimiters and line breaks as csv reads them)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def expected_from_files(paths: Iterable[Path], defs: Path = DEFS) -> Expected:
    """Which keys of these files (oldest first) must be in the target after every one of them
    loaded, and the name each should hold if the files loaded in order."""
    fields, key_column, latest_by = flow_map(defs)
    order_spec = fields[latest_by]
    order_column = order_spec.get("source", latest_by.upper())
    expected = Expected()
    newest: dict[str, tuple[int, datetime, int]] = {}
    for index, path in enumerate(paths):
        expected.files += 1
        for line, row in enumerate(read_rows(path)):
            expected.rows += 1
            key = (row.get(key_column) or "").strip()
            if key:
                expected.keys_in_files.add(key)
            if not all(
                field_passes(spec, row.get(spec.get("source", n.upper()))) for n, spec in fields.items()
            ):
                expected.rows_failing_map += 1
                continue
            expected.keys_landing.add(key)
            expected.vat_codes.append(row["VAT_CODE"].strip().upper())
            rank = (index, datetime.strptime(row[order_column].strip(), order_spec["format"]), line)
            if key not in newest or rank > newest[key]:
                newest[key] = rank
                expected.latest_name[key] = row["NAME"].strip()
    return expected
