"""Resources of one environment, built from its settings: the same keys everywhere.

Assets ask for ``database``, ``sources``, ``files``, ``mailer`` and ``folders`` and never learn which
environment they run in (the dagster ``project_fully_featured`` way).
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.files import FilesResource, LocalFilesResource
from etl_assets.resources.folders import FoldersResource
from etl_assets.resources.mailer import MailerResource
from etl_assets.resources.sftp import SftpResource
from etl_assets.resources.sources import SourcesResource
from etl_assets.settings.models import DatabaseSettings, Settings


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    """``database``, ``sources``, ``files``, ``mailer`` and ``folders`` for ``settings.env``."""
    home = Path(settings.home).expanduser().resolve()
    folders = FoldersResource(home=str(home))
    return {
        "database": _database(settings.database, home),
        "sources": SourcesResource(
            connectors={name: _database(db, home, f"sources.{name}") for name, db in settings.sources.items()}
        ),
        "files": _files(settings, home),
        "mailer": _mailer(settings, home),
        "folders": folders,
    }


def _database(db: DatabaseSettings, home: Path, setting: str = "database") -> DatabaseResource:
    return DatabaseResource(
        driver=db.driver,
        sqlite_file=str(home / "data" / db.path) if db.driver == "sqlite" else "",
        host=db.host,
        port=db.port,
        database=db.database,
        user=db.user,
        password=db.password or "",
        connect_timeout=db.connect_timeout,
        setting=setting,
    )


def _files(settings: Settings, home: Path) -> FilesResource:
    sftp = settings.sftp
    if sftp is None:
        return LocalFilesResource(root=str(home / "import"))
    return SftpResource(
        host=sftp.host,
        port=sftp.port,
        user=sftp.user,
        password=sftp.password or "",
        private_key=sftp.private_key or "",
        private_key_passphrase=sftp.private_key_passphrase or "",
        known_hosts=sftp.known_hosts,
        allow_unknown_host_keys=sftp.allow_unknown_host_keys,
        timeout=sftp.timeout,
        retries=sftp.retries,
        backoff_seconds=sftp.backoff_seconds,
        folders=sftp.folders,
    )


def _mailer(settings: Settings, home: Path) -> MailerResource:
    mail, smtp = settings.mail, settings.mail.smtp
    return MailerResource(
        env=settings.env,
        sender=mail.sender,
        recipients=mail.recipients,
        outbox=str(home / "logs" / "outbox"),
        smtp_host=smtp.host if smtp else "",
        smtp_port=smtp.port if smtp else 25,
        starttls=smtp.starttls if smtp else False,
        cafile=(smtp.cafile or "") if smtp else "",
        user=(smtp.user or "") if smtp else "",
        password=(smtp.password or "") if smtp else "",
        retries=smtp.retries if smtp else 0,
        backoff_seconds=smtp.backoff_seconds if smtp else 0.0,
        timeout=smtp.timeout if smtp else 10.0,
    )
