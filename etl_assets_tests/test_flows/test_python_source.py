"""A Python source: a generator reading a small API on loopback (started by the test), through
the same map, catcher and load, in real Dagster runs on PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from etl_assets_tests.test_flows.conftest import FlowEnv, materializations

DAY = "2026-02-03"
PAGES = [
    [{"id": "P1", "name": "Anna Rossi", "email": "anna@example.it"}, {"id": "P2", "name": "Bruno Neri"}],
    [{"id": "P3", "name": "Carla Blu", "email": "not-an-email"}],
    [{"id": "P4", "name": "Dario Verdi", "email": "dario@example.it", "age": 41}],
]
FLOW = """type: etl_assets.orchestration.FlowComponent
attributes:
  name: people
  source:
    python: "etl_assets_tests.test_flows.api_source:fetch_people"
    options: {{base_url: "{base_url}"}}
    retries: 2
    backoff_seconds: 0.05
  map:
    person_id: {{type: String, source: ID, required: true}}
    name:      {{type: String, required: true}}
    email:     {{type: Email}}
  target: {{table: people, key: person_id}}
  partitions: {{kind: daily, start: 2026-01-01}}
"""


class Api:
    """Pages of people by day; ``failures[(day, page)]`` answers 503 that many times first."""

    def __init__(self) -> None:
        self.failures: dict[tuple[str, int], int] = {}
        self.requests: Counter[tuple[str, int]] = Counter()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                query = parse_qs(urlparse(self.path).query)
                day, page = query["day"][0], int(query["page"][0])
                api.requests[(day, page)] += 1
                if api.failures.get((day, page), 0) > 0:
                    api.failures[(day, page)] -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"items": PAGES[page - 1], "next": page < len(PAGES)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api(flow_env: FlowEnv) -> Iterator[Api]:
    """The API on loopback, and the people flow reading it in the client's flows folder."""
    api = Api()
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    folder = flow_env.home / "flows" / "people"
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(FLOW.format(base_url=api.url))
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()
        thread.join()


def test_pages_through_the_map_and_the_catcher_a_failing_page_retried(flow_env: FlowEnv, api: Api) -> None:
    api.failures[(DAY, 2)] = 2  # fails twice, answers the third time
    result = flow_env.run(DAY, job="people_job")
    assert result.success
    assert api.requests[(DAY, 2)] == 3
    rows = flow_env.query("select person_id, name, email, etl_source_line from people order by person_id")
    assert rows == [
        ("P1", "Anna Rossi", "anna@example.it", 1),
        ("P2", "Bruno Neri", None, 2),
        ("P4", "Dario Verdi", "dario@example.it", 4),
    ]
    error_file = flow_env.home / "errors" / "people" / DAY / "transform.csv"
    assert "P3;Carla Blu;not-an-email;" in error_file.read_text()
    extract = materializations(result, "people_extract")[-1].metadata
    assert extract["rows_out"].value == 4
    assert extract["schema_drift"].value == ["AGE"]  # a field the map does not read is reported
    kept = flow_env.home / "data" / "people" / DAY / "raw" / "people_202602030000.parquet"
    assert extract["sha256"].value == (kept.parent / f"{kept.name}.sha256").read_text().split()[0]


def test_a_page_that_keeps_failing_fails_the_partition_and_loads_nothing(flow_env: FlowEnv, api: Api) -> None:
    api.failures[(DAY, 3)] = 100
    result = flow_env.run(DAY, job="people_job")
    assert not result.success
    assert api.requests[(DAY, 3)] == 3  # the first try and two retries
    message = result.failure_data_for_node("people_steps").error.message
    assert (
        "python source etl_assets_tests.test_flows.api_source:fetch_people: page 3 failed 3 times, "
        "last: HTTPError: HTTP Error 503" in message
    )
    assert flow_env.query("select count(*) from pg_tables where tablename = 'people'") == [(0,)]
    subject = flow_env.smtp.wait_for(1)[0]["Subject"]
    assert subject.startswith(f"[etl_assets][test] people {DAY} failed: python source")
