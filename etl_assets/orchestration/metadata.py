"""The engine's plain results in Dagster's terms: metadata values and asset check results."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from etl_assets.engine.catcher import Markdown, Verdict


def metadata_value(value: object) -> object:
    """A list or dict as JSON, a path as a path, Markdown rendered; the rest as it is."""
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(str(value))
    if isinstance(value, Path):
        return dg.MetadataValue.path(str(value))
    if isinstance(value, list | dict):
        return dg.MetadataValue.json(value)
    return value


def to_metadata(values: Mapping[str, object]) -> dict[str, object]:
    return {key: metadata_value(value) for key, value in values.items()}


def severity(verdict: Verdict) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if verdict.severity == "WARN" else dg.AssetCheckSeverity.ERROR


def to_check_result(verdict: Verdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=verdict.check_name,
        passed=verdict.passed,
        severity=severity(verdict),
        metadata=to_metadata(verdict.metadata),
        description=verdict.description,
    )


def to_check_evaluation(
    verdict: Verdict, asset_key: dg.AssetKey, partition: str, blocking: bool
) -> dg.AssetCheckEvaluation:
    """A check's outcome for one partition, logged as it happens (a run covers several)."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=verdict.check_name,
        passed=verdict.passed,
        metadata=to_metadata(verdict.metadata),
        severity=severity(verdict),
        description=verdict.description,
        blocking=blocking,
        partition=partition,
    )
