"""A run's runtime parameters, from its run config (the UI's launchpad, a schedule's config):
the value set to use per parameter set, single overrides, local parameters. Only values a
run may change change: a choice that would alter the flow's assets (its name, partitions,
target, map fields or links) is refused, naming the key."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from etl_assets.model.flow import FlowModel
from etl_assets.model.parameters import FlowParameters

Reparameterise = Callable[[FlowParameters], FlowModel]
STRUCTURE = ("name", "partitions", "target", "links")


class FlowRunConfig(dg.Config):
    """``ops: {<flow>_steps: {config: {value_sets: {site: roma}, overrides: {site: {folder: x}},
    local: {warn: "5"}}}}``"""

    value_sets: dict[str, str] = {}
    overrides: dict[str, dict[str, str]] = {}
    local: dict[str, str] = {}

    def chosen(self) -> FlowParameters | None:
        if not (self.value_sets or self.overrides or self.local):
            return None
        return FlowParameters(value_sets=self.value_sets, overrides=self.overrides, local=self.local)  # type: ignore[arg-type]


def steps_op(flow: FlowModel) -> str:
    """The op whose config carries a run's parameters: the flow's one multi-asset."""
    return f"{flow.name}_steps"


def run_config_for(flow: FlowModel, parameters: FlowParameters) -> dict:
    """The run config choosing ``parameters``, as the launchpad would send it (values as text,
    which the declaration's types read back)."""
    config = {
        "value_sets": dict(parameters.value_sets),
        "overrides": {s: {k: str(v) for k, v in kv.items()} for s, kv in parameters.overrides.items()},
        "local": {k: str(v) for k, v in parameters.local.items()},
    }
    return {"ops": {steps_op(flow): {"config": config}}}


def flow_for_run(flow: FlowModel, config: FlowRunConfig, reparameterise: Reparameterise | None) -> FlowModel:
    """The flow as this run's parameters make it (the declared one without any)."""
    chosen = config.chosen()
    if chosen is None:
        return flow
    if reparameterise is None:
        raise dg.Failure(
            description=f"{flow.name} takes no runtime parameters (it is a sample flow of the package)"
        )
    try:
        run_flow = reparameterise(chosen)
    except ValueError as exc:
        raise dg.Failure(description=f"run config: {exc}", allow_retries=False) from None
    changed = [key for key in STRUCTURE if getattr(run_flow, key) != getattr(flow, key)]
    if list(run_flow.map) != list(flow.map):
        changed.append("map")
    if changed:
        raise dg.Failure(
            description=f"run config changes {', '.join(changed)} of {flow.name}: a run may change values, "
            "not the flow's assets; save the flow with the new parameters instead",
            allow_retries=False,
        )
    return run_flow


def check_schedule_parameters(flow: FlowModel, reparameterise: Reparameterise | None) -> None:
    """The schedule's parameters tried as its runs will take them: a fault fails the load,
    naming the flow, rather than every scheduled run."""
    spec = flow.schedule
    if spec is None or spec.parameters is None:
        return
    config = run_config_for(flow, spec.parameters)["ops"][steps_op(flow)]["config"]
    try:
        flow_for_run(flow, FlowRunConfig(**config), reparameterise)
    except dg.Failure as exc:
        raise ValueError(f"{flow.name} schedule.parameters: {exc.description}") from None
