"""After failing flow runs, no secret is anywhere a run leaves bytes.

``test_no_leak`` greps what ``test-connections`` shows (its CLI, its job's events, the resources,
the code location's snapshot). This one runs the companies flow itself, failing, against the
real services, with a known value for every secret: the database password (a right one and a
wrong one), a wrong SFTP password, the SFTP private key (its file's bytes, the key itself) and
its passphrase, the SMTP password (a right one and a refused one) and the key that encrypts the
settings' passwords. The runs: a file with bad rows (everything else right: the key logs in,
the rows load, an e-mail goes out), a corrupt file, a wrong database password (the load's
retries included), a wrong SFTP password, and an SMTP login refusal through ``dg launch`` in a
subprocess (the e-mail is kept in ``logs/unsent``). Then every byte under ETL_HOME and
DAGSTER_HOME (event log and run storage, compute logs, error files, staged parquet, kept
e-mails), all output captured from the runs (the subprocess's too), the logs at DEBUG and every
e-mail the SMTP server received (raw, and each part decoded) are searched for each secret:
as is, URL-quoted, JSON-escaped, hex and base64 (at the three byte alignments, line breaks
removed, so a secret inside a longer encoded text is found too).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import dagster as dg
import psycopg
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from dagster._core.storage.defs_state.base import set_defs_state_storage
from dagster._serdes import serialize_value
from psycopg import sql

from etl_assets.definitions import build_definitions
from etl_assets.settings import load_settings
from etl_assets.settings.secrets import key_file_path
from etl_assets_tests.services import PostgresServer, SmtpServer, SshdServer, start_smtp
from etl_assets_tests.test_flows.conftest import companies_csv

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DG = str(Path(sys.executable).with_name("dg"))
Encrypt = Callable[[str], str]

ROLE = "etl_scan"
SMTP_USER = "etl-scan-notifier"
DB_RIGHT = "Scan-Db-Right+7/q@:%x!"
DB_WRONG = "Scan-Db-Wrong&9#r=k?"
SFTP_WRONG = "Scan-Sftp-Wrong;4$z~w"
SMTP_RIGHT = "Scan-Smtp-Right 5^k*m"
SMTP_WRONG = "Scan-Smtp-Wrong(6)j|p"

GOOD = [
    "S1;IT00000000001;Scan Uno S.p.A.;Via Roma, 1;milano;20121;IT;info@uno.it;;;1.000,00;10;01/02/1990;14/01/2026 10:00:00",
    "S2;IT00000000002;Scan Due S.r.l.;;Forlì;47121;IT;;;IT00000000001;12,50;3;;14/01/2026 11:00:00",
]
BAD = [
    "S3;IT00000000003;Data Errata;;;;IT;;;;;;31/02/2019;14/01/2026 09:00:00",  # bad date
    "S4;;Senza Partita IVA;;;;IT;;;;;;;14/01/2026 09:00:00",  # missing VAT
]


# --- the scan ----------------------------------------------------------------------------


def _b64_cores(data: bytes) -> list[bytes]:
    """The base64 characters that ``data`` alone decides, wherever it sits in a longer text
    (it starts at a byte offset of 0, 1 or 2 modulo 3), standard and URL-safe alphabets."""
    cores = []
    for shift, start in ((0, 0), (1, 2), (2, 3)):
        encoded = base64.b64encode(b"\0" * shift + data)
        core = encoded[start : (shift + len(data)) * 8 // 6]
        cores += [core, core.translate(bytes.maketrans(b"+/", b"-_"))]
    return cores


def forms(secret: bytes) -> dict[str, bytes]:
    """How a secret could be written: as is, URL-quoted, JSON-escaped, hex, base64."""
    found = {"as is": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}
    try:
        text = secret.decode()
    except UnicodeDecodeError:
        pass
    else:
        found |= {
            "URL-quoted": quote(text, safe="").encode(),
            "URL-quoted (/ kept)": quote(text).encode(),
            "form-quoted": quote_plus(text).encode(),
            "JSON-escaped": json.dumps(text)[1:-1].encode(),
            "JSON-escaped (ASCII)": json.dumps(text, ensure_ascii=True)[1:-1].encode(),
        }
    for i, core in enumerate(_b64_cores(secret)):
        found[f"base64 #{i}"] = core
    return {name: form for name, form in found.items() if len(form) >= 8}


@dataclass
class Scan:
    """Named secrets, each with its forms; ``search`` reports where one of them occurs."""

    secrets: dict[str, bytes]
    _forms: list[tuple[str, str, bytes]] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, secret in self.secrets.items():
            assert len(secret) >= 8, name  # a short secret would match by chance
            self._forms += [(name, how, form) for how, form in forms(secret).items()]

    def search(self, where: str, data: bytes) -> list[str]:
        """Every (secret, form) found in ``data``; base64 also with the line breaks removed."""
        self.searched.append(where)
        unwrapped = data.replace(b"\r", b"").replace(b"\n", b"")
        hits = []
        for name, how, form in self._forms:
            if form in data or (how.startswith("base64") and form in unwrapped):
                hits.append(f"{name} ({how}) in {where}")
        return hits

    def search_tree(self, root: Path) -> list[str]:
        hits = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            hits += self.search(str(path), path.read_bytes())
        return hits

    def search_mail(self, where: str, raw: bytes) -> list[str]:
        """A message as sent, and each of its parts decoded (base64, quoted-printable)."""
        hits = self.search(where, raw)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for i, part in enumerate(message.walk()):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                hits += self.search(f"{where} part {i} ({part.get_content_type()}), decoded", payload)
        for name, value in message.items():
            hits += self.search(f"{where} header {name}", str(value).encode())
        return hits


def test_the_scan_finds_each_form_where_it_hides(tmp_path: Path) -> None:
    """The search itself, on a known secret: else a leak could pass unseen."""
    secret = "Known-Secret 9/+:@%!"
    scan = Scan({"known": secret.encode()})
    for prefix in (b"", b"x", b"xy"):  # the three base64 alignments, inside a longer text
        encoded = base64.b64encode(prefix + b"before " + secret.encode() + b" after")
        wrapped = b"\r\n".join(encoded[i : i + 7] for i in range(0, len(encoded), 7))
        assert scan.search("wrapped base64", b"junk " + wrapped + b" junk"), prefix
    for text in (
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps({"p": secret}),
        secret.encode().hex(),
    ):
        assert scan.search("text", f"<{text}>".encode()), text
    message = EmailMessage()
    message.set_content("nothing here")
    message.add_attachment(f"a;b\n1;{secret}\n".encode(), maintype="text", subtype="csv", filename="e.csv")
    raw = message.as_bytes()
    assert secret.encode() not in raw  # the attachment went out base64-encoded
    assert any("decoded" in hit for hit in scan.search_mail("mail", raw))
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "db.sqlite").write_bytes(b"\0\1" + secret.encode() + b"\0")
    assert scan.search_tree(tmp_path)
    assert not scan.search("clean", b"Known-Secret 9/+:@% (one character short)")


# --- the runs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scan_role(postgres: PostgresServer) -> Iterator[str]:
    """A login role whose password is DB_RIGHT, and its own database (the flow's target)."""
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(DB_RIGHT))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(ROLE), sql.Identifier(ROLE))
        )
    try:
        yield ROLE
    finally:
        with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ROLE)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


