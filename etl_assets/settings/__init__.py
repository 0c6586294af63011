"""Environments, encrypted secrets and validation of the one settings file."""

from etl_assets.settings.loader import SettingsError, load_settings, selected_env, settings_file
from etl_assets.settings.models import ENVIRONMENTS, Settings
from etl_assets.settings.secrets import SecretError, decrypt, encrypt, init_key

__all__ = [
    "ENVIRONMENTS",
    "SecretError",
    "Settings",
    "SettingsError",
    "decrypt",
    "encrypt",
    "init_key",
    "load_settings",
    "selected_env",
    "settings_file",
]
