"""The commands that run a flow's partitions in this process: backfill, replay, upload and
resubmit (recorded in DAGSTER_HOME, shown in the UI as any run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from etl_assets.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from etl_assets.resources import build_resources
from etl_assets.settings import load_settings

if TYPE_CHECKING:  # dagster is imported by the commands that run flows, not by every command
    import dagster as dg


def add_parsers(commands: argparse._SubParsersAction, env: argparse.ArgumentParser) -> None:
    backfill = commands.add_parser(
        "backfill",
        parents=[env],
        help="run a flow for a range of partitions, a run each, one e-mail at the end (no daemon)",
    )
    backfill.add_argument("flow", help="the flow, e.g. companies")
    backfill.add_argument("--from", dest="first", help="first partition key, e.g. 2026-01-01")
    backfill.add_argument("--to", dest="last", help="last partition key (default: --from)")
    backfill.add_argument("--partitions", help="or: partition keys, comma-separated (to re-run failed ones)")
    replay = commands.add_parser(
        "replay",
        parents=[env],
        help="run a partition again from a step on, from the staged output of the step before (no fetch)",
    )
    replay.add_argument("flow", help="the flow, e.g. companies")
    replay.add_argument("partition", help="the partition key, e.g. 2026-01-14")
    replay.add_argument("--from", dest="step", required=True, choices=("transform", "load", "link"))
    upload = commands.add_parser(
        "upload",
        parents=[env],
        help="check a source file (name, encoding, columns, a dry run of the map) and place it for its flow",
    )
    upload.add_argument("flow", help="the flow, e.g. companies")
    upload.add_argument("file", type=Path, help="the file, named as the flow's source expects")
    upload.add_argument("--partition", help="the partition (default: read from the file name)")
    upload.add_argument("--replace", action="store_true", help="replace a waiting delivery (backed up first)")
    upload.add_argument("--dry-run", action="store_true", help="check only: place nothing")
    resubmit = commands.add_parser(
        "resubmit",
        parents=[env],
        help="send a corrected error file back: its rows through transform, load and link again",
    )
    resubmit.add_argument("path", type=Path, help="e.g. ETL_HOME/errors/companies/2026-01-02/transform.csv")


def _flow_job(defs: dg.Definitions, flow: str) -> dg.JobDefinition | None:
    """The flow's ``<flow>_job``, or None (said on stderr) when there is no such flow."""
    import dagster as dg

    try:
        return defs.resolve_job_def(f"{flow}_job")
    except dg.DagsterInvariantViolationError:
        print(f"etl-assets: no flow {flow!r} (its job {flow}_job is not defined)", file=sys.stderr)
        return None


