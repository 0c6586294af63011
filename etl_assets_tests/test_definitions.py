"""The code location loads in every environment, and a broken settings file says where."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from etl_assets.settings import encrypt

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WriteSettings = Callable[[str], Path]


def validate(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``dagster definitions validate -w workspace.yaml`` from the project root."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "etl_assets" / "dagster.yaml", dagster_home / "dagster.yaml")
    return subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("env", ["dev", "test"])
def test_validate_passes_with_the_shipped_settings(tmp_path: Path, env: str) -> None:
    proc = validate(tmp_path, ETL_ENV=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful for code location etl_assets" in proc.stdout + proc.stderr


@pytest.mark.parametrize("env", ["dev", "test"])
def test_dg_check_defs_passes_without_a_warning(tmp_path: Path, env: str) -> None:
    """``dg check defs`` (Dagster 1.13's validate) from the project root, as the README says."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "etl_assets" / "dagster.yaml", dagster_home / "dagster.yaml")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "check", "defs"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home), "ETL_ENV": env, "VIRTUAL_ENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "All definitions loaded successfully" in output
    assert "warning" not in output.lower(), output


def test_dg_list_defs_shows_each_flow_from_its_yaml(tmp_path: Path) -> None:
    """``dg list defs``: every step of every flow, each from its own ``defs.yaml``."""
    import json

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "etl_assets" / "dagster.yaml", dagster_home / "dagster.yaml")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "list", "defs", "--json"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home), "ETL_ENV": "dev", "VIRTUAL_ENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sources = {a["asset_key"]: a["source"] for a in json.loads(proc.stdout)["assets"]}
    for flow in ("companies", "offers"):
        for step in ("extract", "transform", "load", "link"):
            assert sources[f"{flow}_{step}"].startswith(f"etl_assets/defs/{flow}/defs.yaml:")
    assert sources["kpi_report_load"].startswith("etl_assets/defs/kpi_report/defs.yaml:")


def test_dagster_finds_the_code_location_in_the_package(tmp_path: Path) -> None:
    """``-m etl_assets`` works as well as ``-m etl_assets.definitions``."""
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "etl_assets"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home), "ETL_ENV": "dev"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def prod_settings(key: bytes, **database: object) -> str:
    """A prod overlay with every connector configured and encrypted passwords."""
    return yaml.safe_dump(
        {
            "timezone": "Europe/Rome",
            "prod": {
                "require_encrypted_secrets": True,
                "database": {
                    "driver": "postgresql",
                    "host": "db.client.example",
                    "database": "etl",
                    "user": "etl",
                    "password": encrypt("db-secret", key),
                    **database,
                },
                "sftp": {
                    "host": "sftp.client.example",
                    "user": "etl",
                    "password": encrypt("sftp-secret", key),
                    "known_hosts": "/etc/etl_assets/known_hosts",
                    "folders": {"companies": "/outbound/companies", "offers": "/outbound/offers"},
                },
                "mail": {
                    "recipients": ["ops@client.example"],
                    "smtp": {
                        "host": "smtp.client.example",
                        "port": 587,
                        "starttls": True,
                        "user": "etl",
                        "password": encrypt("smtp-secret", key),
                    },
                },
            },
        }
    )


def test_validate_passes_in_prod_with_encrypted_passwords_and_the_key_in_the_environment(
    tmp_path: Path, write_settings: WriteSettings
) -> None:
    key = Fernet.generate_key()
    write_settings(prod_settings(key))
    proc = validate(tmp_path, ETL_ENV="prod", ETL_SECRET_KEY=key.decode())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validate_fails_in_prod_on_a_plain_password_naming_the_key(
    tmp_path: Path, write_settings: WriteSettings
) -> None:
    key = Fernet.generate_key()
    write_settings(prod_settings(key, password="plain-db-secret"))
    proc = validate(tmp_path, ETL_ENV="prod", ETL_SECRET_KEY=key.decode())
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "database.password is a plain password" in output
    assert "plain-db-secret" not in output


def test_validate_fails_on_a_broken_settings_file_naming_the_dotted_key(
    tmp_path: Path, write_settings: WriteSettings
) -> None:
    write_settings("database:\n  driver: sqlite\ntest:\n  database:\n    port: 99999\n  sftp:\n    hots: x\n")
    proc = validate(tmp_path, ETL_ENV="test")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "Validation failed for code location etl_assets" in output
    assert "database.port: Input should be less than or equal to 65535" in output
    assert "sftp.hots: Extra inputs are not permitted" in output
    assert "settings.yaml (env test)" in output
