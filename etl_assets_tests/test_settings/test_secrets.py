"""Encrypted passwords: round trip, key handling, the dev / prod policy."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from etl_assets.settings import SecretError, SettingsError, decrypt, encrypt, init_key, load_settings

PASSWORD = "S3cret-pa55;word"


def settings_with_password(tmp_path: Path, password: str, extra: str = "") -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(f"{extra}database:\n  driver: postgresql\n  password: '{password}'\n")
    return path


def test_encrypt_decrypt_round_trip_with_key_file(tmp_path: Path) -> None:
    key_path = init_key()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    token = encrypt(PASSWORD)
    assert token.startswith("enc:") and PASSWORD not in token
    assert decrypt(token) == PASSWORD
    assert encrypt(PASSWORD) != token  # a fresh IV every time


def test_key_from_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv("ETL_SECRET_KEY", key.decode())
    token = encrypt(PASSWORD)
    assert Fernet(key).decrypt(token[4:].encode()).decode() == PASSWORD


def test_init_key_refuses_to_overwrite() -> None:
    init_key()
    with pytest.raises(SecretError, match="exists already"):
        init_key()


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(SecretError, match="no secret key: set ETL_SECRET_KEY or create the key file"):
        encrypt(PASSWORD)


def test_token_from_another_key_names_the_setting_not_the_value(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ETL_SECRET_KEY", Fernet.generate_key().decode())
    token = encrypt(PASSWORD)
    monkeypatch.setenv("ETL_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(SettingsError) as info:
        load_settings("prod", settings_with_password(tmp_path, token))
    assert "database.password: the token cannot be decrypted with the current key" in str(info.value)
    assert token not in str(info.value)


def test_encrypted_password_is_accepted_in_prod_and_kept_as_a_token(tmp_path: Path) -> None:
    init_key()
    token = encrypt(PASSWORD)
    settings = load_settings("prod", settings_with_password(tmp_path, token))
    assert settings.database.password == token
    assert decrypt(settings.database.password) == PASSWORD
    assert PASSWORD not in settings.model_dump_json()


def test_plain_password_is_refused_in_prod_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings("prod", settings_with_password(tmp_path, PASSWORD))
    assert "database.password is a plain password, refused because prod" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_a_source_connector_has_its_own_password_under_the_same_policy(tmp_path: Path) -> None:
    init_key()
    token = encrypt("crm-secret")
    source = "sources:\n  crm: {{driver: postgresql, database: crm, password: '{}'}}\n"
    path = settings_with_password(tmp_path, encrypt(PASSWORD), extra=source.format("crm-secret"))
    with pytest.raises(SettingsError) as info:
        load_settings("prod", path)
    assert "sources.crm.password is a plain password, refused because prod" in str(info.value)
    assert "crm-secret" not in str(info.value)
    settings = load_settings(
        "prod", settings_with_password(tmp_path, encrypt(PASSWORD), source.format(token))
    )
    assert decrypt(settings.sources["crm"].password) == "crm-secret"
    assert "crm-secret" not in settings.model_dump_json()


def test_plain_password_is_refused_where_settings_require_encryption(tmp_path: Path) -> None:
    path = settings_with_password(tmp_path, PASSWORD, extra="require_encrypted_secrets: true\n")
    with pytest.raises(SettingsError, match="require_encrypted_secrets is true"):
        load_settings("dev", path)


def test_plain_password_works_in_dev_with_a_warning(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        settings = load_settings("dev", settings_with_password(tmp_path, PASSWORD))
    assert "database.password is a plain password" in caplog.text
    assert PASSWORD not in caplog.text
    # Only a token of it is kept, so resource config and the UI never hold the value.
    assert settings.database.password != PASSWORD
    assert decrypt(settings.database.password) == PASSWORD


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl_assets.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )


def test_cli_encrypt_password_from_argument_and_stdin() -> None:
    assert run_cli("init-key").returncode == 0
    from_arg = run_cli("encrypt-password", PASSWORD)
    from_stdin = run_cli("encrypt-password", stdin=PASSWORD + "\n")
    for result in (from_arg, from_stdin):
        assert result.returncode == 0, result.stderr
        token = result.stdout.strip()
        assert decrypt(token) == PASSWORD


def test_cli_without_key_exits_2_with_one_line() -> None:
    result = run_cli("encrypt-password", PASSWORD)
    assert result.returncode == 2
    assert result.stderr.startswith("etl-assets: no secret key")
    assert len(result.stderr.strip().splitlines()) == 1
    assert PASSWORD not in result.stdout + result.stderr


def test_cli_settings_error_exits_2(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ETL_SETTINGS", str(settings_with_password(tmp_path, PASSWORD)))
    result = run_cli("test-connections", "-e", "prod")
    assert result.returncode == 2
    assert "database.password is a plain password" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
