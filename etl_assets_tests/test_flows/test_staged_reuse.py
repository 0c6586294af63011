"""An identical re-delivery costs no parse and no map (issue 23): extract and transform reuse
their staged output when it was made from the very bytes (sha256) and the very staged extract
by the same stage version; anything else is computed again. The error file, the target and
the counts are those of a full run."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from etl_assets.engine.staging import MADE_TAG, staged_tags
from etl_assets.engine.transform.stage import transform_stage
from etl_assets_tests.test_engine.test_extract_transform import FLOW
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv, materializations

DAY = "2026-01-15"
FILE = "companies_20260115.csv"
GOOD = [
    "C1;IT00000000001;Rossi S.p.A.;;Milano;;IT;;;;1.000,00;;01/02/2003;14/01/2026 10:00:00",
    "C2;IT00000000002;Verdi S.r.l.;;Roma;;IT;;;IT00000000001;;;;14/01/2026 10:00:00",
]
BAD = "C3;IT00000000003;Neri S.r.l.;;Torino;;IT;;;;;;31/02/2020;14/01/2026 10:00:00"  # no such date


def reused(result, asset: str, name: str) -> bool:
    return materializations(result, asset)[0].metadata[name].value


def staged(env: FlowEnv) -> Path:
    return env.home / "data" / "companies" / DAY


def test_the_same_bytes_again_reuse_the_staged_extract_and_transform(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, companies_csv(*GOOD, BAD))
    first = flow_env.run(DAY)
    assert first.success
    assert not reused(first, "companies_extract", "reused_staged_extract")
    assert not reused(first, "companies_transform", "reused_staged_output")
    errors = flow_env.error_file(DAY, "transform").read_bytes()
    made = {
        name: staged_tags(staged(flow_env) / name)[MADE_TAG]
        for name in ("extract.parquet", "transform.parquet")
    }
    table = flow_env.query("select external_id, name, parent_account_id is not null from accounts order by 1")
    flow_env.error_file(DAY, "transform").unlink()

    flow_env.put(FILE, companies_csv(*GOOD, BAD))  # the ERP sends the very same bytes again
    again = flow_env.run(DAY)
    assert again.success
    assert reused(again, "companies_extract", "reused_staged_extract")
    assert reused(again, "companies_transform", "reused_staged_output")
    # nothing written again, and everything reported as a full run reports it
    assert {name: staged_tags(staged(flow_env) / name)[MADE_TAG] for name in made} == made
    assert flow_env.error_file(DAY, "transform").read_bytes() == errors  # the catcher still writes it
    transform = materializations(again, "companies_transform")[0].metadata
    assert (transform["rows_in"].value, transform["rows_out"].value, transform["rejected"].value) == (3, 2, 1)
    load = materializations(again, "companies_load")[0].metadata
    assert (load["unchanged"].value, load["looked_up_in"].value) == (2, "table snapshot")
    # three rows: too few to pay a read-back of the links snapshot, the server's joins answer
    assert materializations(again, "companies_link")[0].metadata["looked_up_in"].value == "server"
    assert (
        flow_env.query("select external_id, name, parent_account_id is not null from accounts order by 1")
        == table
    )

    # bytes of the same size that differ: parsed and mapped again, and loaded
    flow_env.put(FILE, companies_csv(GOOD[0].replace("Rossi", "Russo"), GOOD[1], BAD))
    changed = flow_env.run(DAY)
    assert changed.success
    assert not reused(changed, "companies_extract", "reused_staged_extract")
    assert not reused(changed, "companies_transform", "reused_staged_output")
    assert flow_env.query("select name from accounts where external_id = 'C1'") == [("Russo S.p.A.",)]


def test_transform_maps_again_for_another_version_or_another_write_of_its_input(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, companies_csv(*GOOD, BAD))
    assert flow_env.run(DAY).success
    stage, flow = staged(flow_env), FLOW
    extract = stage / "extract.parquet"
    output = staged_tags(stage / "transform.parquet")[MADE_TAG]

    assert transform_stage(flow, extract, stage).reused  # same input, same version

    stricter = flow.model_copy(deep=True)
    stricter.map["city"].pattern = "^R"  # a rule of the map: another version of transform
    other = transform_stage(stricter, extract, stage)
    assert not other.reused and (other.good_rows, other.rejected_rows) == (1, 2)
    assert staged_tags(stage / "transform.parquet")[MADE_TAG] != output
    assert not transform_stage(flow, extract, stage).reused  # and back: made by the other version

    # the same rows written again (a resubmission, another extract): another input
    pl.read_parquet(extract).write_parquet(extract)
    rewritten = transform_stage(flow, extract, stage)
    assert not rewritten.reused and (rewritten.good_rows, rewritten.rejected_rows) == (2, 1)
    assert not transform_stage(flow, extract, stage).reused  # an untagged input is never reused

    # a stray output of another run beside the others: computed again, never mixed
    flow_env.put(FILE, companies_csv(*GOOD, BAD, "C4;IT00000000004;Bruni;;;;IT;;;;;;;14/01/2026 10:00:00"))
    assert flow_env.run(DAY).success
    assert transform_stage(flow, extract, stage).reused
    (stage / "transform_collapsed.parquet").unlink()
    pl.DataFrame(schema={"_line": pl.Int64, "_kept_line": pl.Int64}).write_parquet(
        stage / "transform_collapsed.parquet"
    )
    assert not transform_stage(flow, extract, stage).reused
