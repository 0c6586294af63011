"""The SFTP server failing: the sshd process serving the download killed in the middle of it,
and sshd down when a run starts (then up again). A dropped line is retried with a new session;
a half-downloaded file is never taken for the file."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import dagster as dg
import pytest

from etl_assets_tests.reliability.support import (
    DAY,
    FILE,
    ROWS,
    assert_nothing_looks_complete_that_is_not,
    assert_same_as_clean,
    companies_file,
    partial_files,
    poll,
    put_aged,
    run_in_thread,
    scan,
    stage_dir,
)
from etl_assets_tests.services.sshd import _descendants
from etl_assets_tests.test_flows.conftest import FlowEnv


def serving(env: FlowEnv, remote_file: Path) -> list[int]:
    """The sshd session processes that hold ``remote_file`` open: the ones sending it."""
    found = []
    for pid in _descendants(env.sshd.pid or -1):
        for fd in scan(Path(f"/proc/{pid}/fd")):
            try:
                if os.readlink(fd.path) == str(remote_file):
                    found.append(pid)
                    break
            except OSError:
                continue
    return found


def test_a_download_cut_by_killing_its_sshd_process_is_fetched_again_whole(
    flow_env: FlowEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """The sshd process sending the file is stopped as soon as it holds the file open, found
    with the partial download on our side smaller than the file, then killed: paramiko sees the
    line drop, the resource opens a new session and downloads again; the staged file is whole."""
    data = companies_file(ROWS)
    remote = put_aged(flow_env, FILE, data)
    raw = stage_dir(flow_env.home) / "raw"
    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")
    result = run_in_thread(flow_env, DAY)
    senders = poll(lambda: serving(flow_env, remote), 60, "the sshd process sending the file", 0.0005)
    for pid in senders:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(0.3)  # what was in flight lands; the rest waits in the stopped process
    partial = [p for p in scan(raw) if p.name.endswith(".part")]
    assert len(partial) == 1 and partial[0].stat().st_size < len(data), "the download was not cut mid-way"
    for pid in senders:
        os.kill(pid, signal.SIGKILL)
    run = result()
    assert run.success
    assert any("failed" in r.getMessage() and "retry 1/1" in r.getMessage() for r in caplog.records)
    assert (raw / FILE).read_bytes() == data
    assert not partial_files(flow_env.home)
    assert_nothing_looks_complete_that_is_not(flow_env.home, [(FILE, data)])
    assert_same_as_clean(flow_env, [(DAY, {FILE: data})])


def test_sshd_down_at_the_start_fails_the_run_naming_the_server_then_a_rerun_lands(flow_env: FlowEnv) -> None:
    """No SFTP server at all: the run fails at extract after its retries, says which server is
    unreachable (the UI and the e-mail), stages and loads nothing; sshd back, the re-run lands."""
    data = companies_file(ROWS)
    put_aged(flow_env, FILE, data)
    flow_env.sshd.stop()
    try:
        run = flow_env.run(DAY)
    finally:
        flow_env.sshd.start()
    assert not run.success
    failure = next(e for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    where = f"sftp {flow_env.sshd.user}@{flow_env.sshd.host}:{flow_env.sshd.port}"
    assert f"{where}: host unreachable" in failure.event_specific_data.error.message
    (message,) = flow_env.smtp.wait_for(1)
    assert message["Subject"].startswith(f"[etl_assets][test] companies {DAY} failed: sftp: {where}: ")
    assert flow_env.query("select count(*) from pg_tables where tablename = 'accounts'") == [(0,)]
    assert assert_nothing_looks_complete_that_is_not(flow_env.home, [(FILE, data)]) == []

    again = flow_env.run(DAY)
    assert again.success
    assert_same_as_clean(flow_env, [(DAY, {FILE: data})])