@pytest.fixture(scope="module")
def scan_smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """An SMTP server (STARTTLS, then AUTH) whose only login is SMTP_USER / SMTP_RIGHT."""
    with start_smtp(
        tmp_path_factory.mktemp("smtp_scan"), starttls=True, auth=(SMTP_USER, SMTP_RIGHT)
    ) as server:
        yield server


def key_material(key_file: Path, passphrase: str) -> dict[str, bytes]:
    """The private key file's secrets: each line of its encoded body, the encrypted blob's
    private part, and the key itself once decrypted (its 32-byte Ed25519 seed)."""
    lines = [line for line in key_file.read_text().splitlines() if line and not line.startswith("-----")]
    found = {f"key file line {i}": line.encode() for i, line in enumerate(lines)}
    blob = base64.b64decode("".join(lines))
    found["key file, encrypted private part"] = blob[-96:-16]
    key = serialization.load_ssh_private_key(key_file.read_bytes(), password=passphrase.encode())
    found["private key (raw seed)"] = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    found["private key (PEM body)"] = b"".join(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).splitlines()[1:-1]
    )
    return found


def settings(
    postgres: PostgresServer,
    sshd: SshdServer,
    smtp: SmtpServer,
    folder: str,
    enc: Encrypt,
    *,
    db_password: str = DB_RIGHT,
    sftp_password: str | None = None,
    smtp_password: str = SMTP_RIGHT,
) -> str:
    """The ``test`` settings: every password an enc: token; SFTP by the passphrase key
    unless an SFTP password is given."""
    sftp: dict[str, Any] = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "known_hosts": str(sshd.known_hosts_path),
        "folders": {"companies": folder, "offers": folder},
        "timeout": 5,
        "retries": 0,
    }
    if sftp_password is None:
        sftp |= {
            "private_key": str(sshd.key_with_passphrase_path),
            "private_key_passphrase": enc(sshd.key_passphrase),
        }
    else:
        sftp["password"] = enc(sftp_password)
    overlay = {
        "database": {
            "driver": "postgresql",
            "host": postgres.host,
            "port": postgres.port,
            "database": ROLE,
            "user": ROLE,
            "password": enc(db_password),
            "connect_timeout": 3,
        },
        "sftp": sftp,
        "mail": {
            "sender": "etl@scan.example",
            "recipients": ["ops@scan.example"],
            "smtp": {
                "host": smtp.host,
                "port": smtp.port,
                "starttls": True,
                "cafile": str(smtp.cafile),
                "user": SMTP_USER,
                "password": enc(smtp_password),
                "timeout": 5,
                "retries": 0,
            },
        },
    }
    return yaml.safe_dump({"timezone": "Europe/Rome", "test": overlay})