def _replay(args: argparse.Namespace) -> int:
    """One run of the partition from ``--from`` on, reading what the steps before staged."""
    import dagster as dg

    from etl_assets.definitions import build_definitions
    from etl_assets.orchestration.replay import ReplayRefused, replay

    settings = load_settings(args.env)
    job = _flow_job(build_definitions(settings), args.flow)
    if job is None:
        return EXIT_USAGE
    if not job.partitions_def.has_partition_key(args.partition):
        example = job.partitions_def.get_first_partition_key()
        print(
            f"etl-assets: {args.partition!r} is not a partition of {args.flow} (keys look like {example})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    folders = build_resources(settings)["folders"]
    try:
        with dg.DagsterInstance.get() as instance:
            done = replay(job, args.flow, args.partition, args.step, instance, folders)
    except ReplayRefused as refused:
        print(f"etl-assets: {refused}", file=sys.stderr)
        return EXIT_FAILED
    status = "ok" if done.success else f"FAILED: {done.failure}"
    print(f"replay of {args.flow} {args.partition} from {args.step}: {status} (run {done.run_id})")
    return EXIT_OK if done.success else EXIT_FAILED


def _upload(args: argparse.Namespace) -> int:
    """Check the file; accepted, place it where the flow's extract reads it."""
    from etl_assets.engine.upload import UploadRefused
    from etl_assets.model.declarations import declared_flows
    from etl_assets.orchestration.upload import upload
    from etl_assets.resources.errors import ConnectorError

    settings = load_settings(args.env)
    flows = {
        f.flow.name: f.flow
        for f in declared_flows(settings.flow_dirs)
        if f.flow.environment in (None, settings.env)
    }
    if args.flow not in flows:
        print(f"etl-assets: no flow {args.flow!r} (flows: {', '.join(sorted(flows))})", file=sys.stderr)
        return EXIT_USAGE
    if not args.file.is_file():
        print(f"etl-assets: {args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    resources = build_resources(settings)
    try:
        done = upload(
            flows[args.flow],
            args.file,
            args.partition,
            resources["files"],
            resources["folders"],
            settings.timezone,
            replace=args.replace,
            dry_run=args.dry_run,
            database=resources["database"],
        )
    except (UploadRefused, ConnectorError) as refused:
        print(f"etl-assets: {refused}", file=sys.stderr)
        return EXIT_FAILED
    check = done.check
    print(f"{check.file}: {args.flow} partition {check.partition_key or '?'}, {check.rows} rows")
    for rejection in check.rejections:
        print(
            f"  would reject {rejection.rows} rows: {check.file}:{rejection.first_line}: "
            f"{rejection.field}: {rejection.reason}"
        )
    if check.extra_columns:
        print(f"  schema drift, extra columns: {', '.join(check.extra_columns)}")
    for problem in check.problems:
        print(f"etl-assets: refused: {problem.text()}", file=sys.stderr)
    if not check.accepted:
        return EXIT_FAILED
    if done.placed is None:
        print("dry run: accepted, nothing placed")
    else:
        print(f"placed: {done.placed.location} (sha256 {done.placed.sha256[:12]}...)")
        if done.placed.replaced_backup:
            print(f"  the delivery it replaced is backed up at {done.placed.replaced_backup}")
        if done.recorded and done.recorded.object_id is not None:
            key = check.partition_key
            print(f"ledger: data object {done.recorded.object_id} (etl-assets ledger show {args.flow} {key})")
        elif done.recorded and done.recorded.warning:
            print(f"etl-assets: warning: {done.recorded.warning}", file=sys.stderr)
    return EXIT_OK


def _backfill(args: argparse.Namespace) -> int:
    """Ranged runs of consecutive partitions in this process (recorded in DAGSTER_HOME, shown in
    the UI), each partition landing or failing on its own."""
    import dagster as dg

    from etl_assets.definitions import build_definitions
    from etl_assets.orchestration.batches import run_batch

    settings = load_settings(args.env)
    job = _flow_job(build_definitions(settings), args.flow)
    if job is None:
        return EXIT_USAGE
    partitions = job.partitions_def
    if args.partitions:
        keys = [k.strip() for k in args.partitions.split(",") if k.strip()]
    elif args.first:
        ends = [k for k in (args.first, args.last) if k and not partitions.has_partition_key(k)]
        if ends:
            example = partitions.get_first_partition_key()
            print(
                f"etl-assets: not partitions of {args.flow}: {', '.join(ends)} (keys look like {example})",
                file=sys.stderr,
            )
            return EXIT_USAGE
        keys = partitions.get_partition_keys_in_range(
            dg.PartitionKeyRange(args.first, args.last or args.first)
        )
    else:
        print("etl-assets: give --from [--to] or --partitions", file=sys.stderr)
        return EXIT_USAGE
    unknown = [k for k in keys if not partitions.has_partition_key(k)]
    if unknown:
        print(f"etl-assets: not partitions of {args.flow}: {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USAGE
    resources = build_resources(settings)
    chunk = (job.backfill_policy.max_partitions_per_run if job.backfill_policy else None) or 1
    with dg.DagsterInstance.get() as instance:
        batch, runs, where = run_batch(job, keys, instance, resources["mailer"], resources["folders"], chunk)
    print(f"backfill {batch} of {args.flow}, environment {settings.env}: {len(runs)} partitions")
    for run in runs:
        print(f"  {run.partition}: {'ok' if run.success else 'FAILED'} (run {run.run_id})")
    failed = [run.partition for run in runs if not run.success]
    print(f"e-mail: {where or 'none (nothing rejected or failed)'}")
    if failed:
        print(f"re-run the failed ones: etl-assets backfill {args.flow} --partitions {','.join(failed)}")
    return EXIT_FAILED if failed else EXIT_OK


def _resubmit(args: argparse.Namespace) -> int:
    """A corrected error file sent back by a run of the ``resubmit`` job in this process
    (recorded in DAGSTER_HOME, shown in the UI with the tag etl_assets/resubmission)."""
    import dagster as dg

    from etl_assets.definitions import build_definitions
    from etl_assets.orchestration.resubmission import JOB, TAG

    if not args.path.is_file():
        print(f"etl-assets: {args.path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    path = args.path.resolve()
    job = build_definitions(load_settings(args.env)).resolve_job_def(JOB)
    try:
        instance = dg.DagsterInstance.get()
    except dg.DagsterHomeNotSetError:
        print("etl-assets: DAGSTER_HOME is not set: set it to the folder the UI uses", file=sys.stderr)
        return EXIT_USAGE
    with instance:
        result = job.execute_in_process(
            run_config={
                "ops": {"resubmit_file": {"config": {"path": str(path)}}},
                # the run's log is in the UI; here, the lines below say what happened
                "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
            },
            instance=instance,
            tags={TAG: "/".join(path.parts[-3:])},
            raise_on_error=False,
        )
    if result.success:
        for line in result.output_for_node("resubmit_file"):
            print(line)
        return EXIT_OK
    failure = result.failure_data_for_node("resubmit_file")
    user = failure.user_failure_data if failure else None
    if user is not None and "reasons" in user.metadata:
        for reason in user.metadata["reasons"].value:  # type: ignore[union-attr]
            print(f"etl-assets: {path}: refused: {reason}", file=sys.stderr)
    else:
        error = failure.error.message.strip() if failure and failure.error else "see the run's log"
        print(f"etl-assets: {path}: resubmission failed (run {result.run_id}): {error}", file=sys.stderr)
    return EXIT_FAILED


COMMANDS = {"backfill": _backfill, "replay": _replay, "upload": _upload, "resubmit": _resubmit}
