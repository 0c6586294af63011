"""The settings of the running process, loaded once when definitions are built."""

from __future__ import annotations

from functools import lru_cache

from etl_assets.settings.loader import load_settings, selected_env, settings_file
from etl_assets.settings.models import Settings


@lru_cache(maxsize=8)
def _cached(env: str, path: str) -> Settings:
    return load_settings(env, settings_file().__class__(path))


def current_settings() -> Settings:
    """ETL_ENV's settings from ETL_SETTINGS (cached per environment and file)."""
    return _cached(selected_env(), str(settings_file()))
