"""A flow's ``hooks:``: Python functions called at stage boundaries with a frozen context,
through real Dagster runs on a real PostgreSQL. ``on_load_commit`` runs once per commit, never
again when the same partition runs again (a new run, a retry, Dagster's re-execution from
failure or of all steps); a failing hook fails its partition's step only,
named in the line; a hook that does not resolve is refused at its declaration's line."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from etl_assets.definitions import build_definitions
from etl_assets.engine.hooks import ON_LOAD_COMMIT
from etl_assets.model.declarations import DeclarationError
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import FlowEnv, companies_csv
from etl_assets_tests.test_flows.test_companies import GOOD
from etl_assets_tests.test_orchestration.test_flow_dirs import client_flow

HOOKS = Path(__file__).with_name("hook_calls.py")
DAY, NEXT = "2026-01-15", "2026-01-16"
EVERY_HOOK = {
    "pre_extract": "hook_calls:record",
    "post_transform": "hook_calls.record",  # module.function names it too
    "on_load_commit": "hook_calls:record",
    "on_failure": "hook_calls:record",
}


@pytest.fixture(autouse=True)
def forget_hooks() -> Iterator[None]:
    """The hook module is imported from this test's flow folder: the next test has its own."""
    yield
    sys.modules.pop("hook_calls", None)


def hooked_flow(folder: Path, hooks: dict[str, str], source: str = "/outbound/companies") -> Path:
    """The companies sample as client flow ``hooked`` (table ``hooked``), with ``hooks`` and
    the hook module beside it."""
    path = client_flow(folder, "hooked")
    text = path.read_text(encoding="utf-8").replace("folder: /outbound/companies", f"folder: {source}")
    text += "  hooks:\n" + "".join(f"    {name}: {target}\n" for name, target in hooks.items())
    path.write_text(text, encoding="utf-8")
    shutil.copy(HOOKS, path.with_name(HOOKS.name))
    return path


