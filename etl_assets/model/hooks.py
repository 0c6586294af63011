"""A flow's ``hooks:`` as declared: which stage boundaries there are, and each named function
resolved and bound to the one argument it is called with (``engine/hooks.py`` calls them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from etl_assets.model.functions import call_problem, load_function, source_file

# Stage boundaries a flow's hooks run at, as Flask Data Pipes' decorators.
HookName = Literal["pre_extract", "post_transform", "on_load_commit", "on_failure"]
HOOK_NAMES: tuple[str, ...] = HookName.__args__


def hook_problems(hooks: Any) -> list[tuple[tuple[str | int, ...], Any, str]]:
    """(loc, value, message) of each declared hook that does not resolve, or does not take
    ``function(context)``. Unknown hook names and non-strings are left to pydantic."""
    found: list[tuple[tuple[str | int, ...], Any, str]] = []
    for name, path in hooks.items() if isinstance(hooks, dict) else ():
        if name not in HOOK_NAMES or not isinstance(path, str):
            continue
        problem = call_problem(path, f"hook {name}")
        if problem is not None:
            found.append((("hooks", name), path, problem))
    return found


def hook_sources(hooks: dict[str, str]) -> list[Path]:
    """The module files the hooks are defined in (they count in the flow's code version)."""
    found = (source_file(load_function(path, f"hook {name}")) for name, path in hooks.items())
    return [path for path in found if path is not None and path.is_file()]
