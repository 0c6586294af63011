"""The ``etl-assets`` console script: a thin shell over settings, resources and the flows.

Exit status: 0 success, 1 the work failed, 2 a usage or settings error. Errors are one
line on stderr that says what to do.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from etl_assets.orchestration import instance_cli
from etl_assets.resources import build_resources, test_connections
from etl_assets.sdk import cli as flows_cli
from etl_assets.settings import (
    ENVIRONMENTS,
    SecretError,
    SettingsError,
    encrypt,
    init_key,
    load_settings,
)

if TYPE_CHECKING:  # dagster is imported by the commands that run flows, not by every command
    import dagster as dg

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etl-assets", description=__doc__.splitlines()[0])
    env = argparse.ArgumentParser(add_help=False)
    env.add_argument("-e", "--env", choices=ENVIRONMENTS, help="environment (default: ETL_ENV, else dev)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enc = commands.add_parser("encrypt-password", help="print an enc: token for the settings file")
    enc.add_argument("password", nargs="?", help="the password (read from stdin when left out)")

    key = commands.add_parser("init-key", help="create the secret key file (0600)")
    key.add_argument(
        "--path", type=Path, help="where (default: ETL_SECRET_KEY_FILE or ~/.config/etl_assets/secret.key)"
    )
    key.add_argument("--force", action="store_true", help="replace an existing key (old tokens stop working)")

    conn = commands.add_parser("test-connections", parents=[env], help="try every configured connector")
    conn.add_argument(
        "--send-test-email", action="store_true", help="also send a test e-mail to the recipients"
    )
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
    demo = commands.add_parser(
        "demo-data", parents=[env], help="write sample source files to ETL_HOME/import"
    )
    demo.add_argument("--days", type=int, default=3, help="how many daily files, up to today (default 3)")
    demo.add_argument("--rows", type=int, default=40, help="good rows per file (default 40)")
    demo.add_argument("--to", type=Path, help="folder (default: ETL_HOME/import)")
    instance_cli.add_parsers(commands, env)
    ledger = commands.add_parser("ledger", help="the data-object ledger: deliveries, runs, versions")
    ledger_verbs = ledger.add_subparsers(dest="verb", required=True, metavar="VERB")
    show = ledger_verbs.add_parser(
        "show", parents=[env], help="a flow's data objects (deliveries) and each stage's row per run"
    )
    show.add_argument("flow", help="the flow, e.g. companies")
    show.add_argument("partition", nargs="?", help="only this partition key, e.g. 2026-01-01")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    stale = ledger_verbs.add_parser(
        "stale", parents=[env], help="partitions last processed by an older version of a stage"
    )
    stale.add_argument("flow", nargs="?", help="the flow (default: every flow)")
    stale.add_argument("--json", action="store_true", help="print JSON for scripts")
    flows_cli.add_parser(commands, env)
    return parser


def _ledger(args: argparse.Namespace) -> int:
    """``ledger show`` / ``ledger stale``, read from the target database of the environment."""
    import sqlalchemy as sa

    from etl_assets.sdk.project import Project

    project = Project.open(env=args.env)
    engine = build_resources(project.settings)["database"].engine()
    flows = {flow.name: flow.model for flow in project.flows}
    try:
        return _ledger_verb(args, engine, flows)
    except sa.exc.OperationalError as exc:  # the message names host and port, never the password
        first = str(exc.orig or exc).strip().splitlines()[0]
        print(
            f"etl-assets: the target database does not answer ({first}): check database in the settings",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _ledger_verb(args: argparse.Namespace, engine: object, flows: dict) -> int:
    import dataclasses
    import json

    from etl_assets.engine.ledger.show import format_objects, format_stale, object_rows, stale_partitions

    if args.verb == "show":
        found = object_rows(engine, args.flow, args.partition)
        if not found and args.flow not in flows:
            print(f"etl-assets: no flow {args.flow!r} (etl-assets flows list shows them)", file=sys.stderr)
            return EXIT_USAGE
        print(json.dumps(found, indent=2, default=str) if args.json else format_objects(found))
        return EXIT_OK
    if args.flow is not None and args.flow not in flows:
        print(f"etl-assets: no flow {args.flow!r} (etl-assets flows list shows them)", file=sys.stderr)
        return EXIT_USAGE
    names = [args.flow] if args.flow else list(flows)
    stale = {name: stale_partitions(engine, flows[name]) for name in names}
    if args.json:
        print(json.dumps({n: [dataclasses.asdict(p) for p in found] for n, found in stale.items()}, indent=2))
    else:
        print("\n".join(format_stale(name, found) for name, found in stale.items()))
    return EXIT_OK


def _demo_data(args: argparse.Namespace) -> int:
    from etl_assets.samples import write_demo_data

    target = args.to or Path(load_settings(args.env).home).expanduser() / "import"
    for path in write_demo_data(target, days=args.days, rows_per_day=args.rows):
        print(path)
    return EXIT_OK


def _encrypt_password(args: argparse.Namespace) -> int:
    if args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.read().rstrip("\r\n")
    if not password:
        print("etl-assets: empty password: give one as argument or on stdin", file=sys.stderr)
        return EXIT_USAGE
    print(encrypt(password))
    return EXIT_OK


def _init_key(args: argparse.Namespace) -> int:
    path = init_key(args.path, force=args.force)
    print(f"created {path} (mode 0600); keep it outside the repository and back it up")
    return EXIT_OK


def _test_connections(args: argparse.Namespace) -> int:
    settings = load_settings(args.env)
    results = test_connections(build_resources(settings), send_test_email=args.send_test_email)
    print(f"test-connections, environment {settings.env}:")
    for result in results:
        print(result.line())
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


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


COMMANDS = {
    "backfill": _backfill,
    "replay": _replay,
    "upload": _upload,
    "resubmit": _resubmit,
    "encrypt-password": _encrypt_password,
    "init-key": _init_key,
    "test-connections": _test_connections,
    "demo-data": _demo_data,
    **instance_cli.COMMANDS,
    "flows": flows_cli.run,
    "ledger": _ledger,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    logging.basicConfig(level=logging.WARNING, format="etl-assets: %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (SettingsError, SecretError) as exc:
        print(f"etl-assets: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
