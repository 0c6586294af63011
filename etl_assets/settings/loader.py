"""Load the one settings file for one environment: merge, override, validate, protect.

Order: global keys, deep-merged with the ``dev``/``test``/``prod`` overlay, then
``ETL__SECTION__KEY`` environment variables, then ``ETL_HOME``; then pydantic validation;
then every password is checked against the policy and replaced by a token.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from etl_assets.settings.merge import deep_merge, set_dotted
from etl_assets.settings.models import ENVIRONMENTS, Settings, iter_secret_fields
from etl_assets.settings.secrets import SecretError, decrypt, is_encrypted, wrap_plain

log = logging.getLogger("etl_assets.settings")

DEFAULT_SETTINGS_FILE = Path(__file__).with_name("settings.yaml")
OVERRIDE_PREFIX = "ETL__"


class SettingsError(Exception):
    """The settings cannot be used; the message names the file and the dotted key."""


def settings_file() -> Path:
    """``ETL_SETTINGS`` when set, else the settings file shipped with the package."""
    return Path(os.environ.get("ETL_SETTINGS") or DEFAULT_SETTINGS_FILE)


def selected_env(env: str | None = None) -> str:
    """The environment asked for: the argument, else ``ETL_ENV``, else dev."""
    chosen = env or os.environ.get("ETL_ENV") or "dev"
    if chosen not in ENVIRONMENTS:
        raise SettingsError(f"unknown environment {chosen!r}: choose one of {', '.join(ENVIRONMENTS)}")
    return chosen


def load_settings(env: str | None = None, path: Path | None = None) -> Settings:
    """The validated settings of ``env`` with every password turned into a token."""
    env = selected_env(env)
    path = path or settings_file()
    raw = _read_yaml(path)
    merged = deep_merge({k: v for k, v in raw.items() if k not in ENVIRONMENTS}, raw.get(env) or {})
    merged = _apply_overrides(merged, os.environ)
    merged["env"] = env
    if os.environ.get("ETL_HOME"):
        merged["home"] = os.environ["ETL_HOME"]
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(f"{path} (env {env}): {_describe(exc)}") from None
    _protect_secrets(settings, path)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise SettingsError(f"settings file {path} not found (set ETL_SETTINGS)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SettingsError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: the top level must be a mapping of keys")
    for env in ENVIRONMENTS:
        if data.get(env) is not None and not isinstance(data[env], dict):
            raise SettingsError(f"{path}: {env}: must be a mapping of the keys that change")
    return data


def _apply_overrides(merged: dict[str, Any], environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """``ETL__DATABASE__HOST=db1`` sets ``database.host``; values are read as YAML scalars."""
    result = deep_merge(merged, {})
    for name, text in sorted(environ.items()):
        if not name.startswith(OVERRIDE_PREFIX) or len(name) <= len(OVERRIDE_PREFIX):
            continue
        dotted = [part.lower() for part in name[len(OVERRIDE_PREFIX) :].split("__")]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        set_dotted(result, dotted, value)
    return result


def _describe(exc: ValidationError) -> str:
    """One line per error with the dotted key; input values are left out (secrets)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)


def _protect_secrets(settings: Settings, path: Path) -> None:
    """Check each password against the policy and keep only a token of it."""
    for dotted, owner, field in iter_secret_fields(settings):
        value: str = getattr(owner, field)
        if is_encrypted(value):
            try:
                decrypt(value, dotted)
            except SecretError as exc:
                raise SettingsError(f"{path} (env {settings.env}): {exc}") from None
            continue
        if settings.secrets_required:
            why = "prod" if settings.env == "prod" else "require_encrypted_secrets is true"
            raise SettingsError(
                f"{path} (env {settings.env}): {dotted} is a plain password, refused because "
                f"{why}: encrypt it with 'etl-assets encrypt-password' and paste the enc: token"
            )
        log.warning(
            "%s: %s is a plain password; allowed in %s only, encrypt it before release",
            path,
            dotted,
            settings.env,
        )
        setattr(owner, field, wrap_plain(value, dotted))
