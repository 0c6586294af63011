"""The ``test_connections`` job: the CLI's check, runnable from the Dagster UI."""

from dagster import Config, Failure, MetadataValue, OpExecutionContext, job, op

from etl_assets.resources import DatabaseResource, FilesResource, MailerResource, test_connections


class TestConnectionsConfig(Config):
    """Launchpad options of the job."""

    send_test_email: bool = False


@op(name="check_connectors")
def check_connectors(
    context: OpExecutionContext,
    config: TestConnectionsConfig,
    database: DatabaseResource,
    files: FilesResource,
    mailer: MailerResource,
) -> None:
    """One line per connector in the run log; the run fails when any connector fails."""
    results = test_connections(
        {"database": database, "files": files, "mailer": mailer}, send_test_email=config.send_test_email
    )
    for result in results:
        (context.log.info if result.ok else context.log.error)(result.line())
    failed = [r for r in results if not r.ok]
    if failed:
        raise Failure(
            description=f"{len(failed)} of {len(results)} connectors failed: "
            + "; ".join(f"{r.connector}: {r.detail}" for r in failed),
            metadata={r.connector: MetadataValue.text(r.detail) for r in results},
        )


@job(name="test_connections", description="Try every configured connector: database, SFTP, mail.")
def test_connections_job() -> None:
    check_connectors()


test_connections_job.__test__ = False  # type: ignore[attr-defined]
TestConnectionsConfig.__test__ = False  # type: ignore[attr-defined]
