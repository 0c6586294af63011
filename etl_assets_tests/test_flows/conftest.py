"""A test environment for whole flows: real PostgreSQL, sshd and SMTP, real Dagster runs."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.storage.tags import RESUME_RETRY_TAG

from etl_assets.definitions import build_definitions
from etl_assets.settings import load_settings
from etl_assets_tests.conftest import SMTP_AUTH
from etl_assets_tests.services import PostgresServer, SmtpServer, SshdServer

HEADER = "COMPANY_ID;VAT_CODE;NAME;ADDRESS;CITY;ZIP;COUNTRY;EMAIL;PHONE;PARENT_VAT;REVENUE;EMPLOYEES;FOUNDED;UPDATED_AT"


def materializations(result: dg.ExecuteInProcessResult, asset: str) -> list[dg.AssetMaterialization]:
    """The run's materializations of one step's asset (a flow's four steps are one op)."""
    flow = asset.rpartition("_")[0]
    return [
        m
        for m in result.asset_materializations_for_node(f"{flow}_steps")
        if m.asset_key == dg.AssetKey(asset)
    ]


@dataclass
class FlowEnv:
    """Everything a flow test touches: the remote folder, the database, the mailbox."""

    home: Path
    folder: str
    sshd: SshdServer
    smtp: SmtpServer
    postgres: PostgresServer
    database: str
    instance: dg.DagsterInstance
    cursors: dict = field(default_factory=dict)  # sensor cursors, as the daemon keeps them

    def put(self, name: str, data: bytes) -> None:
        self.sshd.put_file(f"{self.folder}/{name}", data)

    def run(self, partition_key: str, job: str = "companies_job") -> dg.ExecuteInProcessResult:
        """One real Dagster run of the flow's job for a partition (definitions built anew)."""
        with self.defs_state():
            defs = build_definitions(load_settings("test"))
            return defs.resolve_job_def(job).execute_in_process(
                partition_key=partition_key, instance=self.instance, raise_on_error=False
            )

    def run_range(self, first: str, last: str, job: str = "companies_job") -> dg.ExecuteInProcessResult:
        """One ranged run of the flow over ``first...last`` (no backfill: a run of its own)."""
        with self.defs_state():
            defs = build_definitions(load_settings("test"))
            return defs.resolve_job_def(job).execute_in_process(
                instance=self.instance,
                tags={
                    "dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": last,
                },
                raise_on_error=False,
            )

    def reexecute(
        self, parent_run_id: str, job: str = "companies_job", from_failure: bool = True
    ) -> dg.ExecuteJobResult:
        """Dagster's re-execution of a run, as the UI starts it: "from failure" (the default) or
        "all steps", of the job reconstructed from ``etl_assets.definitions`` (its steps run in
        processes of their own, as in a deployment).

        The UI's re-execution (``instance.create_reexecuted_run``) carries the parent's tags
        (its partition range) and marks one from failure; ``execute_job`` does neither."""
        parent = self.instance.get_run_by_id(parent_run_id)
        assert parent is not None
        tags = {k: v for k, v in parent.tags.items() if k.startswith("dagster/asset_partition_range")}
        if from_failure:
            options = dg.ReexecutionOptions.from_failure(parent_run_id, self.instance)
            tags[RESUME_RETRY_TAG] = "true"
        else:
            options = dg.ReexecutionOptions(parent_run_id=parent_run_id)
        reconstructed = ReconstructableJob(
            ReconstructableRepository.for_module("etl_assets.definitions", "defs"), job
        )
        # Dagster keeps the last job it reconstructed (lru_cache on an equal tuple): in one
        # pytest process that is an earlier test's, with its database (a run worker has one)
        ReconstructableJob.get_definition.cache_clear()
        ReconstructableJob.get_repository_definition.cache_clear()
        with self.defs_state():
            return dg.execute_job(reconstructed, self.instance, tags=tags, reexecution_options=options)

    def stepped(self, run_id: str) -> set[tuple[str, str]]:
        """(asset, partition) materialized by a run, from the instance's event log."""
        records = self.instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        found = set()
        for record in records:
            materialization = record.event_log_entry.asset_materialization
            assert materialization is not None
            found.add((materialization.asset_key.to_user_string(), materialization.partition or ""))
        return found

    def defs_state(self) -> AbstractContextManager[None]:
        """No defs-state storage for a definitions load: our components keep no state.

        A process that hosts many instances one after another (pytest) can be left pointing
        at an earlier, deleted one (seen: ``unable to open database file .../runs.db`` of
        another test's instance, and ``Attempted to resolve undefined DagsterInstance
        weakref`` even with this test's own storage set); a run worker hosts one instance, so
        this is the test harness's need (as in test_no_leak)."""
        from dagster._core.storage.defs_state.base import set_defs_state_storage

        return set_defs_state_storage(None)

    def stale_status(self, asset: str, partition: str) -> str:
        """What the UI marks: Dagster's own stale status of an asset's partition (FRESH, STALE,
        MISSING), from the code location's asset graph and this test's instance."""
        from dagster._core.definitions.data_version import CachingStaleStatusResolver
        from dagster._core.loader import LoadingContextForTest

        with self.defs_state():
            graph = build_definitions(load_settings("test")).resolve_asset_graph()
        resolver = CachingStaleStatusResolver(self.instance, graph, LoadingContextForTest(self.instance))
        return resolver.get_status(dg.AssetKey(asset), partition).value

    def webserver_stale_status(self, asset: str, partitions: list[str]) -> list[str]:
        """The stale status the webserver's GraphQL gives the UI for the asset's partitions: the
        project's workspace.yaml loaded in a code server of its own, on this test's instance."""
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import WorkspaceFileTarget
        from dagster_graphql.test.utils import execute_dagster_graphql

        query = """query ($key: AssetKeyInput!, $partitions: [String!]) {
          assetNodes(assetKeys: [$key]) { staleStatusByPartition(partitions: $partitions) }
        }"""
        target = WorkspaceFileTarget([str(Path(__file__).resolve().parents[2] / "workspace.yaml")])
        with self.defs_state(), WorkspaceProcessContext(self.instance, target) as workspace:
            result = execute_dagster_graphql(
                workspace.create_request_context(),
                query,
                {"key": {"path": [asset]}, "partitions": partitions},
            )
        assert not result.errors, result.errors
        (node,) = result.data["assetNodes"]
        return node["staleStatusByPartition"]

    def query(self, sql: str) -> list[tuple]:
        with psycopg.connect(self.postgres.dsn(self.database)) as conn:
            return conn.execute(sql).fetchall()

    def execute(self, sql: str) -> None:
        """A statement that returns no rows (a client's own table), committed."""
        with psycopg.connect(self.postgres.dsn(self.database)) as conn:
            conn.execute(sql)

    def error_file(self, partition: str, step: str) -> Path:
        return self.home / "errors" / "companies" / partition / f"{step}.csv"


@pytest.fixture
def flow_env(
    isolated_env: Path,
    sshd: SshdServer,
    smtp_server: SmtpServer,
    postgres: PostgresServer,
    pg_database: str,
    write_settings: Callable[[str], Path],
    encrypt_password: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[FlowEnv]:
    """Settings of the ``test`` environment pointing at the real services."""
    folder = f"/outbound/companies_{secrets.token_hex(4)}"
    sshd.put_file(f"{folder}/.keep", b"")
    smtp_server.clear()
    write_settings(
        f"""
timezone: Europe/Rome
test:
  database:
    driver: postgresql
    host: {postgres.host}
    port: {postgres.port}
    database: {pg_database}
    user: {postgres.user}
    password: {encrypt_password(postgres.password)}
  sftp:
    host: {sshd.host}
    port: {sshd.port}
    user: {sshd.user}
    private_key: {sshd.key_path}
    known_hosts: {sshd.known_hosts_path}
    retries: 1
    backoff_seconds: 0.1
    folders: {{companies: {folder}, offers: {folder}}}
  mail:
    sender: etl@test.example
    recipients: [ops@test.example]
    smtp:
      host: {smtp_server.host}
      port: {smtp_server.port}
      starttls: true
      cafile: {smtp_server.cafile}
      user: {SMTP_AUTH[0]}
      password: {encrypt_password(SMTP_AUTH[1])}
"""
    )
    monkeypatch.setenv("ETL_ENV", "test")
    with dg.instance_for_test() as instance:
        yield FlowEnv(isolated_env, folder, sshd, smtp_server, postgres, pg_database, instance)


def companies_csv(*rows: str, bom: bool = False, newline: str = "\r\n") -> bytes:
    """A companies file as the ERP writes it."""
    text = newline.join([HEADER, *rows]) + newline
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
