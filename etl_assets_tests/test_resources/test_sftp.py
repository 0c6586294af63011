"""SftpResource against the real sshd: file operations, retry after a drop, permanent faults."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from etl_assets.resources import ConnectorError, SftpResource
from etl_assets_tests.services import SshdServer
from etl_assets_tests.services._net import free_port

Encrypt = Callable[[str], str]
BIG_FILE_BYTES = 50 * 1024 * 1024


@pytest.fixture
def remote_dir(sshd: SshdServer) -> str:
    """A fresh remote folder for this test (the sshd is shared by the session)."""
    folder = f"/outbound/t_{secrets.token_hex(4)}"
    sshd.put_file(f"{folder}/.keep", b"")
    (sshd.root / folder.lstrip("/") / ".keep").unlink()
    return folder


def make_sftp(sshd: SshdServer, enc: Encrypt, **overrides: object) -> SftpResource:
    """A resource logging in with the sshd's password (as an enc: token), retries fast."""
    fields: dict[str, object] = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "password": enc(sshd.password),
        "known_hosts": str(sshd.known_hosts_path),
        "timeout": 5.0,
        "retries": 3,
        "backoff_seconds": 0.05,
    }
    fields.update(overrides)
    return SftpResource(**fields)  # type: ignore[arg-type]


def test_list_download_upload_rename_remove(
    sshd: SshdServer, encrypt_password: Encrypt, remote_dir: str, tmp_path: Path
) -> None:
    sftp = make_sftp(sshd, encrypt_password)
    sshd.put_file(f"{remote_dir}/b.csv", b"id;name\n2;Beta\n")
    sshd.put_file(f"{remote_dir}/a.csv", b"id;name\n1;ACME\n")
    sshd.put_file(f"{remote_dir}/sub/ignored.csv", b"x")

    listed = sftp.list_files(remote_dir)
    assert [(f.name, f.path, f.size) for f in listed] == [
        ("a.csv", f"{remote_dir}/a.csv", 15),
        ("b.csv", f"{remote_dir}/b.csv", 15),
    ]
    assert all(f.mtime > time.time() - 600 for f in listed)

    local = sftp.download(f"{remote_dir}/a.csv", tmp_path / "in" / "a.csv")
    assert local == tmp_path / "in" / "a.csv"
    assert local.read_bytes() == b"id;name\n1;ACME\n"
    assert sorted(p.name for p in local.parent.iterdir()) == ["a.csv"]

    outgoing = tmp_path / "errors.csv"
    outgoing.write_bytes(b"row;reason\n3;bad date\n")
    sftp.upload(outgoing, f"{remote_dir}/errors.csv")
    remote_root = sshd.root / remote_dir.lstrip("/")
    assert (remote_root / "errors.csv").read_bytes() == b"row;reason\n3;bad date\n"
    assert not list(remote_root.glob(".errors.csv*.part"))

    sftp.rename(f"{remote_dir}/a.csv", f"{remote_dir}/done/a.csv")  # the folder is created
    assert (remote_root / "done" / "a.csv").read_bytes() == b"id;name\n1;ACME\n"
    assert not (remote_root / "a.csv").exists()

    sftp.remove(f"{remote_dir}/b.csv")
    assert [f.name for f in sftp.list_files(remote_dir)] == ["errors.csv"]

    with pytest.raises(ConnectorError, match=f"remote folder {remote_dir}/nope is missing"):
        sftp.list_files(f"{remote_dir}/nope")


