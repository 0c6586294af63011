"""Every delivery kept: a partition's file sent again with other bytes is kept beside the
first (raw and backup), loaded as a correction, and its run says what it added, changed and
left out; housekeeping deletes no delivery whose bytes are not backed up."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from etl_assets.definitions import build_definitions
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv, materializations

DAY = "2026-01-15"
FILE = "companies_20260115.csv"
ROWS = {
    key: f"{key};IT0000000000{n};Ditta {key} S.r.l.;;;;IT;;;;;;;14/01/2026 10:00:00"
    for n, key in enumerate(["C1", "C2", "C3", "C4", "C5"], start=1)
}
FIRST = companies_csv(ROWS["C1"], ROWS["C2"], ROWS["C3"], ROWS["C4"])
# C2 renamed, C3 and C4 left out, C5 new
SECOND = companies_csv(ROWS["C1"], ROWS["C2"].replace("Ditta C2", "Ditta C2 & Figli"), ROWS["C5"])


def kept_name(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()[:16]}_{FILE}"


def test_a_second_delivery_is_kept_beside_the_first_and_its_run_says_what_changed(
    flow_env: FlowEnv,
) -> None:
    flow_env.put(FILE, FIRST)
    assert flow_env.run(DAY).success
    flow_env.put(FILE, SECOND)
    second = flow_env.run(DAY)
    assert second.success

    raw = flow_env.home / "data" / "companies" / DAY / "raw"
    assert (raw / FILE).read_bytes() == SECOND
    assert (raw / "deliveries" / kept_name(FIRST)).read_bytes() == FIRST
    assert (raw / "deliveries" / kept_name(SECOND)).read_bytes() == SECOND
    backup = flow_env.home / "backup" / "companies" / "2026" / "01"  # the partition's month
    assert sorted(p.name for p in backup.iterdir()) == sorted([FILE, kept_name(SECOND)])
    assert (backup / FILE).read_bytes() == FIRST
    assert (backup / kept_name(SECOND)).read_bytes() == SECOND

    load = materializations(second, "companies_load")[0].metadata
    assert load["previous_delivery"].value == kept_name(FIRST)
    assert (load["delivery_added"].value, load["delivery_changed"].value) == (1, 1)
    assert load["delivery_missing"].value == 2
    preview = load["delivery_missing_preview"].value
    assert preview.splitlines()[2:] == ["| C3 | 4 |", "| C4 | 5 |"]  # key, its line in the first
    # missing rows stay (SPEC: a corrected file updates rows, it deletes none)
    assert flow_env.query("select external_id, name from accounts order by external_id") == [
        ("C1", "Ditta C1 S.r.l."),
        ("C2", "Ditta C2 & Figli S.r.l."),
        ("C3", "Ditta C3 S.r.l."),
        ("C4", "Ditta C4 S.r.l."),
        ("C5", "Ditta C5 S.r.l."),
    ]
    (message,) = flow_env.smtp.wait_for(1)  # nothing rejected, yet the operator is told
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"new delivery against {kept_name(FIRST)}: 1 rows added, 1 changed, 2 missing" in body
    assert "they stay in the target: C3, C4" in body

    # the same bytes again: nothing new to say, no e-mail, nothing kept twice
    third = flow_env.run(DAY)
    assert third.success
    assert "delivery_missing" not in materializations(third, "companies_load")[0].metadata
    time.sleep(1)
    assert len(flow_env.smtp.messages()) == 1
    assert len(list((raw / "deliveries").iterdir())) == 2
    assert len(list(backup.iterdir())) == 2


def test_a_delivery_staged_before_deliveries_were_kept_is_kept_when_replaced(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, FIRST)
    assert flow_env.run(DAY).success
    raw = flow_env.home / "data" / "companies" / DAY / "raw"
    for kept in (raw / "deliveries").iterdir():  # the layout of earlier releases
        kept.unlink()
    (raw / "deliveries").rmdir()
    flow_env.put(FILE, SECOND)
    assert flow_env.run(DAY).success
    assert (raw / "deliveries" / kept_name(FIRST)).read_bytes() == FIRST


def age_tree(root: Path, days: float) -> None:
    past = time.time() - days * 86_400
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def test_housekeeping_deletes_no_expired_delivery_that_is_not_backed_up(flow_env: FlowEnv) -> None:
    flow_env.put(FILE, FIRST)
    assert flow_env.run(DAY).success
    flow_env.put(FILE, SECOND)
    assert flow_env.run(DAY).success
    backup = flow_env.home / "backup" / "companies" / "2026" / "01"
    (backup / FILE).unlink()  # the first delivery's backup is lost
    age_tree(flow_env.home / "data", 40)  # staged data past its 30 days

    defs = build_definitions(load_settings("test"))
    result = defs.resolve_job_def("housekeeping").execute_in_process(instance=flow_env.instance)
    assert result.success
    summary = result.output_for_node("tidy_up")

    stage = flow_env.home / "data" / "companies" / DAY
    # the first delivery has no other copy: kept, and said; everything else expired went
    assert [p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file()] == [
        f"raw/deliveries/{kept_name(FIRST)}"
    ]
    assert summary["deliveries_kept_not_backed_up"] == 1
    assert (backup / kept_name(SECOND)).read_bytes() == SECOND  # backup past no retention: kept
    # the loaded, backed-up source left the SFTP folder
    folder = flow_env.sshd.root / flow_env.folder.lstrip("/")
    assert (folder / "processed" / FILE).read_bytes() == SECOND
