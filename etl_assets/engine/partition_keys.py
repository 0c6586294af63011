"""A partition's key, its start and its file name, each from the other: the extract finds a
partition's file by name, the sensors and housekeeping find a file's partition by its name."""

from __future__ import annotations

import re
from datetime import datetime

from etl_assets.model.flow import FlowModel

KEY_FORMATS = {"daily": "%Y-%m-%d", "monthly": "%Y-%m-%d", "five_minutes": "%Y-%m-%d-%H:%M"}
_FIELD = re.compile(r"\{start:([^}]*)\}")


def source_file_name(flow: FlowModel, start: datetime) -> str:
    """The file name of a partition, e.g. ``companies_20260127.csv``; a database or Python source's
    extract is kept as ``<flow>_<start>.parquet``."""
    return file_pattern(flow).format(start=start)


def file_pattern(flow: FlowModel) -> str:
    """The declared file name, or the name of a table's or a generator's kept extract."""
    return flow.source.file or f"{flow.name}_{{start:%Y%m%d%H%M}}.parquet"


def partition_key_for_file(flow: FlowModel, file_name: str) -> str | None:
    """The partition key a file name stands for, or None when the name is not this flow's."""
    if flow.source.file is None:  # no file arrives for a table or a generator
        return None
    match = _FIELD.search(flow.source.file)
    if match is None:
        return None
    prefix, suffix = flow.source.file[: match.start()], flow.source.file[match.end() :]
    if not (file_name.startswith(prefix) and file_name.endswith(suffix)) or len(file_name) <= len(
        prefix + suffix
    ):
        return None
    try:
        start = datetime.strptime(file_name[len(prefix) : len(file_name) - len(suffix)], match.group(1))
    except ValueError:
        return None
    return start.strftime(KEY_FORMATS[flow.partitions.kind])
