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
    names = [args.flow] if args.flow else list(flows)
    stale = {name: stale_partitions(engine, flows[name]) for name in names}
    if args.json:
        print(json.dumps({n: [dataclasses.asdict(p) for p in found] for n, found in stale.items()}, indent=2))
    else:
        print("\n".join(format_stale(name, found) for name, found in stale.items()))
    return EXIT_OK


COMMANDS = {"ledger": _ledger}
