"""Whom the SFTP connector trusts, against the real sshd: host keys and the private key file.

As ``ssh`` with ``StrictHostKeyChecking yes``: a host key not in ``sftp.known_hosts`` and a
host key other than the one recorded there are both refused, with the server's SHA256
fingerprint (compared with what ``ssh-keygen -l`` prints) and the command that trusts it; the
tests run that very command and then connect. A private key file that others may read, or
that another user owns, is refused with the ``chmod``/``chown`` that fixes it.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etl_assets.resources import ConnectorError, SftpResource
from etl_assets_tests.services import SshdServer
from etl_assets_tests.services._net import terminate, wait_for_banner

Encrypt = Callable[[str], str]


def fingerprint(public_key_file: Path) -> str:
    """``SHA256:...`` of a public key as OpenSSH prints it (``ssh-keygen -l``)."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public_key_file)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


def host_public_key(sshd: SshdServer) -> Path:
    """The fixture sshd's host key (its config names it)."""
    (line,) = [x for x in sshd.config_path.read_text().splitlines() if x.startswith("HostKey ")]
    return Path(line.split(None, 1)[1] + ".pub")


def make_sftp(sshd: SshdServer, known_hosts: Path, **overrides: object) -> SftpResource:
    """Password login unless overridden; one try only (a refusal must not be retried anyway)."""
    fields: dict[str, object] = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "known_hosts": str(known_hosts),
        "timeout": 5.0,
        "retries": 2,
        "backoff_seconds": 1.0,
    }
    fields.update(overrides)
    return SftpResource(**fields)  # type: ignore[arg-type]


def run_suggested(reason: str, marker: str) -> str:
    """Run the shell command the message suggests (everything after ``marker``)."""
    command = reason.split(marker, 1)[1].strip()
    subprocess.run(["sh", "-c", command], check=True, capture_output=True, timeout=30)
    return command


def refused(sftp: SftpResource) -> tuple[str, float]:
    """The reason a check_connection is refused, and how long it took (no retries)."""
    started = time.monotonic()
    with pytest.raises(ConnectorError) as caught:
        sftp.check_connection()
    return caught.value.reason, time.monotonic() - started


@pytest.fixture
def password(sshd: SshdServer, encrypt_password: Encrypt) -> str:
    return encrypt_password(sshd.password)


# --- host keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("known_hosts_state", ["empty", "missing"])
def test_an_unknown_host_key_is_refused_with_its_fingerprint_and_how_to_trust_it(
    sshd: SshdServer, password: str, tmp_path: Path, known_hosts_state: str, caplog: pytest.LogCaptureFixture
) -> None:
    known_hosts = tmp_path / "trust" / "known_hosts"
    if known_hosts_state == "empty":
        known_hosts.parent.mkdir()
        known_hosts.write_text("")
    else:
        known_hosts.parent.mkdir()  # the folder exists, the file not: the command creates it
    sftp = make_sftp(sshd, known_hosts, password=password)
    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")

    reason, took = refused(sftp)
    entry = f"[{sshd.host}]:{sshd.port}"
    assert reason.startswith(f"{sftp.label}: unknown host key: "), reason
    assert f"ED25519 key {fingerprint(host_public_key(sshd))}" in reason  # as ssh-keygen -l prints it
    assert entry in reason and str(known_hosts) in reason and "sftp.known_hosts" in reason
    if known_hosts_state == "missing":
        assert f"known_hosts file {known_hosts} not found" in reason
    assert took < 1.0 and "retry" not in caplog.text  # a refusal is not a dropped line
    assert (not known_hosts.exists()) or known_hosts.read_text() == ""  # nothing trusted behind our back

    command = run_suggested(reason, "trust it:")
    assert command == f"ssh-keyscan -p {sshd.port} -t ed25519 {sshd.host} >> {known_hosts}"
    assert entry in known_hosts.read_text()
    assert sftp.check_connection().startswith(sftp.label)  # now it connects


