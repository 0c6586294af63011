"""Where a flow's partition keeps its staged data on disk, one file per step.

``ETL_HOME/data/<flow>/<partition>/``: ``raw/<file>`` (+ ``.sha256``), ``extract.parquet``,
``transform.parquet``, ``transform_rejected.parquet``, ``transform_collapsed.parquet``,
``load.parquet``, ``link.parquet``. Any step can be re-run from the one before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from etl_assets.resources.folders import FoldersResource


def partition_dir_name(partition_key: str) -> str:
    """A partition key as a folder name (``:`` is not portable)."""
    return partition_key.replace(":", "-")


@dataclass(frozen=True)
class PartitionStage:
    """The staged files of one flow partition."""

    flow: str
    partition_key: str
    folders: FoldersResource

    @property
    def dir(self) -> Path:
        return self.folders.dir("data", self.flow, partition_dir_name(self.partition_key))

    def file(self, name: str) -> Path:
        return self.dir / name

    @property
    def raw_dir(self) -> Path:
        path = self.dir / "raw"
        path.mkdir(exist_ok=True)
        return path

    def error_file(self, step: str) -> Path:
        """``ETL_HOME/errors/<flow>/<partition>/<step>.csv``."""
        return self.folders.dir("errors", self.flow, partition_dir_name(self.partition_key)) / f"{step}.csv"
