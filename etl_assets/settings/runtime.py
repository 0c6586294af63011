"""The settings of the running process, loaded once when definitions are built."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from etl_assets.settings.loader import load_settings, selected_env, settings_file
from etl_assets.settings.models import Settings


@lru_cache(maxsize=8)
def _cached(env: str, path: str, mtime_ns: int, environ: tuple[tuple[str, str], ...]) -> Settings:
    return load_settings(env, Path(path))


def current_settings() -> Settings:
    """ETL_ENV's settings from ETL_SETTINGS, loaded again only when the file or an ETL_*
    variable changed."""
    path = settings_file()
    mtime_ns = path.stat().st_mtime_ns if path.exists() else 0
    environ = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("ETL_")))
    return _cached(selected_env(), str(path), mtime_ns, environ)
