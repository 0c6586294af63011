"""Real services on loopback for the test suite (sshd/SFTP, SMTP, PostgreSQL, Dagster): no mocks.

Each `start_*` is a context manager that picks a free port, waits until the service
answers, and removes everything it created on exit. `DagsterServer` (webserver + daemon,
GraphQL as the UI uses it) is its own context manager.
"""

from etl_assets_tests.services.dagster_server import DagsterServer
from etl_assets_tests.services.postgres import PostgresServer, start_postgres
from etl_assets_tests.services.smtp import Delivery, SmtpServer, start_smtp
from etl_assets_tests.services.sshd import SshdServer, start_sshd

__all__ = [
    "DagsterServer",
    "Delivery",
    "PostgresServer",
    "SmtpServer",
    "SshdServer",
    "start_postgres",
    "start_smtp",
    "start_sshd",
]
