"""A runtime folder under ETL_HOME that cannot take a write: a small tmpfs mounted over it (a
full disk) or a read-only bind mount of it. The run fails with a line that names the folder and
says it is full or not writable (not a library's words about a temporary file, or nothing at
all), nothing half-written looks complete, and once the folder is back a run lands as a clean
run does. Needs root and mount(8) (the tests' machines have both); skipped where mounting is
refused."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from etl_assets.resources.folders import FoldersResource
from etl_assets_tests.reliability.support import (
    DAY,
    FILE,
    ROWS,
    assert_nothing_looks_complete_that_is_not,
    assert_same_as_clean,
    clean_run,
    companies_file,
    partial_files,
    put_aged,
    retries,
)
from etl_assets_tests.test_flows.conftest import FlowEnv


class Mounts:
    """Mounts over folders of the test's ETL_HOME; what is still mounted goes at teardown."""

    def __init__(self) -> None:
        self.mounted: list[Path] = []

    def over(self, folder: Path, *options: str) -> Path:
        """``mount OPTIONS folder`` (the folder made first); skips the test where refused."""
        folder.mkdir(parents=True, exist_ok=True)
        self._mount(*options, str(folder))
        self.mounted.append(folder)
        return folder

    def read_only(self, folder: Path) -> Path:
        """The folder bound onto itself, then remounted read-only."""
        self.over(folder, "--bind", str(folder))
        self._mount("-o", "remount,bind,ro", str(folder))
        return folder

    @staticmethod
    def _mount(*arguments: str) -> None:
        done = subprocess.run(["mount", *arguments], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mount {' '.join(arguments)} refused here: {done.stderr.strip()}")

    def undo(self) -> None:
        """Unmount the last one (a busy one is detached anyway)."""
        folder = self.mounted.pop()
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    """Mounts for the test; none outlives it (a test that fails midway leaves nothing mounted)."""
    mine = Mounts()
    yield mine
    while mine.mounted:
        mine.undo()


def failure_line(run: dg.ExecuteInProcessResult) -> str:
    assert not run.success
    failure = next(e for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    error = failure.event_specific_data.error
    return error.message.partition("Failure: ")[2]  # the partition's line, as the e-mail has it


def fill(folder: Path, leave: int) -> None:
    """Take all of the folder's disk but ``leave`` bytes (a file of the rest, allocated)."""
    stats = os.statvfs(folder)
    ballast = stats.f_bavail * stats.f_frsize - leave
    with (folder / ".ballast").open("wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, ballast)


def test_a_full_data_folder_is_named_and_nothing_half_written_looks_complete(
    flow_env: FlowEnv, mounts: Mounts
) -> None:
    """ETL_HOME/data on 1 MiB: the 5 MB download does not fit. Then on a disk with room for the
    download but not for its staged parquet. Each time the run fails naming ETL_HOME/data as
    full, the e-mail says so, and no file under a final name is partial."""
    data = companies_file(ROWS)
    put_aged(flow_env, FILE, data)
    folder = flow_env.home / "data"
    full = f"ETL_HOME folder data ({folder}) is full: no space left on device"

    mounts.over(folder, "-t", "tmpfs", "-o", "size=1m", "tmpfs")
    line = failure_line(flow_env.run(DAY))
    assert line.startswith(f"extract: {full}"), line
    assert "sftp" not in line and "Errno" not in line
    (message,) = flow_env.smtp.wait_for(1)
    assert message["Subject"].startswith(f"[etl_assets][test] companies {DAY} failed: extract: {full}")
    assert assert_nothing_looks_complete_that_is_not(flow_env.home, [(FILE, data)]) == []
    assert not partial_files(flow_env.home)
    mounts.undo()

    mounts.over(folder, "-t", "tmpfs", "-o", "size=64m", "tmpfs")
    fill(folder, leave=len(data) + (256 << 10))  # the download and its checksum fit, then no more
    line = failure_line(flow_env.run(DAY))
    assert line.startswith(f"extract: {full}"), line
    found = assert_nothing_looks_complete_that_is_not(flow_env.home, [(FILE, data)])
    assert f"data/companies/{DAY}/raw/{FILE}" in found  # the download is whole; no staged file is there
    assert not [name for name in found if name.endswith(".parquet")], found
    mounts.undo()

    assert flow_env.run(DAY).success
    assert_same_as_clean(flow_env, [(DAY, {FILE: data})])


def test_a_read_only_or_full_errors_folder_is_named_and_a_later_run_lands(
    flow_env: FlowEnv, mounts: Mounts
) -> None:
    """ETL_HOME/errors, still empty, mounted read-only: transform cannot make the partition's
    error folder, nor can the run's e-mail look for its error files; the run fails at once (no
    retry) naming the folder. Then errors on a 4 KiB disk: the first error file fits, the next
    does not (Polars says only "No space left on device (os error 28)"): the line and the e-mail
    name the folder; the load that committed is whole. The folder back, a run lands."""
    data = companies_file(ROWS)
    put_aged(flow_env, FILE, data)
    folder = flow_env.home / "errors"

    mounts.read_only(folder)
    run = flow_env.run(DAY)
    line = failure_line(run)
    read_only = f"ETL_HOME folder errors ({folder}) is not writable: read-only file system"
    assert line.startswith(f"{DAY}: transform: {read_only}"), line
    assert f"run e-mail not sent: {read_only}" in line, line
    assert not retries(run)  # the same folder would refuse a retry
    mounts.undo()

    mounts.over(folder, "-t", "tmpfs", "-o", "size=4k", "tmpfs")
    line = failure_line(flow_env.run(DAY))
    full = f"ETL_HOME folder errors ({folder}) is full: no space left on device"
    assert line.startswith(f"link: {full}"), line
    (message,) = flow_env.smtp.wait_for(1)
    assert message["Subject"].startswith(f"[etl_assets][test] companies {DAY} failed: link: {full}")
    clean = clean_run(flow_env, [(DAY, {FILE: data})])
    linked = sum(1 for parent in clean.column("accounts", "parent_account_id") if parent is not None)
    ((loaded, parents),) = flow_env.query("select count(*), count(parent_account_id) from accounts")
    assert loaded == ROWS + 1 and parents in (0, linked)  # the link's rows committed or not, whole
    assert_nothing_looks_complete_that_is_not(flow_env.home, [(FILE, data)])
    mounts.undo()

    assert flow_env.run(DAY).success
    assert_same_as_clean(flow_env, [(DAY, {FILE: data})])


def test_a_refusal_the_sftp_server_gave_is_not_taken_for_a_folder_here(tmp_path: Path) -> None:
    """The SFTP resource re-raises a server's "permission denied" as an OSError naming the
    remote file: that is no folder of ETL_HOME, and stays the connector's own line."""
    folders = FoldersResource(home=str(tmp_path))
    remote = "/outbound/companies/companies_20260115.csv"
    assert folders.write_fault(PermissionError(errno.EACCES, f"download of {remote}", remote)) is None
    local = tmp_path / "data" / ".extract.parquet.1.ab.part"
    local.parent.mkdir()
    line = folders.write_fault(PermissionError(errno.EACCES, "Permission denied", str(local)))
    assert line is not None and line.startswith(f"ETL_HOME folder data ({local.parent}) is not writable")
    polars = OSError("No space left on device (os error 28)")  # no errno, no file: the disk it is on
    assert (folders.write_fault(polars) or "").startswith(f"ETL_HOME ({tmp_path}) is full")
