"""A step's staged output reused instead of computed again (issue 23): an identical
re-delivery, a replay or a retry costs no parse and no map.

Every staged file records in its parquet metadata what it was made from (``StagedWriter(tags=...)``):
the stage's version, and extract the source file's name, size and sha256, transform the one
write of ``extract.parquet`` it read (``MADE_TAG``, new on every write). A step reuses its
output only when those are exactly what it would use now; a file written by anything else
carries no tag and is never reused. Steps are functions of their input and version, which is
what the versions (model/versions.py) already stand for.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from etl_assets.engine.columns import LINE, SOURCE_FILE
from etl_assets.engine.staging import (
    INPUT_TAG,
    MADE_TAG,
    SHA256_TAG,
    SIZE_TAG,
    SOURCE_TAG,
    VERSION_TAG,
    staged_tags,
)


def extract_tags(file_name: str, size: int, version: str) -> dict[str, str]:
    """What a staged extract is made from, but its bytes' sha256 (known once they are read)."""
    return {SOURCE_TAG: file_name, SIZE_TAG: str(size), VERSION_TAG: version}


def transform_tags(extract_path: Path, version: str) -> dict[str, str]:
    """What transform's outputs are made from: the one write of the staged extract that its tag
    names, and this version of transform; nothing when the extract has no tag."""
    made = staged_tags(extract_path).get(MADE_TAG)
    return {INPUT_TAG: made, VERSION_TAG: version} if made else {}


def same_delivery(staged: Path, made_from: dict[str, str]) -> str | None:
    """The sha256 the staged extract was parsed from, when it was made from a file of this name
    and size by this version of extract (only a file of the same size can be the same bytes)."""
    tags = staged_tags(staged)
    if MADE_TAG not in tags or any(tags.get(k) != v for k, v in made_from.items()):
        return None
    return tags.get(SHA256_TAG)


def reusable_outputs(folder: Path, names: tuple[str, ...], made_from: dict[str, str]) -> bool:
    """Whether these staged files were all written by one run, made from ``made_from``."""
    found = [staged_tags(folder / name) for name in names]
    made = {tags.get(MADE_TAG) for tags in found}
    if None in made or len(made) != 1:
        return False
    return all(tags.get(k) == v for tags in found for k, v in made_from.items())


def staged_columns(path: Path) -> list[str]:
    """The source columns of a staged extract, from its schema (the file is not read)."""
    return [c for c in pq.ParquetFile(path).schema_arrow.names if c not in (LINE, SOURCE_FILE)]
