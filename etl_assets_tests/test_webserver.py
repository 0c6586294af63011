"""The UI's view: the real dagster-webserver loads the code location through workspace.yaml."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

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


def test_webserver_shows_the_flows_jobs_and_schedules(isolated_env: Path) -> None:
    port = free_port()
    dagster_home = isolated_env / "dagster_home"
    dagster_home.mkdir(parents=True)
    server = subprocess.Popen(
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
        env={**os.environ, "DAGSTER_HOME": str(dagster_home), "ETL_ENV": "dev"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        data = None
        while time.monotonic() < deadline:
            try:
                data = graphql(port, QUERY)
                if data.get("data", {}).get("repositoriesOrError", {}).get("nodes"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert data, "the webserver did not answer within 60 s"
        (repo,) = data["data"]["repositoriesOrError"]["nodes"]
        assert repo["location"]["name"] == "etl_assets"
        assert {"test_connections", "companies_job"} <= {j["name"] for j in repo["jobs"]}
        assert {"groupName": "companies"} in repo["assetGroups"]
        schedule = next(s for s in repo["schedules"] if s["name"] == "companies_schedule")
        assert (schedule["cronSchedule"], schedule["executionTimezone"]) == ("0 6 * * *", "Europe/Rome")
    finally:
        server.terminate()
        server.wait(timeout=20)
