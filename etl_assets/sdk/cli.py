"""``etl-assets flows ...``: the SDK's verbs from a shell, for consultants and CI.

``list``, ``show``, ``create``, ``duplicate``, ``delete``, ``compile``, ``arrange``, ``history``,
``diff``, ``rollback``; ``--json``
prints data for scripts; ``compile`` takes reports' names too, and ``--all`` compiles every
flow and every report. Exit status as the rest of the CLI: 0 done, 1 the work failed (a
compile with errors, a delete refused), 2 a usage error (no such flow, a bad name).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from typing import Any

from etl_assets.model.declarations import DeclarationError
from etl_assets.sdk.archive import ArchiveError, export_flows, import_flows
from etl_assets.sdk.flow import Flow
from etl_assets.sdk.project import FlowError, Project
from etl_assets.sdk.report import Report

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(commands: argparse._SubParsersAction, env: argparse.ArgumentParser) -> None:
    """``flows`` and its verbs, beside the other commands."""
    flows = commands.add_parser("flows", help="manage flows as data: list, show, create, compile, ...")
    verbs = flows.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False, parents=[env])
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing = verbs.add_parser("list", parents=[common], help="every flow: name, cadence, table, file")
    listing.add_argument("--cadence", help="only daily, monthly or five_minutes flows")
    verbs.add_parser("show", parents=[common], help="a flow's declaration").add_argument("name")
    create = verbs.add_parser("create", parents=[common], help="a new flow in the first of flows.dirs")
    create.add_argument("name")
    create.add_argument("--template", help="an existing flow to start from (its table renamed)")
    create.add_argument("--description")
    duplicate = verbs.add_parser("duplicate", parents=[common], help="a copy of a flow under a new name")
    duplicate.add_argument("name")
    duplicate.add_argument("new_name")
    duplicate.add_argument("--description")
    delete = verbs.add_parser("delete", parents=[common], help="a client flow's declaration (data stays)")
    delete.add_argument("name")
    delete.add_argument("--force", action="store_true", help="even while runs of it are queued or running")
    compile_ = verbs.add_parser("compile", parents=[common], help="check flows and reports without running")
    compile_.add_argument("names", nargs="*", help="flows' or reports' names")
    compile_.add_argument("--all", action="store_true", help="every flow and report (what CI runs)")
    verbs.add_parser("arrange", parents=[common], help="rewrite a flow in the canonical layout").add_argument(
        "name"
    )
    verbs.add_parser("history", parents=[common], help="a flow's saved revisions").add_argument("name")
    diff = verbs.add_parser("diff", parents=[common], help="a unified diff of two revisions")
    diff.add_argument("name")
    diff.add_argument("first", type=int)
    diff.add_argument("second", type=int)
    rollback = verbs.add_parser("rollback", parents=[common], help="save an old revision again")
    rollback.add_argument("name")
    rollback.add_argument("revision", type=int)
    export = verbs.add_parser("export", parents=[common], help="a ZIP of flows for another installation")
    export.add_argument("names", nargs="+")
    export.add_argument("--to", help="the ZIP file or a folder (default: ETL_HOME/export/flows_<time>.zip)")
    import_ = verbs.add_parser("import", parents=[common], help="flows from an exported ZIP")
    import_.add_argument("file")
    import_.add_argument(
        "--conflict", choices=["skip", "rename", "replace"], default="skip", help="a flow of that name exists"
    )
    import_.add_argument(
        "--replace-mode",
        choices=["soft", "hard"],
        default="soft",
        help="with --conflict replace: soft keeps the old declaration as a revision and its modules; "
        "hard moves the old folder to .deleted/ and writes the flow fresh",
    )
    import_.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    import_.add_argument("--import-only", action="store_true", help="do not compile the imported flows")
    import_.add_argument("--continue", action="store_true", dest="keep_going", help="go on after a failure")


def run(args: argparse.Namespace) -> int:
    """The verb, its output on stdout, a refusal as one line on stderr."""
    try:
        asks_runs = args.verb == "delete" or getattr(args, "replace_mode", None) == "hard"  # moves a folder
        project = Project.open(env=args.env, instance=_instance() if asks_runs else None)
        return VERBS[args.verb](project, args)
    except FlowError as exc:
        print(f"etl-assets: {exc}", file=sys.stderr)
        return EXIT_FAILED if args.verb == "delete" else EXIT_USAGE
    except DeclarationError as exc:  # a declaration that does not load: compile's finding
        print(f"etl-assets: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _instance() -> Any:
    """The Dagster instance of DAGSTER_HOME, asked about active runs; None without one."""
    import os

    import dagster as dg

    return dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None


def _described(flow: Flow) -> dict[str, object]:
    return {
        "name": flow.name,
        "cadence": flow.cadence,
        "table": flow.target.table,
        "file": str(flow.path),
        "packaged": flow.packaged,
        "description": flow.description,
    }


def _named(project: Project, name: str) -> Flow:
    flow = project.flows.get(name)
    if flow is None:
        raise FlowError(f"no flow {name!r} (etl-assets flows list shows them)")
    return flow


def _print(args: argparse.Namespace, data: object, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _list(project: Project, args: argparse.Namespace) -> int:
    flows = project.flows.get_all(cadence=args.cadence)
    lines = [f"{f.name:<20} {f.cadence:<13} {f.target.table:<20} {f.path}" for f in flows]
    _print(args, [_described(f) for f in flows], "\n".join(lines))
    return EXIT_OK


def _show(project: Project, args: argparse.Namespace) -> int:
    flow = _named(project, args.name)
    _print(
        args, {**_described(flow), "declaration": flow.declaration()}, flow.path.read_text(encoding="utf-8")
    )
    return EXIT_OK


def _create(project: Project, args: argparse.Namespace) -> int:
    flow = project.create_flow(args.name, args.description, args.template)
    _print(args, _described(flow), f"created {flow.name}: {flow.path}")
    return EXIT_OK


def _duplicate(project: Project, args: argparse.Namespace) -> int:
    flow = project.duplicate_flow(_named(project, args.name), args.new_name, args.description)
    _print(args, _described(flow), f"created {flow.name} from {args.name}: {flow.path}")
    return EXIT_OK


def _delete(project: Project, args: argparse.Namespace) -> int:
    deleted = project.delete_flow(_named(project, args.name), force=args.force)
    text = "\n".join([f"deleted {deleted.flow}: {deleted.declaration}", "left in place:"])
    text += "".join(f"\n  {r}" for r in deleted.remains)
    _print(
        args,
        {"flow": deleted.flow, "declaration": str(deleted.declaration), "remains": deleted.remains},
        text,
    )
    return EXIT_OK


def _compilable(project: Project, name: str) -> Flow | Report:
    """The flow of that name, else the report."""
    found = project.flows.get(name) or project.reports.get(name)
    if found is None:
        reports = ", ".join(r.name for r in project.reports) or "none"
        raise FlowError(
            f"no flow or report {name!r} (etl-assets flows list shows the flows; reports: {reports})"
        )
    return found


def _compile(project: Project, args: argparse.Namespace) -> int:
    if not args.all and not args.names:
        raise FlowError("name the flows or reports to compile, or --all")
    if args.all:
        compilable: list[Flow | Report] = [*project.flows, *project.reports]
    else:
        compilable = [_compilable(project, n) for n in args.names]
    results = [each.compile() for each in compilable]
    lines = [
        f"{r.flow}{' (report)' if r.kind == 'report' else ''}: {'ok' if r.ok else 'FAILED'}"
        + "".join(f"\n  {p}" for p in r.problems)
        for r in results
    ]
    data = [
        {
            "flow": r.flow,
            "kind": r.kind,
            "ok": r.ok,
            "problems": [{**p.__dict__, "file": str(p.file) if p.file else None} for p in r.problems],
        }
        for r in results
    ]
    _print(args, data, "\n".join(lines))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def _arrange(project: Project, args: argparse.Namespace) -> int:
    flow = _named(project, args.name)
    flow.auto_arrange()
    project.update_flow(flow)
    _print(args, _described(flow), f"arranged {flow.name}: {flow.path}")
    return EXIT_OK


def _history(project: Project, args: argparse.Namespace) -> int:
    revisions = _named(project, args.name).history()
    data = [
        {"revision": r.number, "saved_at": r.saved_at.isoformat(), "file": str(r.path)} for r in revisions
    ]
    _print(
        args,
        data,
        "\n".join(f"{r.number:>4}  {r.saved_at:%Y-%m-%d %H:%M:%S} UTC  {r.path}" for r in revisions),
    )
    return EXIT_OK


def _diff(project: Project, args: argparse.Namespace) -> int:
    text = _named(project, args.name).diff(args.first, args.second)
    _print(args, {"diff": text}, text.rstrip("\n"))
    return EXIT_OK


def _rollback(project: Project, args: argparse.Namespace) -> int:
    flow = project.rollback_flow(_named(project, args.name), args.revision)
    newest = flow.history()[-1].number
    _print(
        args,
        {**_described(flow), "revision": newest},
        f"{flow.name}: revision {args.revision} saved as {newest}",
    )
    return EXIT_OK


def _export(project: Project, args: argparse.Namespace) -> int:
    flows = [_named(project, n) for n in args.names]
    try:
        path = export_flows(project, flows, args.to)
    except ArchiveError as exc:
        print(f"etl-assets: {exc}", file=sys.stderr)
        return EXIT_FAILED
    with zipfile.ZipFile(path) as archive:
        placeholders = json.loads(archive.read("manifest.json"))["placeholders"]
    lines = [f"exported {', '.join(f.name for f in flows)}: {path}"]
    lines += ["placeholders the importing installation must fill:"] if placeholders else []
    lines += [f"  {p['placeholder']}  ({p['why']})" for p in placeholders]
    _print(args, {"file": str(path), "flows": args.names, "placeholders": placeholders}, "\n".join(lines))
    return EXIT_OK


def _import(project: Project, args: argparse.Namespace) -> int:
    try:
        response = import_flows(
            project,
            args.file,
            on_failure="continue" if args.keep_going else "stop",
            conflict_resolution=args.conflict,
            replace_mode=args.replace_mode,
            import_only=args.import_only,
            dry_run=args.dry_run,
        )
    except ArchiveError as exc:
        print(f"etl-assets: {exc}", file=sys.stderr)
        return EXIT_FAILED
    lines = [str(o) for o in response.outcomes] + [str(s) for s in response.parameter_sets]
    lines += ["placeholders to fill (compile fails until they are):"] if response.placeholders else []
    lines += [f"  {p}" for p in response.placeholders]
    lines.append(f"import {'plan' if response.dry_run else 'status'}: {response.status}")
    _print(args, response.as_dict(), "\n".join(lines))
    return EXIT_OK if response.status == "completed" else EXIT_FAILED


VERBS = {
    "list": _list,
    "show": _show,
    "create": _create,
    "duplicate": _duplicate,
    "delete": _delete,
    "compile": _compile,
    "arrange": _arrange,
    "history": _history,
    "diff": _diff,
    "rollback": _rollback,
    "export": _export,
    "import": _import,
}
