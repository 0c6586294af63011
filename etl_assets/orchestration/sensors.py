"""Files arriving start runs: a sensor per flow that asks for each new file once it stopped
growing, and a catch-up schedule for files that arrived while the sensor was off."""

from __future__ import annotations

import json

import dagster as dg

from etl_assets.engine.partition_keys import partition_key_for_file
from etl_assets.model.flow import FlowModel
from etl_assets.resources.files import FilesResource

# a file that arrived goes before a backfill's queued chunks: the run queue takes the highest
# dagster/priority first (FIFO among equals), so a 5-minute flow is not held for a backfill;
# and a flow's arrivals run one at a time (ARRIVAL_TAG, limited in dagster.yaml), so files
# arriving faster than their runs end cannot take every slot and starve the backfill
ARRIVAL_PRIORITY = {"dagster/priority": "10"}
ARRIVAL_TAG = "etl_assets/arrival"


def arrival_tags(flow: FlowModel) -> dict[str, str]:
    """The tags of a run a file's arrival asks for."""
    return {**ARRIVAL_PRIORITY, ARRIVAL_TAG: flow.name}


def file_sensor(
    flow: FlowModel, job: dg.UnresolvedAssetJobDefinition, partitions: dg.TimeWindowPartitionsDefinition
) -> dg.SensorDefinition:
    """Request a run for each new file once its size is the same on two looks.

    The cursor remembers the last size seen of each file still in the folder and every file
    already requested, so a file is requested once; a file outside the partition set is
    refused with a reason in the sensor's log.
    """
    assert flow.sensor is not None

    @dg.sensor(
        name=f"{flow.name}_file_sensor",
        job=job,
        minimum_interval_seconds=flow.sensor.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"runs {flow.name} for each new {flow.source.file} once it stopped growing",
    )
    def sensor(context: dg.SensorEvaluationContext, files: FilesResource) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        seen: dict[str, list[float]] = state.get("seen", {})
        done: dict[str, str] = state.get("done", {})
        listing = files.list_files(files.folder_of(flow.name, flow.source.folder))
        requests, growing, refused = [], [], list(listing.refused)
        present = set()
        for remote in listing:
            key = partition_key_for_file(flow, remote.name)
            if key is None:
                continue
            present.add(remote.name)
            if remote.name in done:
                continue
            if not partitions.has_partition_key(key):
                refused.append(f"{remote.name}: partition {key} is outside the flow's partitions")
                done[remote.name] = "refused"
                continue
            size = [remote.size, remote.mtime]
            if seen.get(remote.name) == size:
                requests.append(
                    dg.RunRequest(
                        run_key=f"{remote.name}:{remote.size}:{int(remote.mtime)}",
                        partition_key=key,
                        tags=arrival_tags(flow),
                    )
                )
                done[remote.name] = key
                seen.pop(remote.name, None)
            else:
                seen[remote.name] = size
                growing.append(remote.name)
        for reason in refused:
            context.log.warning(f"refused {reason}")
        # forget files that left the folder (moved to processed/): the cursor stays small
        state = {
            "seen": {k: v for k, v in seen.items() if k in present},
            "done": {k: v for k, v in done.items() if k in present},
        }
        if not requests:
            why = "no new file"
            if growing:
                why = f"waiting for {len(growing)} file(s) to stop growing: {', '.join(sorted(growing)[:5])}"
            if refused:
                why += f"; refused: {'; '.join(refused[:3])}"
            return dg.SensorResult(skip_reason=dg.SkipReason(why), cursor=json.dumps(state))
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(state))

    return sensor


CATCH_UP_CRON = "*/15 7-19 * * *"
CATCH_UP_MIN_AGE_SECONDS = 300


def catch_up_schedule(
    flow: FlowModel,
    job: dg.UnresolvedAssetJobDefinition,
    partitions: dg.TimeWindowPartitionsDefinition,
    timezone: str,
) -> dg.ScheduleDefinition:
    """The sensor's fallback: every 15 minutes, request each partition whose file has been
    in the folder for 5 minutes or more and was never extracted (e.g. the sensor was off)."""
    extract_key = dg.AssetKey(flow.asset_name("extract"))

    @dg.schedule(
        name=f"{flow.name}_catch_up_schedule",
        cron_schedule=CATCH_UP_CRON,
        job=job,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"requests {flow.name} partitions whose file arrived while the sensor was off",
    )
    def catch_up(
        context: dg.ScheduleEvaluationContext, files: FilesResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time.timestamp()
        done = context.instance.get_materialized_partitions(extract_key)
        requests = []
        listing = files.list_files(files.folder_of(flow.name, flow.source.folder))
        for reason in listing.refused:
            context.log.warning(f"refused {reason}")
        for remote in listing:
            key = partition_key_for_file(flow, remote.name)
            if key is None or key in done or now - remote.mtime < CATCH_UP_MIN_AGE_SECONDS:
                continue
            if partitions.has_partition_key(key):
                requests.append(
                    dg.RunRequest(
                        run_key=f"{remote.name}:{remote.size}:{int(remote.mtime)}",
                        partition_key=key,
                        tags=arrival_tags(flow),
                    )
                )
        return requests or dg.SkipReason("every file in the folder has been extracted")

    return catch_up
