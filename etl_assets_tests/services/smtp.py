"""A real SMTP server (aiosmtpd in a subprocess) on loopback that keeps mail as files.

Why a subprocess: tests need to stop it and start it again on the same port to prove the
notifier survives "SMTP down", and the pytest process stays free of a background event loop.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import IO, cast

from etl_assets_tests.services._net import HOST, free_port, terminate, wait_for_banner

# The package root, so the server module imports even if the project is not installed.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def make_self_signed_cert(directory: Path) -> tuple[Path, Path, Path]:
    """Write a throwaway CA and a server cert for 127.0.0.1/localhost signed by it.

    Returns (ca_cert, server_cert, server_key). A separate CA (instead of one self-signed
    leaf) keeps verification valid under OpenSSL's strict X.509 checks.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etl_assets test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    directory.mkdir(parents=True, exist_ok=True)
    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


@dataclass(frozen=True)
class Delivery:
    """One received message with the SMTP envelope it came with."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    path: Path


@dataclass
class SmtpServer:
    """A running test SMTP server; `cafile` verifies its STARTTLS cert (None without TLS)."""

    host: str
    port: int
    maildir: Path
    cafile: Path | None
    user: str | None = None
    password: str | None = None
    log_path: Path | None = field(default=None, repr=False)
    _cmd: list[str] = field(default_factory=list, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """True while the server subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or restart after stop()) the server on the same port; wait for its banner."""
        if self.running:
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        assert self.log_path is not None
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            env=env,
            start_new_session=True,
        )
        try:
            wait_for_banner(self.port, b"220", proc=self._proc, log_path=self.log_path, what="SMTP server")
        except BaseException:
            self.stop()
            raise

    def defer_next(self, count: int) -> None:
        """Answer the next ``count`` messages with 451 (try again later)."""
        tmp = self.maildir / ".defer.tmp"
        tmp.write_text(str(count))
        tmp.replace(self.maildir / ".defer")

    def stop(self) -> None:
        """Terminate the server process (received mail stays in the maildir)."""
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _eml_paths(self) -> list[Path]:
        return sorted(self.maildir.glob("*.eml"))

    def deliveries(self) -> list[Delivery]:
        """Messages with their envelopes (sender, recipients), oldest first."""
        result = []
        for path in self._eml_paths():
            meta = json.loads(path.with_suffix(".json").read_text())
            result.append(
                Delivery(
                    mail_from=meta["mail_from"],
                    rcpt_tos=list(meta["rcpt_tos"]),
                    message=_parse(path),
                    path=path,
                )
            )
        return result

    def messages(self) -> list[EmailMessage]:
        """Received messages parsed with email.policy.default, oldest first."""
        return [_parse(path) for path in self._eml_paths()]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until at least `count` messages arrived; return them (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            paths = self._eml_paths()
            if len(paths) >= count:
                return [_parse(path) for path in paths]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"expected {count} message(s) within {timeout} s, got {len(paths)}")
            time.sleep(0.02)

    def clear(self) -> None:
        """Forget all received mail (between tests sharing one server)."""
        for path in self.maildir.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)


def _parse(path: Path) -> EmailMessage:
    """Parse one stored message (policy.default gives EmailMessage with decoded headers)."""
    with path.open("rb") as fh:
        return cast(EmailMessage, email.message_from_binary_file(fh, policy=email.policy.default))


@contextmanager
def start_smtp(
    workdir: Path, *, starttls: bool = False, auth: tuple[str, str] | None = None
) -> Iterator[SmtpServer]:
    """Start an SMTP server on a free loopback port, optionally with STARTTLS and AUTH.

    With `starttls`, STARTTLS is required before MAIL/AUTH and `cafile` verifies the cert;
    with `auth`, only that (user, password) is accepted (LOGIN/PLAIN) and AUTH is required.
    """
    home = Path(workdir) / f"smtp-{secrets.token_hex(4)}"
    maildir = home / "maildir"
    maildir.mkdir(parents=True)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "etl_assets_tests.services.smtp_server",
        "--port",
        str(port),
        "--maildir",
        str(maildir),
    ]
    cafile: Path | None = None
    if starttls:
        cafile, cert, key = make_self_signed_cert(home / "tls")
        cmd += ["--cert", str(cert), "--key", str(key)]
    if auth is not None:
        cmd += ["--user", auth[0], "--password", auth[1]]
    server = SmtpServer(
        host=HOST,
        port=port,
        maildir=maildir,
        cafile=cafile,
        user=auth[0] if auth else None,
        password=auth[1] if auth else None,
        log_path=home / "smtp.log",
        _cmd=cmd,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
