"""Deep merge of the settings file's global keys with one environment's overlay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``overlay``; dicts present in both merge key by key.

    The overlay wins for every other value, lists included: an environment that lists
    recipients replaces the global list rather than appending to it (Talend contexts
    behave the same way, and appending would make a key impossible to shorten).
    """
    merged: dict[str, Any] = dict(base)
    for key, value in overlay.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def set_dotted(target: dict[str, Any], dotted: list[str], value: Any) -> None:
    """Set ``target[a][b][c] = value`` for ``dotted == ["a", "b", "c"]``, creating dicts."""
    node = target
    for part in dotted[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[dotted[-1]] = value