def test_private_key_login_lists_files(sshd: SshdServer, encrypt_password: Encrypt, remote_dir: str) -> None:
    sshd.put_file(f"{remote_dir}/k.csv", b"k")
    sftp = make_sftp(sshd, encrypt_password, password="", private_key=str(sshd.key_path))
    assert [f.name for f in sftp.list_files(remote_dir)] == ["k.csv"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # paramiko prefetch
def test_download_is_retried_after_a_dropped_connection(
    sshd: SshdServer,
    encrypt_password: Encrypt,
    remote_dir: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = os.urandom(BIG_FILE_BYTES)
    sshd.put_file(f"{remote_dir}/big.bin", data)
    sftp = make_sftp(sshd, encrypt_password)
    target = tmp_path / "in" / "big.bin"
    outcome: dict[str, object] = {}

    def partial_file() -> Path | None:
        """The download's temporary file (its name is its own: ``.big.bin.<pid>.<random>.part``)."""
        found = sorted(target.parent.glob(".big.bin.*.part")) if target.parent.exists() else []
        return found[0] if found else None

    def download() -> None:
        try:
            outcome["path"] = sftp.download(f"{remote_dir}/big.bin", target)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")
    worker = threading.Thread(target=download, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while not ((partial := partial_file()) and partial.stat().st_size >= 1024 * 1024):
        assert worker.is_alive(), f"the download ended before it could be interrupted: {outcome}"
        assert time.monotonic() < deadline, "the download did not start"
        time.sleep(0.005)
    received_at_drop = partial.stat().st_size
    assert sshd.drop_connections() > 0
    worker.join(timeout=60)
    assert not worker.is_alive(), "the download hangs after the drop"

    assert "error" not in outcome, outcome.get("error")
    assert received_at_drop < BIG_FILE_BYTES  # really cut mid-download
    assert outcome["path"] == target
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert not partial.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["big.bin"]
    assert "retry 1/3" in caplog.text, caplog.text


def test_missing_file_is_not_retried_and_names_the_path(
    sshd: SshdServer, encrypt_password: Encrypt, remote_dir: str, tmp_path: Path
) -> None:
    sftp = make_sftp(sshd, encrypt_password, retries=5, backoff_seconds=1.0)
    missing = f"{remote_dir}/not_there.csv"
    started = time.monotonic()
    with pytest.raises((ConnectorError, FileNotFoundError)) as caught:
        sftp.download(missing, tmp_path / "in" / "not_there.csv")
    assert time.monotonic() - started < 3, "a missing file must not be retried"
    assert missing in str(caught.value)
    assert list((tmp_path / "in").iterdir()) == []  # neither the file nor a .part

    with pytest.raises((ConnectorError, FileNotFoundError)) as caught:
        sftp.remove(missing)
    assert missing in str(caught.value)


def test_unreachable_server_gives_up_after_the_retries(
    sshd: SshdServer, encrypt_password: Encrypt, caplog: pytest.LogCaptureFixture
) -> None:
    sftp = make_sftp(sshd, encrypt_password, port=free_port(), retries=2, backoff_seconds=0.01)
    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")
    with pytest.raises(ConnectorError, match=r"host unreachable: 127\.0\.0\.1:\d+"):
        sftp.list_files("/outbound")
    assert "retry 2/2" in caplog.text
    assert "retry 3/" not in caplog.text


def test_wrong_password_is_not_retried(
    sshd: SshdServer, encrypt_password: Encrypt, caplog: pytest.LogCaptureFixture
) -> None:
    sftp = make_sftp(sshd, encrypt_password, password=encrypt_password("wrong"), backoff_seconds=1.0)
    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")
    with pytest.raises(ConnectorError, match=f"login refused for user '{sshd.user}'"):
        sftp.list_files("/outbound")
    assert "retry" not in caplog.text


def test_a_refusal_by_the_server_is_not_retried(
    sshd: SshdServer, encrypt_password: Encrypt, remote_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SFTP "Failure" (here: removing a folder as if a file) is the server saying no, not a drop."""
    sshd.put_file(f"{remote_dir}/folder/x.csv", b"x")
    sftp = make_sftp(sshd, encrypt_password, retries=5, backoff_seconds=1.0)
    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")
    started = time.monotonic()
    with pytest.raises(ConnectorError, match=f"removal of {remote_dir}/folder failed: Failure"):
        sftp.remove(f"{remote_dir}/folder")
    assert time.monotonic() - started < 3
    assert "retry" not in caplog.text


@pytest.mark.parametrize("source", ["sftp", "local"])
def test_two_downloads_of_one_file_at_once_never_share_a_temporary_file(
    source: str, sshd: SshdServer, encrypt_password: Encrypt, remote_dir: str, tmp_path: Path
) -> None:
    """Two runs of one partition (a sensor and a schedule) download the same file together."""
    from etl_assets.resources import LocalFilesResource

    data = os.urandom(8 * 1024 * 1024)
    if source == "sftp":
        sshd.put_file(f"{remote_dir}/same.csv", data)
        resource, remote = make_sftp(sshd, encrypt_password), f"{remote_dir}/same.csv"
    else:
        (tmp_path / "import").mkdir()
        (tmp_path / "import" / "same.csv").write_bytes(data)
        resource, remote = LocalFilesResource(root=str(tmp_path / "import")), "same.csv"
    target = tmp_path / "raw" / "same.csv"
    errors: list[BaseException] = []

    def download() -> None:
        try:
            resource.download(remote, target)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    for _ in range(3):
        workers = [threading.Thread(target=download) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert errors == []
        assert target.read_bytes() == data
        assert sorted(p.name for p in target.parent.iterdir()) == ["same.csv"]
