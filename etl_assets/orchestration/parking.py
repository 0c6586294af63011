"""``<flow>_parked``: a parking flow's parked rows as an asset, retried after each load of the
flows they wait for (an asset sensor per referenced flow). An operator's materialization of it
applies the same rule as the sensor's: the rule reads only the target's data."""

from collections.abc import Callable

import dagster as dg

from etl_assets.engine import catcher
from etl_assets.model.flow import FlowModel
from etl_assets.resources import DatabaseResource, FoldersResource, MailerResource

# the asset's body: (context, database, folders, mailer) -> its MaterializeResult
ParkedBody = Callable[
    [dg.AssetExecutionContext, DatabaseResource, FoldersResource, MailerResource], dg.MaterializeResult
]


def parking_defs(flow: FlowModel, body: ParkedBody, link_key: dg.AssetKey) -> dg.Definitions:
    """The parked rows' asset, its retry job and the sensors that start it."""
    name = flow.asset_name("parked")
    after_flows = sorted({str(link.after_flow) for link in flow.links if link.on_missing == "park"})

    @dg.asset(
        name=name,
        group_name=flow.name,
        deps=[link_key],
        kinds={"sql"},
        check_specs=[
            dg.AssetCheckSpec(catcher.CHECK_NAME, asset=dg.AssetKey(name), description="expired parked rows")
        ],
        description="Rows waiting for their referenced row; retried after each load of "
        + ", ".join(after_flows),
    )
    def parked(
        context: dg.AssetExecutionContext,
        database: DatabaseResource,
        folders: FoldersResource,
        mailer: MailerResource,
    ):
        return body(context, database, folders, mailer)

    job = dg.define_asset_job(f"{name}_retry", selection=dg.AssetSelection.assets(parked))
    sensors = []
    for after_flow in after_flows:

        @dg.asset_sensor(
            name=f"{name}_after_{after_flow}",
            asset_key=dg.AssetKey(f"{after_flow}_link"),
            job=job,
            default_status=dg.DefaultSensorStatus.RUNNING,
            description=f"retry parked {flow.name} rows after each {after_flow} load",
        )
        def after_load(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry) -> dg.RunRequest:
            # what expires is decided from the target's data (etl_partition_loads), not from here
            return dg.RunRequest(run_key=f"{asset_event.run_id}:{asset_event.timestamp}")

        sensors.append(after_load)
    return dg.Definitions(assets=[parked], jobs=[job], sensors=sensors)