def test_dev_may_accept_an_unknown_host_key_but_says_so_and_records_nothing(
    sshd: SshdServer, password: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``sftp.allow_unknown_host_keys`` (refused outside dev by the settings): a warning with
    the fingerprint, for this connection only; known_hosts stays as it was."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    sftp = make_sftp(sshd, known_hosts, password=password, allow_unknown_host_keys=True)
    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")
    assert sftp.check_connection().startswith(sftp.label)
    (warning,) = [r.getMessage() for r in caplog.records if "allow_unknown_host_keys" in r.getMessage()]
    assert fingerprint(host_public_key(sshd)) in warning
    assert known_hosts.read_text() == ""


@pytest.mark.parametrize("allow_unknown", [False, True], ids=["strict", "dev-allow-unknown"])
def test_a_recorded_key_other_than_the_servers_is_refused(
    sshd: SshdServer, password: str, allow_unknown: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """known_hosts holds another key for this host:port (the fixture's ``known_hosts_wrong``):
    refused with both fingerprints, even where unknown keys are allowed."""
    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")
    sftp = make_sftp(
        sshd, sshd.wrong_known_hosts_path, password=password, allow_unknown_host_keys=allow_unknown
    )
    reason, took = refused(sftp)
    wrong_pub = sshd.wrong_known_hosts_path.with_name("wrong_host_ed25519_key.pub")
    assert reason.startswith(
        f"{sftp.label}: host key changed: [{sshd.host}]:{sshd.port} offered ED25519 key "
    ), reason
    assert f"offered ED25519 key {fingerprint(host_public_key(sshd))}" in reason
    assert f"holds ED25519 key {fingerprint(wrong_pub)}" in reason
    assert "sftp.known_hosts" in reason and str(sshd.wrong_known_hosts_path) in reason
    assert took < 1.0 and "retry" not in caplog.text


@pytest.fixture
def impostor(sshd: SshdServer, tmp_path: Path) -> Iterator[Path]:
    """The fixture's sshd replaced, on the same port, by one with another host key (a server
    reinstalled, or a man in the middle); the original is back after the test. Yields the
    impostor's public host key."""
    host_key = tmp_path / "impostor_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = tmp_path / "impostor_sshd_config"
    lines = []
    for line in sshd.config_path.read_text().splitlines():
        if line.startswith("HostKey "):
            line = f"HostKey {host_key}"
        elif line.startswith("PidFile "):
            line = f"PidFile {tmp_path / 'impostor.pid'}"
        lines.append(line)
    config.write_text("\n".join(lines) + "\n")
    log = (tmp_path / "impostor.log").open("ab")
    sshd.stop()
    proc = None
    try:
        proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        wait_for_banner(sshd.port, b"SSH-", proc=proc, log_path=tmp_path / "impostor.log", what="sshd")
        yield host_key.with_name(host_key.name + ".pub")
    finally:
        if proc is not None:
            terminate(proc)
        log.close()
        sshd.start()


def test_a_server_whose_key_changed_is_refused_until_the_operator_replaces_the_entry(
    sshd: SshdServer, password: str, impostor: Path, tmp_path: Path
) -> None:
    """The same host and port now answer with another key: refused, both fingerprints shown;
    the commands the message gives replace the entry, and then the server is trusted."""
    known_hosts = tmp_path / "known_hosts"
    shutil.copy(sshd.known_hosts_path, known_hosts)  # the original server's key, as recorded
    sftp = make_sftp(sshd, known_hosts, password=password)
    reason, _ = refused(sftp)
    assert "host key changed" in reason, reason
    assert f"offered ED25519 key {fingerprint(impostor)}" in reason
    assert f"holds ED25519 key {fingerprint(host_public_key(sshd))}" in reason
    assert "refused: the connection may be intercepted" in reason

    command = run_suggested(reason, f"replaced with {fingerprint(impostor)}:")
    assert command.startswith(f"ssh-keygen -R '[{sshd.host}]:{sshd.port}' -f {known_hosts} && ssh-keyscan ")
    assert sftp.check_connection().startswith(sftp.label)


# --- the private key file ----------------------------------------------------------------


@pytest.fixture
def key_copy(sshd: SshdServer, tmp_path: Path) -> Path:
    """A real key the sshd accepts, in a file of this test's (created 0600 by ssh-keygen)."""
    path = tmp_path / "keys" / "id_ed25519"
    path.parent.mkdir()
    shutil.copy(sshd.key_path, path)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_key_file_others_may_read_is_refused_with_the_chmod_that_fixes_it(
    sshd: SshdServer, key_copy: Path, mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    key_copy.chmod(mode)
    sftp = make_sftp(sshd, sshd.known_hosts_path, private_key=str(key_copy))
    caplog.set_level(logging.WARNING, logger="etl_assets.sftp")
    reason, took = refused(sftp)
    assert reason == (
        f"{sftp.label}: private key file {key_copy} (sftp.private_key) refused: permissions {mode:04o} "
        f"are too open (group or others may read or change it); ssh refuses such a key too; "
        f"fix: chmod 600 {key_copy}"
    )
    assert took < 1.0 and "retry" not in caplog.text

    run_suggested(reason, "fix:")
    assert key_copy.stat().st_mode & 0o777 == 0o600
    assert sftp.check_connection().startswith(sftp.label)


@pytest.mark.parametrize("mode", [0o600, 0o400], ids=oct)
def test_a_key_file_only_its_owner_may_read_logs_in(sshd: SshdServer, key_copy: Path, mode: int) -> None:
    key_copy.chmod(mode)
    sftp = make_sftp(sshd, sshd.known_hosts_path, private_key=str(key_copy))
    assert sftp.check_connection().startswith(sftp.label)


def test_a_key_file_of_another_user_is_refused_with_the_chown_that_fixes_it(
    sshd: SshdServer, key_copy: Path
) -> None:
    other = pwd.getpwnam(sshd.user)  # any user but the one running the tests
    me = pwd.getpwuid(os.geteuid()).pw_name
    os.chown(key_copy, other.pw_uid, other.pw_gid)
    key_copy.chmod(0o600)
    sftp = make_sftp(sshd, sshd.known_hosts_path, private_key=str(key_copy))
    reason, _ = refused(sftp)
    assert reason == (
        f"{sftp.label}: private key file {key_copy} (sftp.private_key) refused: owned by {other.pw_name}, "
        f"not by {me} who runs etl_assets; ssh refuses such a key too; fix: chown {me} {key_copy}"
    )
    key_copy.chmod(0o644)  # both faults: both fixes, in one command
    reason, _ = refused(sftp)
    assert reason.endswith(f"fix: chown {me} {key_copy} && chmod 600 {key_copy}"), reason

    run_suggested(reason, "fix:")
    assert sftp.check_connection().startswith(sftp.label)


def test_key_file_faults_name_the_setting_never_the_passphrase(
    sshd: SshdServer, encrypt_password: Encrypt, tmp_path: Path
) -> None:
    """A passphrase key without its passphrase, with a wrong one, a missing file, not a key."""
    protected = sshd.key_with_passphrase_path
    wrong = "Wrong-Passphrase-" + secrets.token_hex(4)
    cases = [
        ({"private_key": str(protected)}, "is protected by a passphrase: set sftp.private_key_passphrase"),
        (
            {"private_key": str(protected), "private_key_passphrase": encrypt_password(wrong)},
            "cannot be decrypted with sftp.private_key_passphrase (wrong passphrase?)",
        ),
        ({"private_key": str(tmp_path / "nope")}, "not found"),
    ]
    not_a_key = tmp_path / "not_a_key"
    not_a_key.write_text("hello\n")
    not_a_key.chmod(0o600)
    cases.append(
        (
            {"private_key": str(not_a_key)},
            "is not a private key this client reads (OpenSSH or PEM: Ed25519, ECDSA, RSA)",
        )
    )
    for overrides, expected in cases:
        reason, _ = refused(make_sftp(sshd, sshd.known_hosts_path, **overrides))
        assert f"private key file {overrides['private_key']} (sftp.private_key)" in reason
        assert reason.endswith(expected), reason
        assert wrong not in reason and sshd.key_passphrase not in reason

    # a passphrase given for a key that has none is not needed (as with ssh); the right one works
    plain = make_sftp(
        sshd,
        sshd.known_hosts_path,
        private_key=str(sshd.key_path),
        private_key_passphrase=encrypt_password(wrong),
    )
    assert plain.check_connection().startswith(plain.label)
    right = make_sftp(
        sshd,
        sshd.known_hosts_path,
        private_key=str(protected),
        private_key_passphrase=encrypt_password(sshd.key_passphrase),
    )
    assert right.check_connection().startswith(right.label)
