"""File names from outside (a client's SFTP folder, the import folder) are data, not paths.

A name that is not valid UTF-8, or holds a control character (NUL included), ``/``, ``\\`` or
``..``, is never used: no path is built from it and no step sees it. It is refused with a
warning that shows it escaped (``'companies_\\xff\\xfe.csv'``), so one such file in a folder
never breaks the extracts, the sensor or housekeeping of the files beside it.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("etl_assets.files")


def name_fault(raw: bytes) -> str | None:
    """Why the name is refused, or None for a name we use."""
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not valid UTF-8"
    if "\x00" in name:
        return "holds a NUL"
    if any(not c.isprintable() for c in name):
        return "holds a control character"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if ".." in name:
        return "holds '..'"
    return None


def shown(raw: bytes) -> str:
    """The name for a message: quoted, undecodable bytes and control characters escaped."""
    text = raw.decode("utf-8", "backslashreplace")
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return f"'{escaped}'"


def accepted(raw: bytes | str, folder: str, refused: list[str]) -> str | None:
    """The name as text when we use it; else None, with the reason added to ``refused``."""
    data = os.fsencode(raw) if isinstance(raw, str) else raw
    fault = name_fault(data)
    if fault is None:
        return data.decode("utf-8")
    reason = f"{shown(data)} in {folder}: {fault}, skipped"
    log.warning("file name refused: %s", reason)
    refused.append(reason)
    return None
