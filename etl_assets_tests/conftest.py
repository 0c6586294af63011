"""Shared fixtures: an isolated environment per test, and the real services on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test sees the developer's ETL_* variables or key file; ETL_HOME is private."""
    for name in list(os.environ):
        if name.startswith("ETL_"):
            monkeypatch.delenv(name)
    home = tmp_path / "etl_home"
    monkeypatch.setenv("ETL_HOME", str(home))
    monkeypatch.setenv("ETL_SECRET_KEY_FILE", str(tmp_path / "keys" / "secret.key"))
    yield home
