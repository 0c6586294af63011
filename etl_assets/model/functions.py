"""A Python function a declaration names by path: a Method's function, a flow's hook.

One importer for every such name, so a name that works in one place works in all of them:
``module:function`` or ``module.function``; a client's module sits beside its flow's
declaration (``model.declarations.importable``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any


def split_path(path: str) -> tuple[str, str]:
    """(module, function) of ``module:function`` or ``module.function``."""
    module, colon, name = path.partition(":")
    if not colon:
        module, _, name = path.rpartition(".")
    return module, name


def load_function(path: str, what: str = "Method") -> Callable[..., Any]:
    """The function ``path`` names; ``what`` (Method, hook on_failure...) starts the message of
    a name that does not resolve."""
    module, name = split_path(path)
    if not module or not name:
        raise ValueError(f"{what} {path!r}: name it module:function")
    try:
        function = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        raise ValueError(f"{what} {path!r}: module {module} cannot be imported ({exc})") from None
    if not callable(function):
        raise ValueError(f"{what} {path!r}: {name} is not a function of {module}")
    return function


def call_problem(path: str, what: str) -> str | None:
    """Why ``path`` cannot be called as ``function(context)`` (it does not resolve, its module
    fails to import, or it takes other arguments); None if it can."""
    try:
        signature = inspect.signature(load_function(path, what))
    except ValueError as exc:
        return str(exc)
    except Exception as exc:  # the module's own fault when imported
        return f"{what} {path!r}: {type(exc).__name__}: {exc}"
    try:
        signature.bind(None)
    except TypeError as exc:
        return f"{what} ({path}) is called as function(context): {exc}"
    return None


def source_file(function: Callable[..., Any]) -> Path | None:
    """The file of the module defining ``function`` (None for a built-in)."""
    try:
        found = inspect.getsourcefile(inspect.getmodule(function) or function)
    except TypeError:
        return None
    return Path(found) if found else None
