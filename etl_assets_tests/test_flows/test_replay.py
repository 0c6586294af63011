"""A partition run again from a step on (``etl-assets replay``) and a failed run re-executed
"from failure": both start from the staged files, never fetch the source again, and leave the
target as a full run does."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from etl_assets.definitions import build_definitions
from etl_assets.orchestration.replay import REPLAY_TAG, ReplayRefused, replay
from etl_assets.resources import build_resources
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv
from etl_assets_tests.test_flows.test_cli_runs import ETL_ASSETS, cli

DAY, NEXT = "2026-01-15", "2026-01-16"
ROWS = [
    "C1;IT00000000001;Holding Rossi S.p.A.;;Milano;;IT;;;;1.000,00;12;;14/01/2026 10:00:00",
    "C2;IT00000000002;Rossi Caffè S.r.l.;;Forlì;;IT;;;IT00000000001;;;;14/01/2026 11:00:00",
    "C3;IT00000000003;Data Errata S.r.l.;;;;IT;;;;;;31/02/2019;14/01/2026 09:00:00",  # rejected
]
NEXT_ROWS = ["C4;IT00000000004;Bianchi S.n.c.;;Cantù;;IT;;;IT00000000002;;;;15/01/2026 09:00:00"]
TARGET = (
    "select a.external_id, a.vat_code, a.name, a.city, a.revenue::text, a.employees, p.external_id "
    "from accounts a left join accounts p on p.id = a.parent_account_id order by a.external_id"
)


def replayed(flow_env: FlowEnv, step: str) -> dg.ExecuteInProcessResult | str:
    """``replay`` of DAY from ``step`` in the test's instance; the run's result."""
    with flow_env.defs_state():
        settings = load_settings("test")
        job = build_definitions(settings).resolve_job_def("companies_job")
        done = replay(job, "companies", DAY, step, flow_env.instance, build_resources(settings)["folders"])
    return done.run_id if done.success else f"failed: {done.failure}"


@pytest.mark.parametrize(
    ("step", "spoil"),
    [
        ("transform", "delete from accounts"),
        ("load", "delete from accounts where external_id = 'C2'"),  # a re-load compares row hashes
        ("link", "update accounts set parent_account_id = null"),
    ],
)
def test_replay_from_a_step_gives_the_target_of_a_full_run_without_fetching(
    flow_env: FlowEnv, step: str, spoil: str
) -> None:
    delivered = flow_env.sshd.put_file(f"{flow_env.folder}/companies_20260115.csv", companies_csv(*ROWS))
    assert flow_env.run(DAY).success
    full = flow_env.query(TARGET)
    assert [r[0] for r in full] == ["C1", "C2"] and full[1][-1] == "C1"
    delivered.unlink()  # the source is gone: a replay must not need it
    flow_env.query(spoil + " returning 1")

    run_id = replayed(flow_env, step)
    assert not run_id.startswith("failed"), run_id
    assert flow_env.query(TARGET) == full
    later = ("transform", "load", "link")[("transform", "load", "link").index(step) :]
    assert flow_env.stepped(run_id) == {(f"companies_{s}", DAY) for s in later}  # no extract
    run = flow_env.instance.get_run_by_id(run_id)
    assert run is not None and run.tags[REPLAY_TAG] == step


def test_replay_without_the_staged_file_is_refused_and_names_it(flow_env: FlowEnv) -> None:
    flow_env.put("companies_20260115.csv", companies_csv(*ROWS))
    assert flow_env.run(DAY).success
    staged = flow_env.home / "data" / "companies" / DAY / "load.parquet"
    staged.unlink()
    with pytest.raises(ReplayRefused, match=r"load\.parquet; run the partition in full first"):
        replayed(flow_env, "link")
    assert not replayed(flow_env, "load").startswith("failed")  # load reads transform's, not load's

    (flow_env.home / "data" / "companies" / DAY / "extract.parquet").unlink()
    run = cli([ETL_ASSETS, "replay", "companies", DAY, "--from", "transform"], flow_env.home)
    assert run.returncode == 1, run.stdout + run.stderr[-2000:]
    refusal = [line for line in run.stderr.splitlines() if "cannot replay" in line]
    assert len(refusal) == 1 and "extract.parquet" in refusal[0] and "in full first" in refusal[0]

    usage = cli([ETL_ASSETS, "replay", "companies", "15/01/2026", "--from", "load"], flow_env.home)
    assert usage.returncode == 2 and "keys look like" in usage.stderr


def test_reexecute_from_failure_starts_each_partition_at_its_failed_step(flow_env: FlowEnv) -> None:
    """A ranged run whose link fails for NEXT (its staged response cannot be written) while DAY
    lands; the cause removed, Dagster's re-execution from failure links NEXT alone."""
    sources = [
        flow_env.sshd.put_file(f"{flow_env.folder}/companies_20260115.csv", companies_csv(*ROWS)),
        flow_env.sshd.put_file(f"{flow_env.folder}/companies_20260116.csv", companies_csv(*NEXT_ROWS)),
    ]
    blocker = flow_env.home / "data" / "companies" / NEXT / "link.parquet"
    (blocker / "not-a-file").mkdir(parents=True)  # a folder where link writes its response
    failed = flow_env.run_range(DAY, NEXT)
    assert not failed.success
    landed = {(s, DAY) for s in ("extract", "transform", "load", "link")}
    landed |= {(s, NEXT) for s in ("extract", "transform", "load")}
    assert flow_env.stepped(failed.run_id) == {(f"companies_{s}", key) for s, key in landed}

    shutil.rmtree(blocker)  # the cause fixed; the sources gone (extract must not run again)
    for source in sources:
        source.unlink()
    result = flow_env.reexecute(failed.run_id)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    # "re-execute all" is every step again: the extracts look for their (removed) files
    again = flow_env.reexecute(failed.run_id, from_failure=False)
    assert not again.success and flow_env.stepped(again.run_id) == set()
    assert flow_env.stepped(result.run_id) == {("companies_link", NEXT)}
    assert flow_env.query(TARGET) == [
        ("C1", "IT00000000001", "Holding Rossi S.p.A.", "Milano", "1000.00", 12, None),
        ("C2", "IT00000000002", "Rossi Caffè S.r.l.", "Forlì", None, None, "C1"),
        ("C4", "IT00000000004", "Bianchi S.n.c.", "Cantù", None, None, "C2"),
    ]


def test_replay_after_a_blocking_check_fails_with_its_reason(flow_env: FlowEnv) -> None:
    """A transform its check blocked: a replay from load would load what the check refused."""
    bad = [f"D{i};IT1000000000{i};Ditta {i};;;;IT;;;;;;32/01/2020;14/01/2026 09:00:00" for i in range(11)]
    flow_env.put("companies_20260115.csv", companies_csv(ROWS[0], *bad))
    assert not flow_env.run(DAY).success
    run = cli([ETL_ASSETS, "replay", "companies", DAY, "--from", "load"], flow_env.home)
    assert run.returncode == 1, run.stdout + run.stderr[-2000:]
    assert f"replay of companies {DAY} from load: FAILED: load: not run, transform check rejected_rows" in (
        run.stdout
    )
    assert flow_env.query("select count(*) from pg_tables where tablename = 'accounts'") == [(0,)]
