"""The runtime folders under ETL_HOME, created when first used."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dagster import ConfigurableResource

FolderName = Literal["import", "data", "backup", "export", "errors", "logs"]
FOLDER_NAMES: tuple[FolderName, ...] = ("import", "data", "backup", "export", "errors", "logs")


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
