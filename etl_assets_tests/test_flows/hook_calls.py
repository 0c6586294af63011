"""A client's hook module as it sits beside its flow (``<flow>/hook_calls.py``): the tests copy
it there. Each call is appended to the JSON-lines file ``HOOK_LOG`` names, so calls can be
counted whatever process made them; ``HOOK_FAIL`` names a ``<hook>:<partition>`` that raises."""

from __future__ import annotations

import dataclasses
import json
import os

import pyarrow.parquet as pq


def record(context) -> None:  # noqa: ANN001 - etl_assets.engine.hooks.HookContext
    if os.environ.get("HOOK_FAIL") == f"{context.hook}:{context.partition_key}":
        raise RuntimeError(f"notification service down for {context.partition_key}")
    entry = dataclasses.asdict(context)
    entry["staged_file"] = str(context.staged_file) if context.staged_file else None
    if context.staged_file is not None:  # a hook may inspect the staged parquet
        entry["staged_rows"] = pq.ParquetFile(context.staged_file).metadata.num_rows
    with open(os.environ["HOOK_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def broken(context) -> None:  # noqa: ANN001
    raise ValueError("on_failure hook broken too")


def two_arguments(context, extra) -> None:  # noqa: ANN001
    """Not a hook: it takes two arguments."""
