"""The real Dagster webserver and daemon on loopback, driven through GraphQL as the UI drives it.

Why not ``dagster dev`` / ``dg dev``: two plain processes (``dagster-webserver`` and
``dagster-daemon run``) are what production runs, and each can be stopped on its own terms.
Backfills are launched with the UI's own mutation (``launchPartitionBackfill``), so what the
daemon does with them (runs, queueing, the backfill's final status) is what an operator sees.

Usage::

    with DagsterServer(ROOT, dagster_home, {"ETL_ENV": "dev", "ETL_HOME": ...}) as dagster:
        backfill_id = dagster.launch_backfill(["2026-01-01", "2026-01-02"], ["companies_extract"])
        result = dagster.wait_backfill(backfill_id, timeout=120)
        dagster.partition_status("companies_extract")  # {"2026-01-01": "materialized", ...}
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from etl_assets_tests.services._net import HOST, _tail, free_port

# What the harness writes to DAGSTER_HOME/dagster.yaml when there is none: the instance the
# README's commands use (etl_assets/dagster.yaml: run queue, concurrency limits, run
# monitoring), polled more often here; `instance_config` is merged into it (nested dicts key
# by key; a value of None removes the key).
SHIPPED_INSTANCE = Path(__file__).resolve().parents[2] / "etl_assets" / "dagster.yaml"
DEFAULT_INSTANCE: dict[str, Any] = {
    **yaml.safe_load(SHIPPED_INSTANCE.read_text(encoding="utf-8")),
}
DEFAULT_INSTANCE["run_monitoring"] = {**DEFAULT_INSTANCE["run_monitoring"], "poll_interval_seconds": 5}
# BulkActionStatus values after which the daemon does nothing more with a backfill.
FINAL_STATUSES = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0

READY_QUERY = """
query Ready {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } } }
    ... on PythonError { message }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""
LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId launchedRunIds }
    ... on Error { message }
    ... on PythonError { stack }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { id status }
    ... on Error { message }
  }
}
"""
REEXECUTE_BACKFILL = """
mutation ReexecuteBackfill($reexecutionParams: ReexecutionParams) {
  reexecutePartitionBackfill(reexecutionParams: $reexecutionParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { message stack }
  }
}
"""

BACKFILL_DETAILS = """
query BackfillDetails($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      numPartitions
      partitionNames
      timestamp
      endTimestamp
      error { message }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsInProgress
            numPartitionsMaterialized
            numPartitionsFailed
          }
          ... on UnpartitionedAssetStatus { assetKey { path } inProgress materialized failed }
        }
      }
      runs { runId status startTime endTime tags { key value } }
    }
    ... on Error { message }
  }
}
"""
PARTITION_STATUS = """
query AssetPartitionStatus($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      assetPartitionStatuses {
        __typename
        ... on TimePartitionStatuses { ranges { status startKey endKey } }
        ... on DefaultPartitionStatuses {
          materializedPartitions
          failedPartitions
          materializingPartitions
        }
      }
    }
    ... on Error { message }
  }
}
"""

# The UI's "Reload definitions" (a code location's row, or the location's page), then what it
# polls until the location is loaded again, and the load error it shows.
RELOAD_LOCATION = """
mutation ReloadRepositoryLocation($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { name }
    ... on Error { message }
  }
}
"""
LOCATION_STATUSES = """
query LocationStatuses {
  locationStatusesOrError {
    __typename
    ... on WorkspaceLocationStatusEntries { entries { name loadStatus updateTimestamp versionKey } }
    ... on PythonError { message }
  }
}
"""
LOCATION_ENTRY = """
query LocationEntry($name: String!) {
  workspaceLocationEntryOrError(name: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      loadStatus
      locationOrLoadError {
        __typename
        ... on PythonError { message errorChain { error { message } } }
      }
    }
    ... on PythonError { message }
  }
}
"""


class GraphQLError(RuntimeError):
    """The webserver answered with `errors`, or a result of an error type."""


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` merged in: nested dicts key by key, None deletes a key."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _descendants(pids: list[int]) -> list[int]:
    """Live descendants of `pids` from /proc (a child that called setsid() leaves the group)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
    found: list[int] = []
    frontier = list(pids)
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def _partition_of(tags: Mapping[str, str]) -> str | None:
    """A run's partition as the UI shows it: its key, or `first...last` for a ranged run (a
    range of one is its key)."""
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    start, end = (
        tags.get("dagster/asset_partition_range_start"),
        tags.get("dagster/asset_partition_range_end"),
    )
    if start and start == end:
        return start
    return f"{start}...{end}" if start and end else None


