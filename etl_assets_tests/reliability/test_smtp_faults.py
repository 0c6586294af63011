"""The SMTP server down when a run has something to tell: the run still lands, its e-mail waits
in ``ETL_HOME/logs/unsent/`` and goes out exactly once, with the next run after the server is
back (before that run's own e-mail)."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from etl_assets_tests.reliability.support import (
    DAY,
    FILE,
    ROWS,
    assert_same_as_clean,
    companies_file,
    put_aged,
)
from etl_assets_tests.test_flows.conftest import FlowEnv


def test_smtp_down_the_run_lands_and_its_email_goes_out_once_with_the_next_run(
    flow_env: FlowEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETL__MAIL__SMTP__BACKOFF_SECONDS", "0.1")  # the mailer's own retries, shorter
    data = companies_file(ROWS)
    put_aged(flow_env, FILE, data)
    unsent = flow_env.home / "logs" / "unsent"

    flow_env.smtp.stop()
    try:
        assert flow_env.run(DAY).success  # rows rejected, the e-mail cannot go: the data lands anyway
    finally:
        flow_env.smtp.start()
    (kept,) = unsent.glob("*.eml")
    waiting = message_from_bytes(kept.read_bytes(), policy=policy.default)
    subject = "[etl_assets][test] companies 2026-01-15: 5 rows rejected"
    assert waiting["Subject"] == subject
    attached = {p.get_filename(): p.get_payload(decode=True) for p in waiting.iter_attachments()}
    errors = flow_env.home / "errors" / "companies" / DAY
    assert attached == {
        "companies_2026-01-15_transform.csv": (errors / "transform.csv").read_bytes(),
        "companies_2026-01-15_link.csv": (errors / "link.csv").read_bytes(),
    }
    assert flow_env.smtp.messages() == []

    assert flow_env.run(DAY).success  # the same file again: the kept e-mail first, then its own
    kept_one, own = flow_env.smtp.wait_for(2)
    assert kept_one["Message-ID"] == waiting["Message-ID"] != own["Message-ID"]
    assert {p.get_filename(): p.get_payload(decode=True) for p in kept_one.iter_attachments()} == attached
    assert own["Subject"] == subject
    assert list(unsent.iterdir()) == []

    assert flow_env.run(DAY).success  # and the kept one is not sent again
    ids = [m["Message-ID"] for m in flow_env.smtp.wait_for(3)]
    assert len(ids) == 3 and ids.count(waiting["Message-ID"]) == 1, ids
    assert_same_as_clean(flow_env, [(DAY, {FILE: data})])
