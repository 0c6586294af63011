"""The settings file: deep merge, environment selection, overrides, validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl_assets.settings import SettingsError, load_settings
from etl_assets.settings.merge import deep_merge

SETTINGS = """
timezone: Europe/Rome
database:
  driver: postgresql
  host: db.global
  port: 5432
  user: etl
mail:
  sender: etl@client.example
  recipients: [ops@client.example, it@client.example]
dev:
  database:
    driver: sqlite
test:
  database:
    host: db.test
prod:
  database:
    host: db.prod
    port: 6543
  mail:
    recipients: [oncall@client.example]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def test_deep_merge_merges_nested_dicts_key_by_key_and_overlay_wins() -> None:
    base = {"a": 1, "db": {"host": "x", "port": 1, "opts": {"ssl": False, "t": 5}}, "l": [1, 2]}
    overlay = {"db": {"port": 2, "opts": {"ssl": True}}, "l": [3]}
    assert deep_merge(base, overlay) == {
        "a": 1,
        "db": {"host": "x", "port": 2, "opts": {"ssl": True, "t": 5}},
        "l": [3],
    }
    assert base["db"]["port"] == 1  # inputs untouched


@pytest.mark.parametrize(
    ("env", "driver", "host", "port", "recipients"),
    [
        ("dev", "sqlite", "db.global", 5432, ["ops@client.example", "it@client.example"]),
        ("test", "postgresql", "db.test", 5432, ["ops@client.example", "it@client.example"]),
        ("prod", "postgresql", "db.prod", 6543, ["oncall@client.example"]),
    ],
)
def test_environment_overlay_holds_only_what_changes(
    tmp_path: Path, env: str, driver: str, host: str, port: int, recipients: list[str]
) -> None:
    settings = load_settings(env, write(tmp_path, SETTINGS))
    assert settings.env == env
    assert (settings.database.driver, settings.database.host, settings.database.port) == (driver, host, port)
    assert settings.database.user == "etl"  # global key kept in every environment
    assert settings.mail.recipients == recipients
    assert settings.mail.sender == "etl@client.example"


def test_etl_env_selects_and_defaults_to_dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, SETTINGS)
    assert load_settings(path=path).env == "dev"
    monkeypatch.setenv("ETL_ENV", "test")
    assert load_settings(path=path).database.host == "db.test"
    assert load_settings("prod", path).database.host == "db.prod"  # the argument (-e) wins


def test_unknown_environment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="unknown environment 'staging'"):
        load_settings("staging", write(tmp_path, SETTINGS))


def test_environment_variable_overrides_one_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL__DATABASE__PORT", "7777")
    monkeypatch.setenv("ETL__MAIL__SENDER", "other@client.example")
    settings = load_settings("test", write(tmp_path, SETTINGS))
    assert settings.database.port == 7777
    assert settings.mail.sender == "other@client.example"
    assert settings.database.host == "db.test"


def test_etl_home_overrides_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_HOME", "/srv/etl")
    assert load_settings("dev", write(tmp_path, SETTINGS)).home == "/srv/etl"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("database:\n  extra_key: 1\n", r"database\.extra_key: Extra inputs are not permitted"),
        ("database:\n  port: many\n", r"database\.port: Input should be a valid integer"),
        ("sftp:\n  host: h\n", r"sftp\.user: Field required"),
        ("sftp:\n  host: h\n  user: u\n", r"sftp: Value error, give a password or a private_key"),
        ("timezone: Mars/Olympus\n", r"timezone: Value error, unknown timezone"),
        ("staging:\n  database: {}\n", r"staging: Extra inputs are not permitted"),
        ("database: [1, 2\n", r"line \d+: not valid YAML"),
        ("test: 3\n", r"test: must be a mapping"),
    ],
)
def test_bad_settings_fail_at_start_with_the_dotted_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError, match=message) as info:
        load_settings("test", path)
    assert str(path) in str(info.value)


def test_unknown_host_keys_are_refused_outside_dev(tmp_path: Path) -> None:
    text = "sftp:\n  host: h\n  user: u\n  private_key: /k\n  allow_unknown_host_keys: true\n"
    assert load_settings("dev", write(tmp_path, text)).sftp is not None
    with pytest.raises(SettingsError, match="allow_unknown_host_keys is allowed only in dev"):
        load_settings("test", write(tmp_path, text))


def test_missing_settings_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings("dev", tmp_path / "nope.yaml")


@pytest.mark.parametrize("env", ["dev", "test", "prod"])
def test_packaged_settings_file_loads_in_every_environment(env: str) -> None:
    assert load_settings(env).env == env
