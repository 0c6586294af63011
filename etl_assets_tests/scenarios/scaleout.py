"""Companies partitions through the Celery executor on several workers: the scenario of
``test_flows/test_scaleout.py`` and of ``benchmarks/scaleout.py``.

Real RabbitMQ on loopback (a queue of the scenario's own, so no other worker takes its tasks),
Dagster's storage and the target in PostgreSQL, ``etl-assets worker`` processes (one task at a
time each), and a run per partition: ``dagster asset materialize --partition P`` under
``etl-assets exec``, ``at_once`` of them side by side. A run is one op, the flow's four steps,
so one Celery task: partitions spread over the workers as runs. With ``kill``, the first worker
is SIGKILLed (its whole process group: the Celery parent and its pool child) while it runs its
second task; the broker gives that task to another worker (late acknowledgement).

What happened is read afterwards from Dagster's event log (which worker ran each step, when
each step was sent, taken, finished), the workers' logs and the target's tables.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

import psycopg

from etl_assets.orchestration.executor import op_placement
from etl_assets.settings import encrypt
from etl_assets.settings.models import ExecutorSettings
from etl_assets_tests.scenarios.backfill_load import (
    Scenario,
    scenario_env,
    target_state,
    write_companies_files,
)
from etl_assets_tests.scenarios.expected import Expected, expected_from_files
from etl_assets_tests.test_flows.test_cli_runs import DAGSTER, ETL_ASSETS, ROOT

POOL = op_placement("celery", "companies")["pool"]  # the companies op's pool, as the factory names it
POOL_LIMIT = str(ExecutorSettings().connections_per_flow)  # what dagster.yaml's default limit gives it
STEP_START = "- STEP_START -"  # Dagster's log line of a step starting, in the worker's log
RECEIVED = re.compile(r"Task execute_plan\[([0-9a-f-]+)\] received")
SUCCEEDED = re.compile(r"Task execute_plan\[([0-9a-f-]+)\] succeeded")
# the engine event's metadata: {"entry_data": {... "text": "<name>@<host>"}, "label": "Celery worker"}
WORKER_OF_STEP = re.compile(r'"text": "([^"@]+)@[^"]*"\}, "label": "Celery worker"')
# the run's start and end as the event log names them (the pipeline names of old)
RUN_EVENTS = {
    "PIPELINE_START": "RUN_START",
    "PIPELINE_SUCCESS": "RUN_SUCCESS",
    "PIPELINE_FAILURE": "RUN_FAILURE",
}


@dataclass(frozen=True)
class ScaleOut:
    """`partitions` companies days of `rows` rows on `workers` workers, `at_once` runs started
    side by side; `kill`: SIGKILL the first worker during its second task."""

    partitions: int = 10
    workers: int = 2
    rows: int = 40
    at_once: int = 4
    kill: bool = False
    timeout_s: float = 240.0


@dataclass
class RunTimes:
    """One run's moments (epoch seconds): its process started, Dagster's run started, its step
    was sent to the queue, taken by a worker, started and finished there, the run ended, the
    process exited."""

    partition: str
    spawned: float
    log: Path
    exited: float = 0.0
    returncode: int | None = None
    run_id: str = ""
    status: str = ""
    worker: str = ""
    takers: list[str] = field(default_factory=list)  # the workers that took its step, in order
    moments: dict[str, float] = field(default_factory=dict)

    def span(self, first: str, last: str) -> float | None:
        if first in self.moments and last in self.moments:
            return self.moments[last] - self.moments[first]
        return None


@dataclass
class Outcome:
    scenario: ScaleOut
    partitions: list[str]
    wall_s: float
    runs: list[RunTimes]
    steps_per_worker: Counter[str]  # "Executing steps ... in celery worker" events per worker
    loads: Counter[str]  # companies_load materializations per partition
    partition_loads: int  # companies rows of etl_partition_loads
    rows: tuple[int, int]  # count(*), count(distinct external_id) of accounts
    keys: set[str]
    expected: Expected
    worker_logs: dict[str, str]
    killed: str | None = None

    @property
    def landed(self) -> int:
        return sum(1 for p in self.partitions if self.loads[p] >= 1)

    @property
    def doubled(self) -> int:
        """Partitions whose load step ran more than once (a redelivered task loading again)."""
        return sum(1 for p in self.partitions if self.loads[p] > 1)

    def phase(self, first: str, last: str) -> float | None:
        spans = [s for r in self.runs if (s := r.span(first, last)) is not None]
        return median(spans) if spans else None

    def describe(self) -> str:
        lines = [f"wall {self.wall_s:.1f} s, workers {dict(self.steps_per_worker)}, killed {self.killed}"]
        for run in self.runs:
            lines.append(
                f"  {run.partition} rc={run.returncode} {run.status} worker={run.worker} {run.run_id[:8]}"
            )
        lines += [
            f"--- run {run.partition}\n{run.log.read_text(errors='replace')[-3000:]}"
            for run in self.runs
            if run.returncode != 0 and run.log.is_file()
        ]
        lines += [f"--- {name}\n{text[-2000:]}" for name, text in self.worker_logs.items()]
        return "\n".join(lines)


def scaleout_env(base: Path, postgres, tag: str) -> tuple[dict[str, str], str, str]:
    """The scenario's environment: target and Dagster storage databases on `postgres`, the
    Celery executor on the queue ``etl_io_<tag>``, ``dagster.yaml`` written by ``etl-assets
    dagster-yaml``. Returns the processes' environment, the target and the instance databases."""
    env, database = scenario_env(base, postgres)
    instance_db = f"dagster_{tag}"
    postgres.create_database(instance_db)
    token = encrypt(postgres.password, Path(env["ETL_SECRET_KEY_FILE"]).read_bytes().strip())
    settings = Path(env["ETL_SETTINGS"])
    settings.write_text(
        settings.read_text()
        + f"""  instance:
    storage: postgresql
    postgres: {{host: {postgres.host}, port: {postgres.port}, database: {instance_db}, user: {postgres.user},
      password: '{token}'}}
  executor:
    kind: celery
    broker: {{host: 127.0.0.1, port: 5672, user: guest}}
    queues: {{io: etl_io_{tag}, cpu: etl_cpu_{tag}}}
"""
    )
    env = {**os.environ, **env, "DAGSTER_HOME": str(base / "dagster_home"), "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [ETL_ASSETS, "dagster-yaml", "-e", "test", "--dagster-home", env["DAGSTER_HOME"]],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    # The flows' pools made once, as an operator does after the first dagster-yaml: Dagster 1.13
    # creates a pool's row on its first claim, and two runs claiming a new pool at once race on
    # that insert (UniqueViolation on concurrency_limits, the run fails).
    made = subprocess.run(
        [ETL_ASSETS, "pools", "-e", "test"], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    assert f"{POOL}: {POOL_LIMIT} slots" in made.stdout, made.stdout + made.stderr
    return env, database, instance_db


class Workers:
    """``etl-assets worker`` processes, each in a session of its own (so a SIGKILL of its group
    takes the Celery parent and its pool child together), logging to a file each."""

    def __init__(self, count: int, tag: str, env: dict[str, str], folder: Path) -> None:
        self.names = [f"w{n + 1}-{tag}" for n in range(count)]
        self.logs = {name: folder / f"{name}.log" for name in self.names}
        self.processes: dict[str, subprocess.Popen] = {}
        for name in self.names:
            with self.logs[name].open("w") as out:
                self.processes[name] = subprocess.Popen(
                    [
                        ETL_ASSETS,
                        "worker",
                        "-e",
                        "test",
                        "--queue",
                        "io",
                        "--name",
                        name,
                        "--concurrency",
                        "1",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def text(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for name, process in self.processes.items():
            while "ready." not in self.text(name):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} did not start:\n{self.text(name)[-3000:]}")
                time.sleep(0.3)

    def kill(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def materialize(partition: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A run of the companies group for one partition, as an operator starts one."""
    with log.open("w") as out:
        return subprocess.Popen(
            [ETL_ASSETS, "exec", "-e", "test", "--", DAGSTER, "asset", "materialize", "-m", "etl_assets"]
            + ["--select", "group:companies", "--partition", partition],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _kill_moment(workers: Workers) -> bool:
    """The first worker has finished a task and started the step of another: it is inside its
    second (the extract under way, the load not yet committed)."""
    text = workers.text(workers.names[0])
    done = len(SUCCEEDED.findall(text))
    return done >= 1 and len(RECEIVED.findall(text)) > done and text.count(STEP_START) > done


def run_scaleout(scenario: ScaleOut, base: Path, postgres) -> Outcome:
    """Run the scenario in `base` (a fresh folder) against `postgres` (a ``PostgresServer``)."""
    tag = secrets.token_hex(4)
    env, database, instance_db = scaleout_env(base, postgres, tag)
    days = Scenario(days=scenario.partitions, rows=scenario.rows, resend=0)
    files = write_companies_files(Path(env["ETL_HOME"]) / "import", days)
    partitions = days.keys
    logs = base / "logs"
    logs.mkdir()
    workers = Workers(scenario.workers, tag, env, logs)
    killed = None
    try:
        workers.wait_ready()
        pending, running, runs = list(partitions), {}, []
        start = time.time()
        deadline = time.monotonic() + scenario.timeout_s
        while pending or running:
            while pending and len(running) < scenario.at_once:
                partition = pending.pop(0)
                runs.append(RunTimes(partition, time.time(), logs / f"run_{partition}.log"))
                running[partition] = (runs[-1], materialize(partition, env, runs[-1].log))
            for partition, (times, process) in list(running.items()):
                if process.poll() is not None:
                    times.exited, times.returncode = time.time(), process.returncode
                    del running[partition]
            if scenario.kill and killed is None and _kill_moment(workers):
                killed = workers.names[0]
                workers.kill(killed)
            if time.monotonic() > deadline:
                for _, process in running.values():
                    process.kill()
                raise TimeoutError(f"runs still going after {scenario.timeout_s:.0f} s: {sorted(running)}")
            time.sleep(0.2)
        wall = time.time() - start
    finally:
        workers.stop()
    steps_per_worker, loads = read_event_log(postgres.dsn(instance_db), runs)
    rows, partition_loads, names = target_state(postgres.dsn(database))
    return Outcome(
        scenario=scenario,
        partitions=partitions,
        wall_s=wall,
        runs=runs,
        steps_per_worker=steps_per_worker,
        loads=loads,
        partition_loads=partition_loads,
        rows=rows,
        keys=set(names),
        expected=expected_from_files(files),
        worker_logs={name: workers.text(name) for name in workers.names},
        killed=killed,
    )


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()  # Dagster stores UTC without a zone


def read_event_log(dsn: str, runs: list[RunTimes]) -> tuple[Counter[str], Counter[str]]:
    """Fill each run's id, status, worker and moments from Dagster's storage; the steps each
    worker started and the companies_load materializations per partition."""
    with psycopg.connect(dsn) as conn:
        by_partition = {
            tags: (run_id, status)
            for run_id, status, tags in conn.execute(
                "select r.run_id, r.status, t.value from runs r join run_tags t on t.run_id = r.run_id "
                "where t.key = 'dagster/partition'"
            ).fetchall()
        }
        events = conn.execute(
            "select run_id, dagster_event_type, event, timestamp from event_logs "
            "where dagster_event_type is not null order by id"
        ).fetchall()
        loads = Counter(
            dict(
                conn.execute(
                    "select partition, count(*) from event_logs where dagster_event_type = "
                    "'ASSET_MATERIALIZATION' and asset_key like %s group by partition",
                    ("%companies_load%",),
                ).fetchall()
            )
        )
    per_run: dict[str, RunTimes] = {}
    for run in runs:
        run.run_id, run.status = by_partition.get(run.partition, ("", ""))
        per_run[run.run_id] = run
    steps_per_worker: Counter[str] = Counter()
    for run_id, kind, text, timestamp in events:
        run = per_run.get(run_id)
        if run is None:
            continue
        moment = _epoch(timestamp)
        if kind == "ENGINE_EVENT" and "Submitting celery task" in text:
            run.moments.setdefault("sent", moment)
        elif kind == "ENGINE_EVENT" and "in celery worker" in text:
            worker = WORKER_OF_STEP.search(text)
            name = worker.group(1) if worker else "?"
            steps_per_worker[name] += 1
            run.takers.append(name)
            run.worker = name  # the last worker that took it: the one that finished it
            run.moments["taken"] = moment
        elif kind in RUN_EVENTS or kind in {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE"}:
            run.moments[RUN_EVENTS.get(kind, kind)] = moment
    for run in runs:
        run.moments["spawned"], run.moments["exited"] = run.spawned, run.exited
    return steps_per_worker, loads
