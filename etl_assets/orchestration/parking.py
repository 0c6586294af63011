"""``<flow>_parked``: a parking flow's parked rows as an asset, retried after each load of the
flows they wait for (an asset sensor per referenced flow)."""

from datetime import datetime
from typing import TYPE_CHECKING

import dagster as dg

from etl_assets.engine import catcher
from etl_assets.model.flow import FlowModel
from etl_assets.resources import DatabaseResource, FoldersResource, MailerResource

if TYPE_CHECKING:
    from etl_assets.orchestration.factory import FlowAssets

REFERENCED_LOADED_AT = "etl_assets/referenced_loaded_at"


def parking_defs(flow: FlowModel, bodies: "FlowAssets", link_key: dg.AssetKey) -> dg.Definitions:
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
        return bodies.parked(context, database, folders, mailer, context.run.tags.get(REFERENCED_LOADED_AT))

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
            loaded_at = datetime.fromtimestamp(asset_event.timestamp).replace(microsecond=0).isoformat()
            return dg.RunRequest(
                run_key=f"{asset_event.run_id}:{asset_event.timestamp}",
                tags={REFERENCED_LOADED_AT: loaded_at},
            )

        sensors.append(after_load)
    return dg.Definitions(assets=[parked], jobs=[job], sensors=sensors)