@dataclass
class DagsterServer:
    """``dagster-webserver`` + ``dagster-daemon run`` on `workspace` in `project_root`.

    `env` (ETL_ENV, ETL_HOME, ETL_SETTINGS, ...) is laid over `base_env` (default: this
    process's environment); DAGSTER_HOME is `dagster_home`, whose dagster.yaml is written from
    DEFAULT_INSTANCE merged with `instance_config` when it has none. `daemon=False` starts the
    webserver only (see `start_daemon`). Logs: `dagster_home`/webserver.log and daemon.log.
    """

    project_root: Path
    dagster_home: Path
    env: Mapping[str, str] = field(default_factory=dict)
    base_env: Mapping[str, str] | None = None
    instance_config: Mapping[str, Any] | None = None
    workspace: str = "workspace.yaml"
    port: int = 0
    daemon: bool = True
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _logs: list[IO[bytes]] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_paths(self) -> dict[str, Path]:
        return {name: self.dagster_home / f"{name}.log" for name in ("webserver", "daemon")}

    def __enter__(self) -> DagsterServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _write_instance(self) -> None:
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        path = self.dagster_home / "dagster.yaml"
        if path.exists():
            if self.instance_config:
                raise ValueError(f"{path} exists: instance_config would be ignored")
            return
        config = merge_config(DEFAULT_INSTANCE, self.instance_config or {})
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def _init_storage(self) -> None:
        """Create (or migrate) the instance's storage before the servers start. On a new SQLite
        DAGSTER_HOME the webserver, the daemon and their code servers create the tables at once:
        in 3 of 4 such starts seen here schedules.db got two alembic heads (the location then
        fails to load: "Version table 'alembic_version' has more than one head present") or
        an old revision's stamp."""
        code = "import sys; from dagster import DagsterInstance; DagsterInstance.from_config(sys.argv[1]).dispose()"
        result = subprocess.run(
            [sys.executable, "-c", code, str(self.dagster_home)],
            cwd=self.project_root,
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"DAGSTER_HOME {self.dagster_home} did not initialise:\n{result.stderr[-3000:]}"
            )

    def _env(self) -> dict[str, str]:
        base = os.environ if self.base_env is None else self.base_env
        return {**base, **self.env, "DAGSTER_HOME": str(self.dagster_home)}

    def start(self) -> DagsterServer:
        """Start the webserver (and the daemon, unless `daemon=False`): return once the code
        location is loaded and every required daemon beats. Nothing is left running on failure."""
        self._write_instance()
        self._init_storage()
        self.port = self.port or free_port()
        try:
            self._spawn("webserver", ["-w", self.workspace, "-h", HOST, "-p", str(self.port)])
            if self.daemon:
                self._spawn("daemon", ["run", "-w", self.workspace])
            self._wait_ready(READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def start_daemon(self) -> None:
        """Start the daemon later (`daemon=False`): a backfill launched before is then taken up
        at the daemon's first backfill tick instead of the next one, up to 30 s later."""
        if "daemon" in self._procs:
            return
        self.daemon = True
        try:
            self._spawn("daemon", ["run", "-w", self.workspace])
            self._wait_ready(READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.log_paths[name].open("ab")
        self._logs.append(log)
        self._procs[name] = subprocess.Popen(
            [str(Path(sys.executable).with_name(f"dagster-{name}")), *args],
            cwd=self.project_root,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own group: stop() signals the group, pytest's Ctrl-C does not
        )

    def _logs_tail(self) -> str:
        return "\n".join(f"--- {path.name}\n{_tail(path, 3000)}" for path in self.log_paths.values())

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = "no answer"
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"dagster {name} exited with {proc.returncode}\n{self._logs_tail()}")
            try:
                data = self.graphql(READY_QUERY)
            except (OSError, GraphQLError) as exc:
                state = f"no answer ({exc})"
            else:
                entries = data["workspaceOrError"].get("locationEntries", [])
                for entry in entries:
                    error = entry.get("locationOrLoadError") or {}
                    if entry["loadStatus"] == "LOADED" and error.get("__typename") == "PythonError":
                        raise RuntimeError(
                            f"code location {entry['name']} failed to load: {error['message']}\n"
                            f"{self._logs_tail()}"
                        )
                repos = data["repositoriesOrError"].get("nodes", [])
                daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
                waiting = sorted(d["daemonType"] for d in daemons if d["required"] and not d["healthy"])
                waiting = waiting if self.daemon else []
                if repos and not waiting:
                    return
                state = f"repositories {[r['name'] for r in repos]}, daemons not yet beating: {waiting}"
            time.sleep(0.5)
        raise RuntimeError(
            f"dagster on {self.url} not ready within {timeout:.0f} s: {state}\n{self._logs_tail()}"
        )

    def process_ids(self) -> list[int]:
        """Every live process of the server tree: the webserver, the daemon and what they
        started (code servers, run workers), for a test or benchmark that measures them."""
        roots = [p.pid for p in self._procs.values() if p.poll() is None]
        return roots + _descendants(roots)

    def stop(self) -> None:
        """SIGINT (the Ctrl-C both expect) to each group, up to 20 s, then SIGKILL the groups
        and any descendant that left them; close the logs. Safe to call twice."""
        procs = list(self._procs.values())
        self._procs = {}
        strays: list[int] = []
        try:
            live = [p for p in procs if p.poll() is None]
            strays += _descendants([p.pid for p in live])
            for proc in live:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for proc in live:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            strays += _descendants([p.pid for p in procs if p.poll() is None])
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group: code servers, run workers
            for pid in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            for log in self._logs:
                log.close()
            self._logs = []

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a query to /graphql; its `data`, or GraphQLError with the `errors`."""
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with `errors` in the body
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise GraphQLError(f"HTTP {exc.code} from {self.url}/graphql") from exc
        if body.get("errors"):
            raise GraphQLError(json.dumps(body["errors"], indent=1)[:4000])
        return body["data"]

    def _location_status(self, name: str) -> dict[str, Any]:
        result = self.graphql(LOCATION_STATUSES)["locationStatusesOrError"]
        if result["__typename"] != "WorkspaceLocationStatusEntries":
            raise GraphQLError(f"locationStatusesOrError: {json.dumps(result)[:4000]}")
        entry = next((e for e in result["entries"] if e["name"] == name), None)
        if entry is None:
            raise GraphQLError(f"no code location {name!r}: {[e['name'] for e in result['entries']]}")
        return entry

    def reload_location(self, name: str, timeout: float = READY_TIMEOUT_S) -> str | None:
        """The UI's "Reload definitions" of code location `name`: once it is loaded again (its
        status LOADED, updated after the click), None, or the load error the UI shows (each
        message of the error's chain, one after the other)."""
        before = self._location_status(name)["updateTimestamp"]
        result = self.graphql(RELOAD_LOCATION, {"name": name})["reloadRepositoryLocation"]
        if result["__typename"] != "WorkspaceLocationEntry":
            raise GraphQLError(f"reloadRepositoryLocation({name}): {json.dumps(result)[:4000]}")
        deadline = time.monotonic() + timeout
        status = self._location_status(name)
        while status["loadStatus"] != "LOADED" or status["updateTimestamp"] <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not loaded again within {timeout:.0f} s: {status}")
            time.sleep(0.2)
            status = self._location_status(name)
        entry = self.graphql(LOCATION_ENTRY, {"name": name})["workspaceLocationEntryOrError"]
        if entry["__typename"] != "WorkspaceLocationEntry":
            raise GraphQLError(f"workspaceLocationEntryOrError({name}): {json.dumps(entry)[:4000]}")
        error = entry["locationOrLoadError"] or {}
        if error.get("__typename") != "PythonError":
            return None
        return "\n".join([error["message"], *(link["error"]["message"] for link in error["errorChain"])])

    def launch_backfill(self, partition_names: list[str], asset_keys: list[str]) -> str:
        """The UI's "Launch backfill" of `partition_names` for `asset_keys`; the backfill id."""
        params = {
            "partitionNames": list(partition_names),
            "assetSelection": [{"path": key.split("/")} for key in asset_keys],
            "fromFailure": False,
        }
        result = self.graphql(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(
                f"launchPartitionBackfill: {result['__typename']}: {json.dumps(result)[:4000]}"
            )
        return result["backfillId"]

    def reexecute_backfill(self, backfill_id: str) -> str:
        """The backfill page's "Re-execute" of what failed (strategy FROM_FAILURE); the new
        backfill's id."""
        params = {"parentRunId": backfill_id, "strategy": "FROM_FAILURE"}
        result = self.graphql(REEXECUTE_BACKFILL, {"reexecutionParams": params})["reexecutePartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(f"reexecutePartitionBackfill: {json.dumps(result)[:4000]}")
        return result["backfillId"]

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        """The backfill as its page shows it: status, per-asset counts, runs (with partitions)."""
        result = self.graphql(BACKFILL_DETAILS, {"backfillId": backfill_id})["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"partitionBackfillOrError: {json.dumps(result)[:4000]}")
        assets: dict[str, dict[str, Any]] = {}
        for entry in (result.get("assetBackfillData") or {}).get("assetBackfillStatuses", []):
            counts = {k: v for k, v in entry.items() if k not in ("__typename", "assetKey")}
            assets["/".join(entry["assetKey"]["path"])] = counts
        runs = []
        for run in result.get("runs") or []:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            runs.append(
                {
                    "id": run["runId"],
                    "status": run["status"],
                    "partition": _partition_of(tags),
                    "start_time": run["startTime"],
                    "end_time": run["endTime"],
                }
            )
        return {
            "id": result["id"],
            "status": result["status"],
            "num_partitions": result["numPartitions"],
            "timestamp": result["timestamp"],
            "end_timestamp": result["endTimestamp"],
            "error": (result.get("error") or {}).get("message"),
            "assets": assets,
            "runs": sorted(runs, key=lambda r: (r["start_time"] or 0, r["partition"] or "")),
        }

    def wait_backfill(self, backfill_id: str, timeout: float, poll: float = 1.0) -> dict[str, Any]:
        """Poll (a light query) until the backfill's status is final; then `backfill()`."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            result = self.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
            if result["__typename"] != "PartitionBackfill":
                raise GraphQLError(f"partitionBackfillOrError: {json.dumps(result)[:4000]}")
            status = result["status"]
            if status in FINAL_STATUSES:
                return self.backfill(backfill_id)
            time.sleep(poll)
        details = self.backfill(backfill_id)
        raise TimeoutError(
            f"backfill {backfill_id} still {status} after {timeout:.0f} s: {json.dumps(details)[:3000]}\n"
            f"{self._logs_tail()}"
        )

    def partition_status(self, asset_key: str) -> dict[str, str]:
        """Per partition key, what the asset's Partitions tab shows: "materialized", "failed",
        "materializing" or "missing" (every key of the asset, so a test can assert either way)."""
        data = self.graphql(PARTITION_STATUS, {"assetKey": {"path": asset_key.split("/")}})
        node = data["assetNodeOrError"]
        if node["__typename"] != "AssetNode":
            raise GraphQLError(f"assetNodeOrError({asset_key}): {json.dumps(node)}")
        dimensions = node["partitionKeysByDimension"]
        if len(dimensions) != 1:
            raise NotImplementedError(f"{asset_key}: {len(dimensions)} partition dimensions")
        keys = dimensions[0]["partitionKeys"]
        state = dict.fromkeys(keys, "missing")
        statuses = node["assetPartitionStatuses"]
        if statuses["__typename"] == "TimePartitionStatuses":
            index = {key: i for i, key in enumerate(keys)}
            for span in statuses["ranges"]:
                for key in keys[index[span["startKey"]] : index[span["endKey"]] + 1]:
                    state[key] = span["status"].lower()
        elif statuses["__typename"] == "DefaultPartitionStatuses":
            for name, label in (
                ("materializedPartitions", "materialized"),
                ("failedPartitions", "failed"),
                ("materializingPartitions", "materializing"),
            ):
                state.update(dict.fromkeys(statuses[name], label))
        else:
            raise NotImplementedError(f"{asset_key}: {statuses['__typename']}")
        return state
