"""A flow as a Dagster component: ``defs/<flow>/defs.yaml`` holds a FlowModel.

The component's schema is our own pydantic FlowModel (``extra="forbid"``), so a wrong key
or type in a flow's YAML is reported with the file, line and dotted key.
"""

from functools import partial

import dagster as dg
from dagster.components.component_scaffolding import scaffold_component
from pydantic import BaseModel

from etl_assets.model.declarations import FlowFile, read_flow
from etl_assets.model.flow import FlowModel, MapField, SourceSpec, TargetSpec
from etl_assets.orchestration.component_tree import ComponentSettings, component_settings, quiet_previews
from etl_assets.orchestration.factory import FlowRuntime, build_flow_defs


class FlowScaffolder(dg.Scaffolder):
    """``dg scaffold defs etl_assets.orchestration.FlowComponent <flow>`` writes a starter
    declaration that loads as it is: fill in the map and the target."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = request.target_path.name
        starter = FlowModel(
            name=name,
            description=f"{name}: describe the source and the target",
            source=SourceSpec(file=f"{name}_{{start:%Y%m%d}}.csv", folder=f"/outbound/{name}"),
            map={
                "external_id": MapField(type="String", source="ID", required=True),
                "name": MapField(type="String", source="NAME"),
            },
            target=TargetSpec(table=name, key="external_id"),
        )
        scaffold_component(request, starter.model_dump(mode="json", exclude_defaults=True))


@dg.scaffold_with(FlowScaffolder)
class FlowComponent(dg.Component):
    """An ETL flow (replaces a Talend job): extract -> transform -> load -> link, with the
    catcher's checks, a job and its schedule."""

    def __init__(self, flow: FlowModel) -> None:
        self.flow = flow

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return FlowModel

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext) -> "FlowComponent":
        if not isinstance(attributes, FlowModel):
            raise TypeError("a flow's defs.yaml needs attributes")
        return cls(attributes)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        settings = component_settings(context)
        return build_flow_defs(self.flow, flow_runtime(settings), loaders=settings.loaders)


def flow_runtime(settings: ComponentSettings) -> FlowRuntime:
    return FlowRuntime(settings.timezone, settings.max_park_age, settings.queues)


def build_flow_file_defs(files: list[FlowFile], settings: ComponentSettings) -> dg.Definitions:
    """The flows declared outside the package (``flows.dirs``), built as their component would
    build them (a component tree only reaches the package's own ``defs/``)."""
    runtime = flow_runtime(settings)
    with quiet_previews():
        return dg.Definitions.merge(
            *(
                build_flow_defs(file.flow, runtime, partial(read_flow, file.path, None), settings.loaders)
                for file in files
            )
        )
