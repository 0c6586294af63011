"""Scale-out on Dagster's own machinery (issue 24): ten companies partitions, a run each,
through the Celery executor on two ``etl-assets worker`` processes, real RabbitMQ, Dagster's
storage and the target in PostgreSQL (``etl_assets_tests.scenarios.scaleout``).

The first worker is SIGKILLed while it runs its second task: the broker gives the task back
(late acknowledgement, reject on worker lost) and the other worker runs that step again."""

from __future__ import annotations

from pathlib import Path

from etl_assets_tests.scenarios.scaleout import ScaleOut, run_scaleout
from etl_assets_tests.services import PostgresServer


def test_ten_partitions_on_two_workers_one_killed_mid_run_land_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    outcome = run_scaleout(ScaleOut(partitions=10, workers=2, kill=True), tmp_path, postgres)
    report = outcome.describe()
    first, second = sorted(outcome.steps_per_worker)

    assert outcome.killed == first, report  # it was killed during its second task
    assert outcome.steps_per_worker[first] >= 2 and outcome.steps_per_worker[second] >= 1, report
    assert sum(outcome.steps_per_worker.values()) == 11, report  # ten runs, one step taken again
    assert [r.returncode for r in outcome.runs] == [0] * 10, report
    assert {r.status for r in outcome.runs} == {"SUCCESS"}, report
    # every partition landed once: its load recorded, its rows there, none twice
    assert outcome.landed == 10 and outcome.partition_loads == 10, report
    assert outcome.rows[0] == outcome.rows[1] == len(outcome.expected.keys_landing), report
    assert outcome.keys == outcome.expected.keys_landing, report
    assert outcome.doubled == 0, report  # no load step ran twice: the kill came before the load
    # the killed task's run: taken by the first worker, then by the survivor, which finished it
    assert [r.takers for r in outcome.runs if len(r.takers) > 1] == [[first, second]], report
