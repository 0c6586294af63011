"""The flows a process runs, when its command line says: a run needs only those.

Dagster loads the whole code location in every process that runs something (the CLI's
``dagster asset materialize``, a run worker's ``dagster api execute_run``, a step worker),
about 10 ms a flow: a location of a hundred flows paid a second for each, to run one flow.
The command says which flows it runs: ``--select group:offers`` or ``offers_load``, a run
worker's job ``offers_job``. Those flows, and the flows whose tables they link to (their
assets are the link step's parents: its provenance maps their partitions), are all such a
process builds; anything else on the command line (a report, a ``+`` or ``*`` selection, an
implicit asset job, a name no flow has) loads every flow, as before. A process that lists
or serves the definitions (``definitions validate``, the webserver's code server, the daemon)
names no flow and builds them all.
"""

from __future__ import annotations

import base64
import os
import re
import zlib
from collections.abc import Iterable, Sequence

from etl_assets.model.flow import STEPS, FlowModel
from etl_assets.orchestration.lineage import TableLoaders

API_ARGS_ENV = {
    "execute_run": ("DAGSTER_EXECUTE_RUN_ARGS", "DAGSTER_COMPRESSED_EXECUTE_RUN_ARGS"),
    "execute_step": ("DAGSTER_EXECUTE_STEP_ARGS", "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"),
    "resume_run": ("", ""),
}
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def option(argv: Sequence[str], name: str) -> str | None:
    """``--name value`` or ``--name=value``."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def selected_names(selection: str) -> list[str] | None:
    """The flow or asset names of a plain selection (``group:a,b_load``); None for anything
    else (``+``, ``*``, ``tag:``, a key path)."""
    names = []
    for item in selection.split(","):
        item = item.strip().removeprefix("group:")
        if not PLAIN_NAME.match(item):
            return None
        names.append(item)
    return names


def api_job_name(argv: Sequence[str], command: str) -> str | None:
    """The job a ``dagster api execute_run|execute_step|resume_run`` process runs."""
    from dagster._serdes import deserialize_value

    plain_env, compressed_env = API_ARGS_ENV[command]
    compressed = option(argv, "--compressed-input-json") or os.environ.get(compressed_env or "-")
    positional = [a for a in argv if a.startswith("{")]
    text = positional[0] if positional else os.environ.get(plain_env or "-")
    if text is None and compressed:
        text = zlib.decompress(base64.b64decode(compressed.encode())).decode()
    if text is None:
        return None
    try:
        return deserialize_value(text).job_origin.job_name  # type: ignore[union-attr]
    except Exception:  # not ours to judge: Dagster reports a bad argument itself
        return None


def requested_names(argv: Sequence[str]) -> list[str] | None:
    """Asset, group or job names the command runs; None when it does not say."""
    words = list(argv[1:])
    if words[:2] == ["asset", "materialize"]:
        selection = option(words, "--select")
        return selected_names(selection) if selection else None
    if len(words) >= 2 and words[0] == "api" and words[1] in API_ARGS_ENV:
        job = api_job_name(words, words[1])
        return [job] if job else None
    return None


def flows_of(names: Iterable[str], flows: Sequence[FlowModel]) -> set[str] | None:
    """The flows ``names`` (a flow, its group, one of its assets or its job) stand for; None
    when one names something else."""
    by_name = {}
    for flow in flows:
        for name in (flow.name, f"{flow.name}_job", *(flow.asset_name(step) for step in STEPS)):
            by_name[name] = flow.name
    found = set()
    for name in names:
        if name not in by_name:
            return None
        found.add(by_name[name])
    return found


def with_upstream(names: set[str], flows: Sequence[FlowModel], loaders: TableLoaders) -> set[str]:
    """``names`` and every flow loading a table one of them links to, and theirs."""
    by_name = {flow.name: flow for flow in flows}
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        todo.extend(other.name for link in by_name[name].links for other in loaders.loading(link.table))
    return needed


def flows_to_build(argv: Sequence[str], flows: Sequence[FlowModel], loaders: TableLoaders) -> set[str] | None:
    """The flows this process needs (None: all of them)."""
    names = requested_names(argv)
    requested = flows_of(names, flows) if names else None
    return None if requested is None else with_upstream(requested, flows, loaders)
