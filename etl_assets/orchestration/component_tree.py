"""The components under ``defs/``, loaded with the environment's settings handed to them.

Dagster builds a component from its YAML and a load context; the context carries the
component tree. Our tree carries the settings the components need, so that no component
fetches the settings itself: ``definitions.py`` reads them once and builds the tree with them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import dagster as dg
from dagster_shared.record import copy, record

from etl_assets.orchestration.lineage import TableLoaders


@dataclass(frozen=True)
class ComponentSettings:
    """What the flow and report components take from the environment's settings."""

    timezone: str = "Europe/Rome"
    max_park_age: timedelta = timedelta(hours=24)
    report_recipients: Mapping[str, list[str]] = field(default_factory=dict)
    # every flow of the code location by the table it loads: the deps across flows
    loaders: TableLoaders = field(default_factory=TableLoaders)
    queues: Mapping[str, str] = field(default_factory=dict)  # Celery's, by kind of work


@record(checked=False)
class SettingsComponentTree(dg.ComponentTree):
    """A component tree that hands ``ComponentSettings`` to the components it loads."""

    settings: ComponentSettings | None = None


def component_settings(context: dg.ComponentLoadContext) -> ComponentSettings:
    """The settings handed to the tree this component is loaded from."""
    settings = getattr(context.component_tree, "settings", None)
    if not isinstance(settings, ComponentSettings):
        raise dg.DagsterInvalidDefinitionError(
            "etl_assets components are loaded by etl_assets.definitions (it hands them the "
            "environment's settings): point Dagster at -m etl_assets or -m etl_assets.definitions"
        )
    return settings


@contextmanager
def quiet_previews() -> Iterator[None]:
    """As quiet as ``load_from_defs_folder`` about Dagster's beta and preview APIs: warnings
    for Dagster's developers, not for the operator loading the code location."""
    with warnings.catch_warnings():
        for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):
            warnings.simplefilter("ignore", category)
        yield


def build_component_defs(project_root: Path, defs_dir: Path, settings: ComponentSettings) -> dg.Definitions:
    """The components under ``defs_dir`` with their component tree, as ``load_from_defs_folder``
    builds them, less its catalogue of every installed component type: a JSON schema of each,
    rendered on every code-location load (0.5 s here, a tenth of a one-partition CLI run)
    for the component authoring docs, which operators of this location do not use."""
    with quiet_previews():
        tree = copy(SettingsComponentTree.for_project(path_within_project=project_root), settings=settings)
        return dg.Definitions.merge(tree.build_defs(defs_dir), dg.Definitions(component_tree=tree))
