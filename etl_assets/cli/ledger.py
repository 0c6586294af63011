"""``etl-assets ledger``: a flow's data objects, its stale partitions, and reprocessing them."""

from __future__ import annotations

import argparse
import sys

from etl_assets.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from etl_assets.resources import build_resources


def add_parsers(commands: argparse._SubParsersAction, env: argparse.ArgumentParser) -> None:
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
    again = ledger_verbs.add_parser(
        "reprocess",
        parents=[env],
        help="run the stale partitions again from their earliest stale stage, from their staged data",
    )
    again.add_argument("flow", help="the flow, e.g. companies")
    again.add_argument(
        "--from",
        dest="step",
        choices=("extract", "transform", "load", "link"),
        help="start at this step (or earlier: at the earliest stale one)",
    )
    again.add_argument("--dry-run", action="store_true", help="list what would run: run nothing")


def _ledger(args: argparse.Namespace) -> int:
    """``ledger show`` / ``ledger stale``, read from the target database of the environment."""
    import sqlalchemy as sa

    from etl_assets.sdk.project import Project

    project = Project.open(env=args.env)
    resources = build_resources(project.settings)
    engine = resources["database"].engine()
    flows = {flow.name: flow.model for flow in project.flows}
    try:
        return _ledger_verb(args, engine, flows, resources["folders"])
    except sa.exc.OperationalError as exc:  # the message names host and port, never the password
        first = str(exc.orig or exc).strip().splitlines()[0]
        print(
            f"etl-assets: the target database does not answer ({first}): check database in the settings",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _ledger_verb(args: argparse.Namespace, engine: object, flows: dict, folders: object) -> int:
    import dataclasses
    import json

    from etl_assets.engine.ledger.show import format_objects, format_stale, object_rows, stale_partitions
    from etl_assets.engine.resubmit.resolved import resolved_counts
    from etl_assets.engine.staging import PartitionStage

    if args.verb == "show":
        found = object_rows(engine, args.flow, args.partition)
        if not found and args.flow not in flows:
            print(f"etl-assets: no flow {args.flow!r} (etl-assets flows list shows them)", file=sys.stderr)
            return EXIT_USAGE
        rejects = []  # of one partition: its staged files are read
        if args.partition and found:
            rejects = resolved_counts(engine, PartitionStage(args.flow, args.partition, folders))
        if args.json:
            print(json.dumps(found, indent=2, default=str))
        else:
            print(format_objects(found, rejects))
        return EXIT_OK
    if args.flow is not None and args.flow not in flows:
        print(f"etl-assets: no flow {args.flow!r} (etl-assets flows list shows them)", file=sys.stderr)
        return EXIT_USAGE
    if args.verb == "reprocess":
        return _reprocess(args, stale_partitions(engine, flows[args.flow]))
    names = [args.flow] if args.flow else list(flows)
    stale = {name: stale_partitions(engine, flows[name]) for name in names}
    if args.json:
        print(json.dumps({n: [dataclasses.asdict(p) for p in found] for n, found in stale.items()}, indent=2))
    else:
        print("\n".join(format_stale(name, found) for name, found in stale.items()))
    return EXIT_OK


def _reprocess(args: argparse.Namespace, stale: list) -> int:
    """A run per stale partition (each recorded in DAGSTER_HOME), the others left alone."""
    import dagster as dg

    from etl_assets.definitions import build_definitions
    from etl_assets.orchestration.reprocess import first_step, reprocess
    from etl_assets.settings import load_settings

    if not stale:
        print(f"{args.flow}: no stale partition: nothing to reprocess")
        return EXIT_OK
    if args.dry_run:
        for partition in stale:
            print(f"  {partition.partition_key}: would run from {first_step(partition, args.step)}")
        return EXIT_OK
    settings = load_settings(args.env)
    job = build_definitions(settings).resolve_job_def(f"{args.flow}_job")
    with dg.DagsterInstance.get() as instance:
        done = reprocess(job, args.flow, stale, instance, build_resources(settings)["folders"], args.step)
    print(f"reprocess of {args.flow}: {len(done)} stale partition(s)")
    for item in done:
        if item.run is None:
            print(f"  {item.partition_key}: refused: {item.refused}")
        else:
            status = "ok" if item.run.success else f"FAILED: {item.run.failure}"
            print(f"  {item.partition_key}: from {item.step}: {status} (run {item.run.run_id})")
    return EXIT_OK if all(item.ok for item in done) else EXIT_FAILED


COMMANDS = {"ledger": _ledger}
