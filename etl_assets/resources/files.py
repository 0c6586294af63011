"""Where source files come from: an SFTP server, or ETL_HOME/import in dev.

Both resources have the same methods so that a step never knows which one it has.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dagster import ConfigurableResource

from etl_assets.resources.errors import ConnectorError
from etl_assets.resources.names import accepted


def partial_name(name: str) -> str:
    """A temporary name for a file being written: ``.<name>.<pid>.<random>.part``, so that two
    runs downloading the same file at once never write into one temporary file."""
    return f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"


@dataclass(frozen=True)
class RemoteFile:
    """One file in a source folder, as the server lists it."""

    name: str
    path: str
    size: int
    mtime: float


class FileListing(list[RemoteFile]):
    """A folder's files, and the names refused in it (``names.accepted``) for the caller to
    show."""

    def __init__(self, files: list[RemoteFile], refused: list[str]) -> None:
        super().__init__(sorted(files, key=lambda f: f.name))
        self.refused = refused


class FilesResource(ConfigurableResource):
    """The interface of a file source; see SftpResource and LocalFilesResource."""

    folders: dict[str, str] = {}

    def folder_of(self, flow: str, default: str | None = None) -> str:
        """The remote folder of a flow from the settings, else the flow's default."""
        folder = self.folders.get(flow, default)
        if folder is None:
            raise ConnectorError("sftp", f"no folder configured for flow {flow!r} (sftp.folders)")
        return folder

    def location(self, remote_path: str) -> str:
        """Where a file of the source is, as a person would look for it."""
        return remote_path

    def list_files(self, folder: str) -> FileListing:
        raise NotImplementedError

    def download(self, remote_path: str, local_path: Path) -> Path:
        raise NotImplementedError

    def upload(self, local_path: Path, remote_path: str) -> None:
        raise NotImplementedError

    def rename(self, remote_path: str, new_path: str) -> None:
        raise NotImplementedError

    def remove(self, remote_path: str) -> None:
        raise NotImplementedError

    def archive(self, remote: RemoteFile, folder: str) -> str:
        """Move a processed file to ``<folder>/processed/``; returns its new path."""
        target = f"{folder.rstrip('/')}/processed/{remote.name}"
        self.rename(remote.path, target)
        return target

    def check_connection(self) -> str:
        raise NotImplementedError


class LocalFilesResource(FilesResource):
    """Dev default: files sit flat in ETL_HOME/import (the file name says the flow)."""

    root: str

    def _local(self, remote_path: str) -> Path:
        return Path(self.root) / PurePosixPath(remote_path).name

    def location(self, remote_path: str) -> str:
        return str(self._local(remote_path))

    def list_files(self, folder: str) -> FileListing:
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        files, refused = [], []
        with os.scandir(os.fsencode(root)) as entries:  # bytes: a name need not be UTF-8
            for entry in entries:
                if not entry.is_file() or entry.name.startswith(b"."):
                    continue
                name = accepted(entry.name, str(root), refused)
                if name is not None:
                    st = entry.stat()
                    files.append(RemoteFile(name, str(root / name), st.st_size, st.st_mtime))
        return FileListing(files, refused)

    def download(self, remote_path: str, local_path: Path) -> Path:
        source = self._local(remote_path)
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such file")
        local_path.parent.mkdir(parents=True, exist_ok=True)
        partial = local_path.with_name(partial_name(local_path.name))
        try:
            shutil.copyfile(source, partial)
            partial.replace(local_path)
        finally:
            partial.unlink(missing_ok=True)
        return local_path

    def upload(self, local_path: Path, remote_path: str) -> None:
        """Copied under a temporary name, then renamed: readers never see a partial file."""
        target = self._local(remote_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(partial_name(target.name))
        try:
            shutil.copyfile(local_path, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)

    def rename(self, remote_path: str, new_path: str) -> None:
        target = self._local(new_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._local(remote_path).replace(target)

    def archive(self, remote: RemoteFile, folder: str) -> str:
        """Flat folder: processed files go to ``ETL_HOME/import/processed/``."""
        target = Path(self.root) / "processed" / remote.name
        target.parent.mkdir(parents=True, exist_ok=True)
        Path(remote.path).replace(target)
        return str(target)

    def remove(self, remote_path: str) -> None:
        self._local(remote_path).unlink()

    def check_connection(self) -> str:
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        return f"local folder {root} ({len(self.list_files(str(root)))} files)"
