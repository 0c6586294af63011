"""The reliability suite reuses the whole-flow environment of ``test_flows``: a fresh database
on the private PostgreSQL, a folder on the real sshd, the real SMTP server, real Dagster runs."""

from etl_assets_tests.test_flows.conftest import flow_env  # noqa: F401  (the fixture, re-exported)
