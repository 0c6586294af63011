"""The runtime folders under ETL_HOME, created when first used; a write they refuse (a full
disk, a read-only mount) said in an operator's words, naming the folder."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from dagster import ConfigurableResource

FolderName = Literal["import", "data", "backup", "export", "errors", "logs", "resubmit"]
FOLDER_NAMES: tuple[FolderName, ...] = ("import", "data", "backup", "export", "errors", "logs", "resubmit")

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY = frozenset({errno.EROFS})
DENIED = frozenset({errno.EACCES, errno.EPERM})
# Polars says "No space left on device (os error 28)" and pyarrow "[errno 28] ...", in an
# OSError (or another error) whose errno is None
_ERRNO_IN_TEXT = re.compile(r"(?:\[errno |os error )(\d+)", re.IGNORECASE)


class FoldersResource(ConfigurableResource):
    """ETL_HOME and its runtime folders: import data backup export errors logs."""

    home: str

    def path(self, folder: FolderName, *parts: str) -> Path:
        """``ETL_HOME/<folder>/<parts...>``; the folder itself is created on demand."""
        if folder not in FOLDER_NAMES:
            raise ValueError(f"unknown runtime folder {folder!r}")
        base = Path(self.home) / folder
        base.mkdir(parents=True, exist_ok=True)
        return base.joinpath(*parts)

    def dir(self, folder: FolderName, *parts: str) -> Path:
        """``ETL_HOME/<folder>/<parts...>`` as a directory, created with its parents."""
        path = self.path(folder, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_fault(self, exc: BaseException) -> str | None:
        """The line an operator needs when a step could not write a file: the folder, and that
        its disk is full or it is not writable; None when ``exc`` (or what caused it) is no such
        fault. The libraries' own words name a temporary file, or nothing at all (Polars: "No
        space left on device (os error 28)"; an SFTP download: the remote file)."""
        for error in _chain(exc):
            code = _errno(error)
            if code not in FULL | READ_ONLY | DENIED:
                continue
            path = _local_path(getattr(error, "filename", None))
            if code in DENIED and (path is None or not path.is_relative_to(self.home)):
                continue  # a refusal with no path of ours: the server's (SFTP), not a folder here
            folder = _existing_folder(path) if path is not None else self._suspect(code)
            return self._describe(folder, code)
        return None

    def _suspect(self, code: int) -> Path:
        """The folder a write with no file name was refused in: the read-only one, or the one
        whose disk has the least room (a folder mounted on its own disk is named alone)."""
        home = Path(self.home)
        candidates = [home / name for name in FOLDER_NAMES if (home / name).is_dir()]
        if code in READ_ONLY:
            read_only = [c for c in [home, *candidates] if os.statvfs(c).f_flag & os.ST_RDONLY]
            return read_only[0] if read_only else home
        fullest = min(candidates, key=_free_bytes, default=home)
        same_disk = fullest.stat().st_dev == home.stat().st_dev
        return home if same_disk else fullest

    def _describe(self, folder: Path, code: int) -> str:
        home = Path(self.home)
        if folder == home:
            where = f"ETL_HOME ({folder})"
        elif folder.is_relative_to(home):
            where = f"ETL_HOME folder {folder.relative_to(home)} ({folder})"
        else:
            where = f"folder {folder}"
        if code in FULL:
            free = _size(_free_bytes(folder))
            return (
                f"{where} is full: no space left on device ({free} free once the step's partial "
                "files were removed); free space there or give it a larger disk, then run the "
                "partition again"
            )
        if code in READ_ONLY:
            return (
                f"{where} is not writable: read-only file system; mount it read-write (or set "
                "ETL_HOME to a writable disk), then run the partition again"
            )
        return (
            f"{where} is not writable by the user running etl_assets (permission denied); give "
            "that user write permission there, then run the partition again"
        )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it (also a context a message was raised ``from None`` over)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _errno(error: BaseException) -> int | None:
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno
    match = _ERRNO_IN_TEXT.search(str(error))
    return int(match.group(1)) if match else None


def _local_path(filename: object) -> Path | None:
    if isinstance(filename, bytes):
        filename = os.fsdecode(filename)
    if isinstance(filename, str | os.PathLike):
        path = Path(filename)
        return path if path.is_absolute() else None
    return None


def _existing_folder(path: Path) -> Path:
    """The folder a refused file was to go in (the file itself is often a temporary name)."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
