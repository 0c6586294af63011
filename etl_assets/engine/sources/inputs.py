"""What a table or a generator is read with, beside the partition's window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from etl_assets.resources.sources import SourcesResource


@dataclass(frozen=True)
class SourceInputs:
    """The partition's window, the source connectors, and the target (where the watermark is)."""

    start: datetime
    end: datetime
    sources: SourcesResource = field(default_factory=SourcesResource)
    target: Callable[[], sa.Engine] | None = None
