"""A Python source: ``source: {python: "module:function"}`` names a generator given a
``SourceContext`` (the partition's window, the flow's options and source connectors); it yields
dicts or Polars frames, which are kept and staged as a table's rows are.

A page of an API is fetched through ``context.page(label, fetch)``: a failing page is tried again
with a doubling wait, then fails the partition with an error naming the function and the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import polars as pl

from etl_assets.engine.extract import Extracted, SourceFileError
from etl_assets.engine.sources.inputs import SourceInputs
from etl_assets.engine.sources.records import stage_records, upper_columns
from etl_assets.model.flow import FlowModel
from etl_assets.model.functions import load_function
from etl_assets.resources.folders import FoldersResource
from etl_assets.resources.sources import SourcesResource

T = TypeVar("T")


class PageFailed(SourceFileError):
    """A page kept failing after its retries."""


@dataclass(frozen=True)
class SourceContext:
    """What a Python source is given: the partition and its window, the declaration's options,
    the source connectors, and ``page`` to fetch a page with retries."""

    function: str
    partition_key: str
    window_start: datetime
    window_end: datetime
    options: Mapping[str, Any] = field(default_factory=dict)
    sources: SourcesResource = field(default_factory=SourcesResource)
    retries: int = 3
    backoff_seconds: float = 1.0

    def page(self, label: object, fetch: Callable[[], T]) -> T:
        """``fetch()`` tried up to ``retries`` more times, waiting ``backoff_seconds`` then twice
        as long each time; after the last, PageFailed names the function, the page, the tries."""
        wait = self.backoff_seconds
        for attempt in range(1, self.retries + 2):
            try:
                return fetch()
            except Exception as exc:  # any fault of the page: the source's own, retried alike
                if attempt > self.retries:
                    raise PageFailed(
                        f"python source {self.function}",
                        f"page {label} failed {attempt} times, last: {type(exc).__name__}: {exc}; "
                        "check the API, then run the partition again",
                    ) from exc
                time.sleep(wait)
                wait *= 2
        raise AssertionError("unreachable")


def extract_generated(flow: FlowModel, key: str, inputs: SourceInputs, folders: FoldersResource) -> Extracted:
    """The generator's records for the partition, kept and staged."""
    path = flow.source.python
    assert path is not None
    origin = f"python source {path}"
    try:
        function = load_function(path, "source.python")
    except ValueError as exc:
        raise SourceFileError(origin, str(exc)) from None
    context = SourceContext(
        path,
        key,
        inputs.start,
        inputs.end,
        dict(flow.source.options or {}),
        inputs.sources,
        flow.source.retries,
        flow.source.backoff_seconds,
    )
    try:
        frame = records_frame(function(context))
    except SourceFileError:
        raise
    except Exception as exc:
        raise SourceFileError(origin, f"failed: {type(exc).__name__}: {exc}") from exc
    if frame.width == 0:  # nothing yielded: no record, but the columns the map reads
        columns = sorted({flow.source_column(n) for n in flow.map})
        frame = pl.DataFrame(schema=dict.fromkeys(columns, pl.String))
    return stage_records(flow, key, inputs.start, upper_columns(frame, origin), folders, origin)


def records_frame(items: Iterable[Mapping[str, Any] | pl.DataFrame]) -> pl.DataFrame:
    """Dicts and frames in the order yielded, as one frame (columns of all, missing ones null)."""
    frames: list[pl.DataFrame] = []
    rows: list[Mapping[str, Any]] = []
    for item in items:
        if isinstance(item, pl.DataFrame):
            if rows:
                frames.append(pl.from_dicts(rows, infer_schema_length=None))
                rows = []
            frames.append(item)
        elif isinstance(item, Mapping):
            rows.append(item)
        else:
            raise TypeError(f"a source yields dicts or Polars frames, not {type(item).__name__}")
    if rows:
        frames.append(pl.from_dicts(rows, infer_schema_length=None))
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed")
