"""The SDK's tests: a project of the dev environment on this test's own ETL_HOME, and two
installations (``homes``) for the archives' tests."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from etl_assets.sdk import Project
from etl_assets.settings import load_settings
from etl_assets_tests.test_flows.conftest import flow_env  # noqa: F401 - whole runs, for the tests that need one


@pytest.fixture
def project(
    isolated_env: Path, write_settings: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> Project:
    """Its client flows go to ``ETL_HOME/flows`` (the default ``flows.dirs``)."""
    write_settings("dev: {}\n")
    monkeypatch.setenv("ETL_ENV", "dev")
    return Project.open()


RULES = "supplier_rules"  # a Method module beside the suppliers flow
RULES_SOURCE = (
    '"""Rules of the suppliers flow."""\n\nimport polars as pl\n\n\ndef reverse(raw: pl.Expr) -> pl.Expr:\n'
    "    return raw.str.reverse()\n\n\ndef tagged(raw: pl.Expr, tag: str) -> pl.Expr:\n"
    "    return pl.concat_str([pl.lit(tag), raw])\n"
)


@dataclass
class Homes:
    """Two installations: ``source`` (ETL_HOME of the test) and ``target`` (a fresh home)."""

    source: Project
    target: Project
    tmp: Path

    @property
    def target_home(self) -> Path:
        return Path(self.target.settings.home)

    def supplier(self, name: str = "suppliers", **edits: object) -> None:
        flow = self.source.create_flow(name, template="companies")
        for key, value in edits.items():
            setattr(flow, key, value)
        self.source.update_flow(flow)


@pytest.fixture
def homes(
    isolated_env: Path,
    tmp_path: Path,
    write_settings: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Homes]:
    write_settings("dev: {}\n")
    monkeypatch.setenv("ETL_ENV", "dev")
    settings = load_settings("dev")
    other = settings.model_copy(update={"home": str(tmp_path / "home_b")})
    yield Homes(Project(settings), Project(other), tmp_path)
    sys.modules.pop(RULES, None)  # the Method module the target imported while compiling
