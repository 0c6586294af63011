"""Every delivery of a partition's file kept, and what a new delivery changed.

A client may send a partition's file again (a corrected export). Nothing of the first is
lost: ``raw/<file>`` holds the latest delivery and ``raw/deliveries/<sha16>_<file>`` every
delivery (a hard link: no bytes copied); backups sit under the partition's year and month,
``backup/<flow>/YYYY/MM/<file>`` for the first and ``<sha16>_<file>`` beside it for any
delivery with other bytes. When a new delivery replaces one that was loaded, the keys that
load landed are kept (``previous_load.parquet``) until the next load says which keys the new
delivery added, changed and left out (missing: they stay in the target).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from etl_assets.engine.catcher import Markdown, markdown_table
from etl_assets.engine.columns import LINE
from etl_assets.engine.staging import PartitionStage
from etl_assets.resources.files import partial_name

DELIVERIES = "deliveries"
PREFIX = 16  # hex digits of the sha256 in a kept delivery's name: 64 bits, no clash in practice
PREVIOUS_LOAD = "previous_load.parquet"
PREVIEW_ROWS = 20
_KEPT_NAME = re.compile(rf"^[0-9a-f]{{{PREFIX}}}_(.+)$")


def file_sha256(path: Path) -> str:
    """sha256 of a file read in 1 MB blocks (a large file is never held twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def delivery_name(digest: str, file_name: str) -> str:
    """The name a delivery is kept under: its content, then the file's name."""
    return f"{digest[:PREFIX]}_{file_name}"


def delivered_name(kept_name: str) -> str:
    """The file name a kept delivery was sent under (``<sha16>_<file>`` -> ``<file>``)."""
    match = _KEPT_NAME.match(kept_name)
    return match.group(1) if match else kept_name


def _copy_whole(source: Path, target: Path, link: bool) -> None:
    """``target`` appears complete or not at all: a hard link where asked and possible, else a
    copy, made under a temporary name first."""
    partial = target.with_name(partial_name(target.name))
    try:
        if link:
            try:
                os.link(source, partial)
            except OSError:  # another file system, or links not allowed: copy the bytes
                shutil.copy2(source, partial)
        else:
            shutil.copy2(source, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def kept_path(raw: Path, digest: str) -> Path:
    """Where the delivery of ``raw/<file>`` with checksum ``digest`` is kept (the ledger's
    ``raw_path`` of the object)."""
    return raw.parent / DELIVERIES / delivery_name(digest, raw.name)


def keep_delivery(raw: Path, digest: str) -> Path:
    """The delivery at ``raw/<file>`` kept under its content, once (a later delivery replaces
    ``raw/<file>`` but never this)."""
    kept = kept_path(raw, digest)
    if not kept.exists():
        kept.parent.mkdir(exist_ok=True)
        _copy_whole(raw, kept, link=True)
    return kept


def keep_current(raw: Path) -> None:
    """Before a new download replaces ``raw/<file>``: the bytes there kept under their content.
    They are already, unless a run died between the download and its record, or the partition
    was staged before deliveries were kept; only then is the file read again."""
    if not raw.is_file():
        return
    recorded = raw.with_name(raw.name + ".sha256")
    if recorded.is_file() and recorded.stat().st_mtime >= raw.stat().st_mtime:
        digest = recorded.read_text().split()[0]
        if (raw.parent / DELIVERIES / delivery_name(digest, raw.name)).exists():
            return
    keep_delivery(raw, file_sha256(raw))


def back_up(raw: Path, digest: str, folder: Path) -> Path:
    """The delivery's copy in the partition's backup ``folder``: ``<file>`` if that name is free
    or holds these bytes, else ``<sha16>_<file>``; never over another delivery's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    size = raw.stat().st_size
    for candidate in (folder / raw.name, folder / delivery_name(digest, raw.name)):
        if not candidate.exists():
            _copy_whole(raw, candidate, link=False)
            return candidate
        if candidate.stat().st_size == size and file_sha256(candidate) == digest:
            return candidate
    raise OSError(
        f"{folder / delivery_name(digest, raw.name)}: a backup named for these bytes holds others; "
        "it is left as found: move it aside and run extract again"
    )


def backups_of(folder: Path, file_name: str) -> list[Path]:
    """Every backup of a file under a flow's backup folder, whatever its month."""
    return [*folder.glob(f"*/*/{file_name}"), *folder.glob(f"*/*/{'?' * PREFIX}_{file_name}")]


def remember_loaded(stage: PartitionStage, previous_delivery: str) -> None:
    """A new delivery replaced ``previous_delivery``: the keys the partition's last load landed
    are kept for the next load to compare with. A comparison not yet reported is kept as it is
    (it holds the last delivery that was loaded)."""
    loaded, kept = stage.file("load.parquet"), stage.file(PREVIOUS_LOAD)
    if kept.exists() or not loaded.exists():
        return
    partial = kept.with_name(partial_name(kept.name))
    try:
        (
            pl.scan_parquet(loaded)
            .filter(pl.col("action") != "rejected")
            .select("key", LINE, pl.lit(previous_delivery).alias("delivery"))
            .sink_parquet(partial)
        )
        partial.replace(kept)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class DeliveryChange:
    """What a partition's new delivery did against the one loaded before it."""

    previous: str  # the kept name of the previous delivery
    added: int
    changed: int
    missing: int
    missing_preview: pl.DataFrame  # key, previous source_line: the first missing keys

    def metadata(self) -> dict[str, object]:
        metadata: dict[str, object] = {
            "previous_delivery": self.previous,
            "delivery_added": self.added,
            "delivery_changed": self.changed,
            "delivery_missing": self.missing,
        }
        if self.missing:
            metadata["delivery_missing_preview"] = Markdown(markdown_table(self.missing_preview))
        return metadata

    def line(self) -> str:
        """One line for the e-mail: the counts, then the first missing keys."""
        text = (
            f"new delivery against {self.previous}: {self.added} rows added, {self.changed} changed, "
            f"{self.missing} missing"
        )
        if not self.missing:
            return text
        keys = ", ".join(self.missing_preview.get_column("key").to_list())
        more = ", ..." if self.missing > self.missing_preview.height else ""
        return f"{text} (not in this delivery, they stay in the target: {keys}{more})"


def delivery_change(stage: PartitionStage) -> DeliveryChange | None:
    """The new delivery's change against the previous loaded one, once it is loaded; None when
    no new delivery waits to be reported. Keys only are read (bounded memory)."""
    kept = stage.file(PREVIOUS_LOAD)
    if not kept.exists():
        return None
    previous = pl.scan_parquet(kept).unique("key", keep="first")
    current = pl.scan_parquet(stage.file("load.parquet")).filter(pl.col("action") != "rejected")
    added = current.join(previous, on="key", how="anti").select(pl.len()).collect().item()
    changed = (
        current.filter(pl.col("action") == "updated")
        .join(previous, on="key", how="semi")
        .select(pl.len())
        .collect()
        .item()
    )
    missing = previous.join(current, on="key", how="anti").sort(LINE)
    count = missing.select(pl.len()).collect().item()
    preview = missing.head(PREVIEW_ROWS).select("key", pl.col(LINE).alias("previous_source_line")).collect()
    name = pl.scan_parquet(kept).select("delivery").head(1).collect()
    return DeliveryChange(
        previous=name.item() if name.height else "the previous delivery",
        added=added,
        changed=changed,
        missing=count,
        missing_preview=preview,
    )


def reported(stage: PartitionStage) -> None:
    """The change is in the load's metadata and the run's e-mail: the comparison is done."""
    stage.file(PREVIOUS_LOAD).unlink(missing_ok=True)
