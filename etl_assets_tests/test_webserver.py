"""The UI's view, started as ``scripts/ui.sh`` starts it: ``dg dev`` (webserver and daemon)
on the project's code location; and the plain ``dagster-webserver -w workspace.yaml``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        jobs { name }
        schedules { name cronSchedule executionTimezone }
        assetGroups { groupName }
        assetNodes {
          assetKey { path }
          dependencyKeys { path }
          metadataEntries {
            label
            ... on TableSchemaMetadataEntry { schema { columns { name type } } }
          }
        }
      }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


WARNING = re.compile(r"(?i)\bwarning\b|\w+Warning\b")


def dg_dev(port: int, home: Path, log: Path) -> subprocess.Popen:
    """``dg dev`` as ``scripts/ui.sh`` runs it, in its own process group."""
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dg")), "dev", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home), "ETL_ENV": "dev", "VIRTUAL_ENV": sys.prefix},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )


def dagster_webserver(port: int, home: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home), "ETL_ENV": "dev"},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,
    )


def stop(server: subprocess.Popen) -> None:
    """Ctrl-C, as an operator stops it (dg dev ignores SIGTERM's children); then the group."""
    server.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)


@pytest.mark.parametrize("start", [dg_dev, dagster_webserver], ids=["dg dev", "dagster-webserver"])
def test_webserver_shows_the_flows_jobs_and_schedules(isolated_env: Path, start) -> None:  # noqa: ANN001
    port = free_port()
    dagster_home = isolated_env / "dagster_home"
    dagster_home.mkdir(parents=True)
    log = isolated_env / "server.log"
    server = start(port, dagster_home, log)
    try:
        deadline = time.monotonic() + 90
        data = None
        while time.monotonic() < deadline:
            try:
                data = graphql(port, QUERY)
                if data.get("data", {}).get("repositoriesOrError", {}).get("nodes"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert data, "the webserver did not answer within 90 s"
        (repo,) = data["data"]["repositoriesOrError"]["nodes"]
        assert repo["location"]["name"] == "etl_assets"
        assert {"test_connections", "companies_job"} <= {j["name"] for j in repo["jobs"]}
        assert {"groupName": "companies"} in repo["assetGroups"]
        schedule = next(s for s in repo["schedules"] if s["name"] == "companies_schedule")
        assert (schedule["cronSchedule"], schedule["executionTimezone"]) == ("0 6 * * *", "Europe/Rome")
        # the lineage across flows, and a load's columns, as the asset graph and page show them
        nodes = {"_".join(n["assetKey"]["path"]): n for n in repo["assetNodes"]}
        deps = {name: {"_".join(k["path"]) for k in n["dependencyKeys"]} for name, n in nodes.items()}
        assert deps["offers_link"] == {"offers_load", "companies_load"}
        assert deps["kpi_report_load"] == {"companies_link", "offers_link"}
        entries = {e["label"]: e for e in nodes["companies_load"]["metadataEntries"]}
        assert "dagster/column_lineage" in entries
        columns = {c["name"]: c["type"] for c in entries["dagster/column_schema"]["schema"]["columns"]}
        assert (columns["vat_code"], columns["revenue"]) == ("TEXT", "NUMERIC(18, 2)")
    finally:
        stop(server)
    # what the operator sees in the terminal: no warning of ours, nor one of Dagster's about us
    assert not WARNING.findall(log.read_text(errors="replace")), log.read_text(errors="replace")[-3000:]
