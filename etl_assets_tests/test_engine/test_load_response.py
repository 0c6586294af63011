"""The load's response frame from a batch's look-up and the keys its statements wrote."""

from __future__ import annotations

import polars as pl

from etl_assets.engine.columns import LINE
from etl_assets.engine.load.response import RESPONSE_SCHEMA, respond
from etl_assets.engine.load.upsert import WRITTEN_SCHEMA


def test_each_line_answers_what_its_key_underwent_in_line_order() -> None:
    keyed = pl.DataFrame(
        {
            LINE: [2, 3, 4, 5, 6, 7],
            "key": ["new", "changed", "same-values", "same-hash", "new-but-taken", "changed-2"],
            "_before_id": [None, 10, 11, 12, None, 13],
            "_unchanged": [False, False, False, True, False, False],
        },
        schema_overrides={"_before_id": pl.Int64},
    )
    # the COPY inserted "new" (id 20); the upsert updated "changed" and "changed-2" but found
    # nothing changed in "same-values"; another writer's "new-but-taken" came back unwritten
    written = pl.DataFrame(
        {"key": ["changed-2", "new", "changed"], "_written_id": [13, 20, 10]}, schema=WRITTEN_SCHEMA
    )
    response = respond(keyed, written)
    assert response.schema == pl.Schema(RESPONSE_SCHEMA)
    assert response.rows() == [
        (2, "new", 20, "inserted", None),
        (3, "changed", 10, "updated", None),
        (4, "same-values", 11, "unchanged", None),
        (5, "same-hash", 12, "unchanged", None),
        (6, "new-but-taken", None, "unchanged", None),
        (7, "changed-2", 13, "updated", None),
    ]


def test_a_batch_nothing_was_written_of_is_unchanged_throughout() -> None:
    keyed = pl.DataFrame(
        {LINE: [2, 3], "key": ["a", "b"], "_before_id": [1, 2], "_unchanged": [True, True]},
    )
    response = respond(keyed, pl.DataFrame(schema=WRITTEN_SCHEMA))
    assert response.select("target_id", "action").rows() == [(1, "unchanged"), (2, "unchanged")]
