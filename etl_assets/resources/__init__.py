"""One Dagster resource per connector: database, files (SFTP or local), mailer, folders."""

from etl_assets.resources.build import build_resources
from etl_assets.resources.connections import ConnectionResult, test_connections
from etl_assets.resources.database import DatabaseResource
from etl_assets.resources.errors import ConnectorError
from etl_assets.resources.files import FilesResource, LocalFilesResource, RemoteFile
from etl_assets.resources.folders import FoldersResource
from etl_assets.resources.mailer import MailerResource
from etl_assets.resources.sftp import SftpResource
from etl_assets.resources.sources import SourcesResource

__all__ = [
    "ConnectionResult",
    "ConnectorError",
    "DatabaseResource",
    "FilesResource",
    "FoldersResource",
    "LocalFilesResource",
    "MailerResource",
    "RemoteFile",
    "SftpResource",
    "SourcesResource",
    "build_resources",
    "test_connections",
]