@pytest.fixture
def hooked(flow_env: FlowEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Client flow ``hooked`` reading the test's remote folder; the calls' log."""
    hooked_flow(flow_env.home / "flows", EVERY_HOOK, source=flow_env.folder)
    log = flow_env.home / "hook_calls.jsonl"
    monkeypatch.setenv("HOOK_LOG", str(log))
    return log


def calls(log: Path, hook: str | None = None) -> list[dict]:
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [e for e in entries if hook is None or e["hook"] == hook]


def test_each_hook_gets_its_context_and_on_load_commit_runs_once_per_commit(
    flow_env: FlowEnv, hooked: Path
) -> None:
    data = companies_csv(*GOOD)
    flow_env.put("companies_20260115.csv", data)
    result = flow_env.run(DAY, job="hooked_job")
    assert result.success
    run_id = result.run_id
    assert [c["hook"] for c in calls(hooked)] == ["pre_extract", "post_transform", "on_load_commit"]
    pre, post, commit = calls(hooked)
    assert pre == {
        "hook": "pre_extract",
        "flow": "hooked",
        "partition_key": DAY,
        "run_id": run_id,
        "staged_file": None,
        "counts": None,
        "commit_id": None,
        "step": None,
        "error": None,
    }
    staged = flow_env.home / "data" / "hooked" / DAY
    assert (post["staged_file"], post["staged_rows"]) == (str(staged / "transform.parquet"), 3)
    assert commit["staged_file"] == str(staged / "load.parquet")
    assert commit["counts"] == {"inserted": 3, "updated": 0, "unchanged": 0, "deleted": 0, "rejected": 0}
    assert commit["commit_id"].startswith(hashlib.sha256(data).hexdigest() + ":")
    assert flow_env.query("select count(*) from hooked") == [(3,)]
    assert flow_env.query("select hook, commit_id, state from etl_hook_runs") == [
        ("on_load_commit", commit["commit_id"], "done")
    ]

    # the same partition again: same delivery, same code, rows unchanged: the same commit
    again = flow_env.run(DAY, job="hooked_job")
    assert again.success and again.run_id != run_id
    assert len(calls(hooked, "on_load_commit")) == 1
    assert [c["run_id"] for c in calls(hooked, "pre_extract")] == [run_id, again.run_id]

    # a new delivery of the partition is a new commit: told once, with its counts
    flow_env.put("companies_20260115.csv", companies_csv(*GOOD, GOOD[0].replace("Holding", "Gruppo")))
    assert flow_env.run(DAY, job="hooked_job").success
    assert flow_env.run(DAY, job="hooked_job").success
    told = calls(hooked, "on_load_commit")
    assert len(told) == 2 and told[1]["counts"]["unchanged"] == 2 and told[1]["counts"]["updated"] == 1
    assert calls(hooked, "on_failure") == []


def test_a_failing_hook_fails_only_its_partition_and_is_called_again_by_the_retry(
    flow_env: FlowEnv, hooked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow_env.put("companies_20260115.csv", companies_csv(*GOOD))
    flow_env.put("companies_20260116.csv", companies_csv(*GOOD[:1]))
    monkeypatch.setenv("HOOK_FAIL", f"on_load_commit:{DAY}")
    result = flow_env.run_range(DAY, NEXT, job="hooked_job")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    line = (
        f"{DAY}: load: hook on_load_commit (hook_calls:record) failed: "
        f"RuntimeError: notification service down for {DAY}"
    )
    assert line in failure.step_failure_data.error.message
    assert "1 of 2 partitions failed (1 landed)" in failure.step_failure_data.error.message
    # the load committed (the hook runs after the commit); the other partition went on
    assert flow_env.query("select count(*) from hooked") == [(3,)]
    assert [c["partition_key"] for c in calls(flow_env.home / "hook_calls.jsonl", "on_load_commit")] == [NEXT]
    (told,) = calls(hooked, "on_failure")
    assert (told["partition_key"], told["step"], f"{DAY}: {told['error']}") == (DAY, "load", line)

    monkeypatch.delenv("HOOK_FAIL")
    assert flow_env.run_range(
        DAY, NEXT, job="hooked_job"
    ).success  # the retry: the hook that raised, called again
    assert [c["partition_key"] for c in calls(hooked, "on_load_commit")] == [NEXT, DAY]
    assert flow_env.run_range(DAY, NEXT, job="hooked_job").success  # and never again
    assert len(calls(hooked, "on_load_commit")) == 2


def test_on_failure_is_told_the_step_and_its_line_and_its_own_fault_masks_nothing(
    flow_env: FlowEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked_flow(flow_env.home / "flows", {"on_failure": "hook_calls:record"}, source=flow_env.folder)
    monkeypatch.setenv("HOOK_LOG", str(flow_env.home / "hook_calls.jsonl"))
    result = flow_env.run(DAY, job="hooked_job")  # no file delivered
    assert not result.success
    (told,) = calls(flow_env.home / "hook_calls.jsonl", "on_failure")
    assert (told["step"], told["partition_key"]) == ("extract", DAY)
    assert "companies_20260115.csv" in told["error"]

    sys.modules.pop("hook_calls", None)
    path = flow_env.home / "flows" / "hooked" / "defs.yaml"
    path.write_text(path.read_text().replace("hook_calls:record", "hook_calls:broken"))
    result = flow_env.run(DAY, job="hooked_job")
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "companies_20260115.csv" in failure.step_failure_data.error.message
    assert "hook on_failure" not in failure.step_failure_data.error.message


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "hook_calls:missing",
            "hook on_load_commit 'hook_calls:missing': missing is not a function of hook_calls",
        ),
        (
            "no_such_module:notify",
            "hook on_load_commit 'no_such_module:notify': module no_such_module cannot",
        ),
        (
            "hook_calls:two_arguments",
            "hook on_load_commit (hook_calls:two_arguments) is called as function(context)",
        ),
    ],
)
def test_a_hook_that_does_not_resolve_is_refused_at_its_line(
    isolated_env: Path, write_settings, monkeypatch: pytest.MonkeyPatch, target: str, message: str
) -> None:
    write_settings("dev: {}\n")
    monkeypatch.setenv("ETL_ENV", "dev")
    path = hooked_flow(isolated_env / "flows", {"pre_extract": "hook_calls:record", "on_load_commit": target})
    line = next(n for n, x in enumerate(path.read_text().splitlines(), 1) if "on_load_commit" in x)
    with pytest.raises(DeclarationError) as caught:
        build_definitions(load_settings("dev"))
    assert str(caught.value).startswith(f"{path}:{line}: hooks.on_load_commit: Value error, {message}")


def test_a_hook_claimed_by_a_process_that_died_is_not_called_again(
    flow_env: FlowEnv, hooked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most once: a claim (``running``) never settled is left to an operator."""
    flow_env.put("companies_20260115.csv", companies_csv(*GOOD))
    monkeypatch.setenv("HOOK_FAIL", f"on_load_commit:{DAY}")
    assert not flow_env.run(DAY, job="hooked_job").success
    ((state, error),) = flow_env.query("select state, error from etl_hook_runs")
    assert state == "pending" and error.startswith(
        "hook on_load_commit (hook_calls:record) failed: RuntimeError"
    )
    # as a process that died after claiming it and before the hook returned leaves it
    with psycopg.connect(flow_env.postgres.dsn(flow_env.database)) as conn:
        conn.execute("update etl_hook_runs set state = 'running'")
    monkeypatch.delenv("HOOK_FAIL")
    assert flow_env.run(DAY, job="hooked_job").success
    assert calls(hooked, "on_load_commit") == []
    assert flow_env.query("select state from etl_hook_runs") == [("running",)]


def committed(log: Path) -> list[tuple[str, str]]:
    """(partition, commit id) of each ``on_load_commit`` call that returned, in order."""
    return [(c["partition_key"], c["commit_id"]) for c in calls(log, ON_LOAD_COMMIT)]


def test_reexecute_from_failure_links_the_failed_partition_and_calls_no_hook_again(
    flow_env: FlowEnv, hooked: Path
) -> None:
    """Dagster's re-execution from failure of a ranged run whose link failed for NEXT (a folder
    where its response goes) after both loads committed: NEXT links, nothing loads again."""
    flow_env.put("companies_20260115.csv", companies_csv(*GOOD))
    flow_env.put("companies_20260116.csv", companies_csv(*GOOD[:1]))
    blocker = flow_env.home / "data" / "hooked" / NEXT / "link.parquet"
    (blocker / "not-a-file").mkdir(parents=True)
    failed = flow_env.run_range(DAY, NEXT, job="hooked_job")
    assert not failed.success
    assert ("hooked_link", NEXT) not in flow_env.stepped(failed.run_id)
    assert [key for key, _ in committed(hooked)] == [DAY, NEXT]  # both loads committed

    shutil.rmtree(blocker)
    result = flow_env.reexecute(failed.run_id, job="hooked_job")
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert flow_env.stepped(result.run_id) == {("hooked_link", NEXT)}
    assert [key for key, _ in committed(hooked)] == [DAY, NEXT]
    assert flow_env.query("select partition_key, state from etl_hook_runs order by 1") == [
        (DAY, "done"),
        (NEXT, "done"),
    ]


def test_reexecute_all_loads_again_and_calls_the_hook_once_per_commit_not_once_ever(
    flow_env: FlowEnv, hooked: Path
) -> None:
    flow_env.put("companies_20260115.csv", companies_csv(*GOOD))
    flow_env.put("companies_20260116.csv", companies_csv(*GOOD[:1]))
    first = flow_env.run_range(DAY, NEXT, job="hooked_job")
    assert first.success
    told = committed(hooked)
    assert [key for key, _ in told] == [DAY, NEXT]

    # every step again, the loads too, on the same deliveries with the same code: same commits
    every = {(f"hooked_{s}", key) for s in ("extract", "transform", "load", "link") for key in (DAY, NEXT)}
    again = flow_env.reexecute(first.run_id, job="hooked_job", from_failure=False)
    assert again.success, [e.message for e in again.all_events if e.is_failure]
    assert flow_env.stepped(again.run_id) == every
    assert committed(hooked) == told

    # a new delivery for DAY is a new commit of DAY (NEXT's is the one it was)
    flow_env.put("companies_20260115.csv", companies_csv(*GOOD, GOOD[0].replace("Holding", "Gruppo")))
    newer = flow_env.reexecute(again.run_id, job="hooked_job", from_failure=False)
    assert newer.success, [e.message for e in newer.all_events if e.is_failure]
    assert flow_env.stepped(newer.run_id) == every
    (new_commit,) = [entry for entry in committed(hooked) if entry not in told]
    assert new_commit[0] == DAY and new_commit[1] != told[0][1]
    assert len(committed(hooked)) == 3
    assert calls(hooked, ON_LOAD_COMMIT)[-1]["run_id"] == newer.run_id


def test_a_hook_that_failed_is_called_again_by_the_reexecution_from_failure_and_once_only(
    flow_env: FlowEnv, hooked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow_env.put("companies_20260115.csv", companies_csv(*GOOD))
    flow_env.put("companies_20260116.csv", companies_csv(*GOOD[:1]))
    monkeypatch.setenv("HOOK_FAIL", f"on_load_commit:{DAY}")
    failed = flow_env.run_range(DAY, NEXT, job="hooked_job")
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert f"{DAY}: load: hook on_load_commit (hook_calls:record) failed" in (
        failure.step_failure_data.error.message
    )
    assert ("hooked_load", DAY) not in flow_env.stepped(failed.run_id)
    assert [key for key, _ in committed(hooked)] == [NEXT]

    monkeypatch.delenv("HOOK_FAIL")  # the notification service back
    result = flow_env.reexecute(failed.run_id, job="hooked_job")
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert flow_env.stepped(result.run_id) == {("hooked_load", DAY), ("hooked_link", DAY)}
    ((_, commit),) = [entry for entry in committed(hooked) if entry[0] == DAY]
    assert calls(hooked, ON_LOAD_COMMIT)[-1]["run_id"] == result.run_id
    assert flow_env.query(
        "select commit_id, state, error from etl_hook_runs where partition_key = '2026-01-15'"
    ) == [(commit, "done", None)]
    # and never again: the re-execution of the re-execution has nothing left to do
    assert flow_env.reexecute(result.run_id, job="hooked_job", from_failure=False).success
    assert [key for key, _ in committed(hooked)] == [NEXT, DAY]
