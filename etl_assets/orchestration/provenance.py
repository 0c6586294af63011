"""The data provenance of a (step, partition)'s materialization, as Dagster writes it itself.

A step's materialization is logged by hand (``FlowRun.log``), so Dagster does not tag it as it
tags an op's outputs (``execute_step._build_data_version_tags``). Without the tags the UI's stale
marks see no provenance and say fresh; with the code version alone every step with a parent is
stale ("has a new dependency"). This module writes the same tags: the code version (the stage's
hash), the data version, and for each parent the input's data version and event pointer, so
Dagster's own stale status is stale exactly for a (step, partition) made by an older stage
version, or whose parent's data changed since: what ``etl-assets ledger stale`` lists.

The data version of a step's output:

- extract: the sha256 of the stage's version and the delivered file's sha256 (a user-provided
  version: Dagster cannot see the file). The same file through the same stage: the same version.
- transform, load, link: Dagster's logical version (``compute_logical_data_version``) of the code
  version and the inputs' versions, so it changes with the delivery, with a stage version up the
  chain, or with a cross-flow parent's data, and stays for an identical re-run.

An input's data version, like Dagster's for a partitioned input, is the sha256 of the data
versions of the parent partitions the child maps to (``lineage.CROSS_FLOW_MAPPING`` for another
flow's load, the same partition for the step before); its event pointer is the parent's latest
materialization, which the stale resolver looks past for a newer one of each parent partition.
A query for the parents' records and one per parent: a few a (step, partition), never per row.
"""

from __future__ import annotations

from hashlib import sha256

import dagster as dg
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER,
    SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD,
    compute_logical_data_version,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.partitions.mapping.partition_mapping import UpstreamPartitionsResult
from dagster._core.events import DagsterEventType


def delivery_data_version(code_version: str, file_sha256: str) -> dg.DataVersion:
    """The extract's output: the file's bytes through the stage's version."""
    return dg.DataVersion(sha256(f"{code_version}{file_sha256}".encode()).hexdigest())


def provenance_tags(
    context: dg.AssetExecutionContext, asset_key: dg.AssetKey, partition: str, file_sha256: str | None = None
) -> dict[str, str]:
    """The tags of the asset's materialization of the partition, its parents' materializations
    (earlier in this run or in an earlier one) already stored."""
    graph = context.job_def.asset_layer.asset_graph
    code_version = graph.get(asset_key).code_version or context.run.run_id
    parents = sorted(graph.get(asset_key).parent_keys, key=str)
    records = (
        {r.asset_entry.asset_key: r for r in context.instance.get_asset_records(parents)} if parents else {}
    )
    tags = {CODE_VERSION_TAG: code_version}
    versions: dict[dg.AssetKey, dg.DataVersion] = {}
    for parent in parents:
        record = records.get(parent)
        latest = record.asset_entry.last_materialization_record if record else None
        if latest is None:  # never materialized
            versions[parent] = DEFAULT_DATA_VERSION
        elif not graph.get(parent).is_partitioned:  # its one version
            versions[parent] = latest_data_version(latest)
        else:
            mapped = graph.get_parent_partition_keys_for_child(partition, parent, asset_key)
            versions[parent] = input_data_version(context.instance, parent, mapped, latest)
        tags[get_input_data_version_tag(parent)] = versions[parent].value
        tags[get_input_event_pointer_tag(parent)] = str(latest.storage_id) if latest else NULL_EVENT_POINTER
    if file_sha256 is not None:
        tags[DATA_VERSION_TAG] = delivery_data_version(code_version, file_sha256).value
        tags[DATA_VERSION_IS_USER_PROVIDED_TAG] = "true"
    else:
        tags[DATA_VERSION_TAG] = compute_logical_data_version(code_version, versions).value
    return tags


def input_data_version(
    instance: dg.DagsterInstance,
    parent: dg.AssetKey,
    mapped: UpstreamPartitionsResult,
    latest: dg.EventLogRecord,
) -> dg.DataVersion:
    """Dagster's version of a partitioned input: its partitions' versions, in partition order."""
    keys = list(mapped.partitions_subset.get_partition_keys())
    # Dagster's own limit: a parent mapped to this many partitions counts by its latest event
    if len(keys) >= SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD:
        return latest_data_version(latest)
    by_partition = instance.event_log_storage.get_latest_tags_by_partition(
        parent, DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG], asset_partitions=keys
    )
    joined = "".join(tags[DATA_VERSION_TAG] for _, tags in sorted(by_partition.items()))
    return dg.DataVersion(sha256(joined.encode()).hexdigest())


def latest_data_version(latest: dg.EventLogRecord) -> dg.DataVersion:
    """The data version the parent's latest materialization carries (none: Dagster's default)."""
    tagged = (latest.event_log_entry.tags or {}).get(DATA_VERSION_TAG)
    return dg.DataVersion(tagged) if tagged else DEFAULT_DATA_VERSION
