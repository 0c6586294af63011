"""The verdicts of a partition's steps that are not the catcher's rejected rows: the load's
reconciliation and the extract's two warnings."""

from __future__ import annotations

from etl_assets.engine.catcher import Verdict

RECONCILIATION = "reconciliation"


def reconciliation(balanced: list[dict]) -> Verdict:
    """rows in = loaded + rejected + collapsed duplicates, for every partition."""
    off = [b for b in balanced if b["rows_in"] != b["loaded"] + b["rejected"] + b["collapsed"]]
    totals = {k: sum(b[k] for b in balanced) for k in ("rows_in", "loaded", "rejected", "collapsed")}
    return Verdict(
        check_name=RECONCILIATION,
        passed=not off,
        severity="ERROR",
        metadata={**totals, "unbalanced_partitions": off},
        description=(
            f"rows in {totals['rows_in']} = loaded {totals['loaded']} + rejected {totals['rejected']} "
            f"+ collapsed {totals['collapsed']}"
            if not off
            else f"unbalanced: {off}"
        ),
    )


def extract_verdicts(drift: dict[str, list[str]], changed: dict[str, str]) -> list[Verdict]:
    """The extract's two warnings: columns not in the map, and bytes changed since last time."""
    return [
        Verdict(
            check_name="schema_drift",
            passed=not drift,
            severity="WARN",
            metadata={"extra_columns": drift},
            description="extra columns kept in staging" if drift else "the columns expected",
        ),
        Verdict(
            check_name="source_unchanged",
            passed=not changed,
            severity="WARN",
            metadata={"changed": changed},
            description="the source file changed since its last extract: re-run the partition"
            if changed
            else "same bytes as the last extract (or a first extract)",
        ),
    ]