def run_in_process(instance: dg.DagsterInstance, partition: str) -> dg.ExecuteInProcessResult:
    """One run of the companies job, definitions built from the settings file as it is now."""
    with set_defs_state_storage(instance.defs_state_storage):
        defs = build_definitions(load_settings("test"))
        return defs.resolve_job_def("companies_job").execute_in_process(
            partition_key=partition, instance=instance, raise_on_error=False
        )


def failures(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Every event of the run as its event log stores it (errors and their messages included)."""
    return "\n".join(serialize_value(entry) for entry in instance.all_logs(result.run_id))


def test_failing_runs_leave_no_secret_in_any_file_output_or_e_mail(
    postgres: PostgresServer,
    sshd: SshdServer,
    scan_smtp: SmtpServer,
    scan_role: str,
    encrypt_password: Encrypt,
    write_settings: Callable[[str], Path],
    isolated_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    etl_home = isolated_env
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(
        PROJECT_ROOT / "etl_assets" / "dagster.yaml", dagster_home / "dagster.yaml"
    )  # as operators do
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("ETL_ENV", "test")
    folder = f"/outbound/scan_{secrets.token_hex(4)}"
    sshd.put_file(f"{folder}/companies_20260115.csv", companies_csv(*GOOD, *BAD))
    sshd.put_file(
        f"{folder}/companies_20260116.csv", companies_csv(*GOOD).replace(b"Forl\xc3\xac", b"Forl\xec")
    )
    sshd.put_file(f"{folder}/companies_20260117.csv", companies_csv(*GOOD))
    sshd.put_file(f"{folder}/companies_20260118.csv", companies_csv(*GOOD, *BAD))
    scan_smtp.clear()
    caplog.set_level(logging.DEBUG)
    for name in ("paramiko", "sqlalchemy", "psycopg", "etl_assets", "dagster"):
        caplog.set_level(logging.DEBUG, logger=name)

    def use(**passwords: Any) -> None:
        write_settings(settings(postgres, sshd, scan_smtp, folder, encrypt_password, **passwords))

    outputs: dict[str, str] = {}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        use()  # everything right; the file has bad rows
        rows = run_in_process(instance, "2026-01-15")
        assert rows.success, failures(instance, rows)  # 2 rejected rows, under warn_limit
        with psycopg.connect(postgres.dsn(ROLE)) as conn:
            loaded = conn.execute("select external_id from accounts order by 1").fetchall()
        assert loaded == [("S1",), ("S2",)]  # the key logged in, DB_RIGHT loaded them
        corrupt = run_in_process(instance, "2026-01-16")  # not valid UTF-8
        assert not corrupt.success
        use(db_password=DB_WRONG)
        wrong_db = run_in_process(instance, "2026-01-17")
        assert not wrong_db.success
        assert f'password authentication failed for user \\"{ROLE}\\"' in failures(instance, wrong_db)
        use(sftp_password=SFTP_WRONG)
        wrong_sftp = run_in_process(instance, "2026-01-18")
        assert not wrong_sftp.success
        assert f"login refused for user '{sshd.user}'" in failures(instance, wrong_sftp)
        outputs["the in-process runs' stdout"], outputs["the in-process runs' stderr"] = capfd.readouterr()

    use(smtp_password=SMTP_WRONG)  # an operator's run from the terminal; SMTP refuses the login
    cli = subprocess.run(
        [DG, "launch", "--assets", "group:companies", "--partition", "2026-01-15"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "VIRTUAL_ENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    outputs["dg launch stdout"], outputs["dg launch stderr"] = cli.stdout, cli.stderr
    unsent = sorted((etl_home / "logs" / "unsent").glob("*.eml"))
    assert len(unsent) == 1, cli.stdout + cli.stderr[-3000:]  # the refused e-mail is kept
    assert "login refused" in cli.stdout + cli.stderr

    received = sorted(scan_smtp.maildir.glob("*.eml"))
    assert len(received) == 4  # one e-mail per run above: SMTP_RIGHT logged in each time
    subjects = [scan_smtp.messages()[i]["Subject"] for i in range(4)]
    assert any("2 rows rejected" in s for s in subjects) and any("failed" in s for s in subjects), subjects

    scan = Scan(
        {
            "the database password": DB_RIGHT.encode(),
            "the wrong database password": DB_WRONG.encode(),
            "the wrong SFTP password": SFTP_WRONG.encode(),
            "the SMTP password": SMTP_RIGHT.encode(),
            "the refused SMTP password": SMTP_WRONG.encode(),
            "the SFTP key's passphrase": sshd.key_passphrase.encode(),
            "the settings' secret key": key_file_path().read_bytes().strip(),
            **key_material(sshd.key_with_passphrase_path, sshd.key_passphrase),
        }
    )
    hits = scan.search_tree(etl_home) + scan.search_tree(dagster_home)
    for where, text in outputs.items():
        hits += scan.search(where, text.encode())
    hits += scan.search("the logs at DEBUG", caplog.text.encode())
    hits += scan.search(
        "the log records' arguments", "\n".join(repr(r.args) for r in caplog.records).encode()
    )
    for path in received:
        hits += scan.search_mail(f"the e-mail {path.name}", path.read_bytes())
    assert hits == []

    # what was searched holds what the runs said: the scan looked at the right bytes
    corpus = b"".join(p.read_bytes() for p in dagster_home.rglob("*") if p.is_file())
    assert b"password authentication failed" in corpus and b"login refused for user" in corpus
    assert any(p.suffix == ".db" for p in dagster_home.rglob("*"))  # the event log and runs storage
    assert (etl_home / "errors" / "companies" / "2026-01-15" / "transform.csv").is_file()
    assert any("unsent" in where for where in scan.searched)
