"""The options of a target's load mode, checked against the flow's map (engine/load/modes.py
loads them)."""

from __future__ import annotations

from typing import Literal, Protocol

LoadMode = Literal["upsert", "snapshot", "append", "history"]
HISTORY_COLUMNS = ("valid_from", "valid_to", "is_current")  # a history target's own columns


class ModeOptions(Protocol):
    mode: str
    hard_delete: bool
    tracked: list[str] | None


def mode_fault(target: ModeOptions, fields: list[str]) -> str | None:
    """What is wrong with the target's mode options, said as the declaration's fix."""
    if target.hard_delete and target.mode != "snapshot":
        return f"target.hard_delete: true goes with mode: snapshot only (mode is {target.mode})"
    if target.tracked is None:
        clash = [f for f in HISTORY_COLUMNS if f in fields] if target.mode == "history" else []
        return f"map fields {clash} clash with the history mode's own columns: rename them" if clash else None
    if target.mode != "history":
        return f"target.tracked goes with mode: history only (mode is {target.mode})"
    unknown = [f for f in target.tracked if f not in fields]
    if unknown or not target.tracked:
        return f"target.tracked {unknown or '[]'}: name map fields (or omit tracked: every map field)"
    clash = [f for f in HISTORY_COLUMNS if f in fields]
    return f"map fields {clash} clash with the history mode's own columns: rename them" if clash else None
