"""The SDK's tests: a project of the dev environment on this test's own ETL_HOME."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from etl_assets.sdk import Project


@pytest.fixture
def project(
    isolated_env: Path, write_settings: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> Project:
    """Its client flows go to ``ETL_HOME/flows`` (the default ``flows.dirs``)."""
    write_settings("dev: {}\n")
    monkeypatch.setenv("ETL_ENV", "dev")
    return Project.open()
