"""The databases flows read from (``sources:`` in the settings), each a DatabaseResource."""

from __future__ import annotations

from dagster import ConfigurableResource

from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.errors import ConnectorError


class SourcesResource(ConfigurableResource):
    """Source connectors by name (``source.database.connector`` of a flow names one)."""

    connectors: dict[str, DatabaseResource] = {}

    def connector(self, name: str) -> DatabaseResource:
        """The connector ``name``; a clear error when the settings lack it."""
        found = self.connectors.get(name)
        if found is None:
            known = ", ".join(sorted(self.connectors)) or "none"
            raise ConnectorError(
                f"sources.{name}", f"no source connector {name!r} in the settings (sources: {known}); add it"
            )
        return found
