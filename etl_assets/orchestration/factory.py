"""The factory: one flow declaration -> extract, transform, load, link assets, the
catcher's checks, a job and its schedule. Nothing here names a flow, and no step logic
lives here.

The four assets are one op (``<flow>_steps``, a subsettable multi-asset): its body
(``flow_run.FlowRun``) takes each partition of the run through the selected steps and reports
each (step, partition) as it lands, so a run over a range lands its good partitions and fails
only the bad ones. That is what lets a backfill run many partitions per run, in a process, and
stay a partition per unit of work.
"""

import dagster as dg

from etl_assets.engine import catcher
from etl_assets.engine.verdicts import RECONCILIATION
from etl_assets.model.flow import STEPS, FlowModel
from etl_assets.model.versions import flow_versions
from etl_assets.orchestration.columns import step_metadata
from etl_assets.orchestration.executor import op_placement
from etl_assets.orchestration.faults import RETRY_POLICY
from etl_assets.orchestration.flow_run import FlowRun, FlowRuntime, Resources
from etl_assets.orchestration.jobs import flow_jobs
from etl_assets.orchestration.lineage import TableLoaders
from etl_assets.orchestration.parking import parking_defs
from etl_assets.orchestration.partitions import partitions_def
from etl_assets.orchestration.run_parameters import (
    FlowRunConfig,
    Reparameterise,
    check_schedule_parameters,
    flow_for_run,
    steps_op,
)
from etl_assets.orchestration.sensors import catch_up_schedule, file_sensor
from etl_assets.resources import (
    DatabaseResource,
    FilesResource,
    FoldersResource,
    MailerResource,
    SourcesResource,
)

__all__ = ["FlowRuntime", "build_flow_defs"]

STEP_DESCRIPTIONS = {
    "extract": "extract: the partition's file, kept (sha256) and backed up.",
    "transform": "transform: the map, duplicates collapsed or resolved.",
    "load": "load: upsert into {table} on {key}, a transaction a partition.",
    "link": "link: reference columns from natural values.",
}
STEP_KINDS = {"extract": {"sftp", "polars"}, "transform": {"polars"}, "load": {"sql"}, "link": {"sql"}}


def build_flow_defs(
    flow: FlowModel,
    runtime: FlowRuntime,
    reparameterise: Reparameterise | None = None,
    loaders: TableLoaders | None = None,
) -> dg.Definitions:
    """Assets, checks, job and schedule of one flow; ``reparameterise`` builds the flow anew
    with a run's parameters (its run config), for a flow declared with them; ``loaders``, the
    code location's flows by table, gives the link step its deps on the flows it links to."""
    loaders = TableLoaders() if loaders is None else loaders
    check_schedule_parameters(flow, reparameterise)
    partitions = partitions_def(flow, runtime.timezone)
    run_flow = FlowRun(flow, partitions, runtime)
    keys = run_flow.keys
    versions = flow_versions(flow)

    def check(step: str, name: str, description: str) -> dg.AssetCheckSpec:
        blocking = step in flow.blocking_checks or name == RECONCILIATION
        return dg.AssetCheckSpec(
            name, asset=keys[step], partitions_def=partitions, blocking=blocking, description=description
        )

    rejected = f"rejected rows: pass with none, {catcher.limit_text(flow.warn_limit)}, fail above"
    checks = [
        check("extract", "schema_drift", "columns not in the map"),
        check("extract", "source_unchanged", "same bytes as before"),
        *(check(step, catcher.CHECK_NAME, f"{step} {rejected}") for step in ("transform", "load", "link")),
        check("load", RECONCILIATION, "rows in = loaded + rejected + collapsed duplicates"),
    ]
    specs = [
        dg.AssetSpec(
            keys[step],
            deps=([keys[STEPS[i - 1]]] if i else []) + (loaders.link_deps(flow) if step == "link" else []),
            description=(f"{flow.description}\n\n" if step == "extract" else "")
            + STEP_DESCRIPTIONS[step].format(table=flow.target.table, key=flow.target.key),
            kinds=STEP_KINDS[step],
            group_name=flow.name,
            code_version=versions[step],  # the stage's hash, as the ledger records it
            skippable=True,
            metadata=step_metadata(flow, step, loaders),
        )
        for i, step in enumerate(STEPS)
    ]

    @dg.multi_asset(
        name=steps_op(flow),
        specs=specs,
        check_specs=checks,
        can_subset=True,
        partitions_def=partitions,
        # a backfill's run takes up to backfill_chunk partitions; each lands or fails alone
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=flow.partitions.backfill_chunk),
        retry_policy=RETRY_POLICY,
        **op_placement(runtime.queues.get(flow.work), flow.name),
        description=f"{flow.name}: extract, transform, load and link, a partition at a time",
    )
    def steps(
        context: dg.AssetExecutionContext,
        config: FlowRunConfig,
        files: FilesResource,
        folders: FoldersResource,
        mailer: MailerResource,
        database: DatabaseResource,
        sources: SourcesResource,
    ):  # no return annotation: Dagster reads one as the outputs' types
        this_run = flow_for_run(flow, config, reparameterise)
        runner = run_flow if this_run is flow else FlowRun(this_run, partitions, runtime)
        runner(context, Resources(files, folders, mailer, database, sources))
        # a generator that yields no output: each (step, partition) was logged as it landed
        yield from ()

    extract_checks = [c.name for c in checks if c.asset_key == keys["extract"]]
    jobs, schedules = flow_jobs(flow, keys, extract_checks, runtime.timezone)
    definitions = dg.Definitions(
        assets=[steps],
        jobs=jobs,
        schedules=schedules
        + ([catch_up_schedule(flow, jobs[0], partitions, runtime.timezone)] if flow.sensor else []),
        sensors=[file_sensor(flow, jobs[0], partitions)] if flow.sensor else [],
    )
    if any(link.on_missing == "park" for link in flow.links):
        definitions = dg.Definitions.merge(definitions, parking_defs(flow, run_flow.parked, keys["link"]))
    return definitions
