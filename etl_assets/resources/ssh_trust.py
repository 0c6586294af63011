"""Trust in an SSH server and in our own key, as strict as OpenSSH's.

A host key that is not in ``sftp.known_hosts``, or that differs from the one recorded there, is
refused with the key's SHA256 fingerprint (as ``ssh`` prints it) and the command that records
it once an operator has confirmed it. A private key file others may read, or that another user
owns, is refused as ``ssh`` refuses it, with the ``chmod``/``chown`` that fixes it.
"""

from __future__ import annotations

import io
import logging
import os
import pwd
import shlex
import stat
from pathlib import Path

import paramiko

from etl_assets.resources.errors import ConnectorError

log = logging.getLogger("etl_assets.sftp")


# --- host keys ---------------------------------------------------------------------------


class UnknownHostKey(paramiko.SSHException):
    """The server offered a key that known_hosts does not hold for it (``key``: that key)."""

    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"{hostname}: host key {key.fingerprint} not found in known_hosts")
        self.hostname = hostname
        self.key = key


class RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, keeping the refused key for the message (its fingerprint)."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(hostname, key)


class AcceptUnknownWithWarning(paramiko.MissingHostKeyPolicy):
    """dev only (``sftp.allow_unknown_host_keys``): accept a key known_hosts lacks, for this
    connection, and say so with its fingerprint. A key that differs from the recorded one is
    still refused (paramiko checks that before asking the policy)."""

    def __init__(self, label: str, known_hosts: Path) -> None:
        self.label = label
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning(
            "%s: host key %s %s of %s is not in %s; accepted because sftp.allow_unknown_host_keys "
            "is true (dev only)",
            self.label,
            key.algorithm_name,
            key.fingerprint,
            hostname,
            self.known_hosts,
        )
        client.get_host_keys().add(hostname, key.get_name(), key)


def _host_entry(host: str, port: int) -> str:
    """The host as known_hosts names it: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else f"[{host}]:{port}"


def _keyscan(host: str, port: int, key: paramiko.PKey) -> str:
    """The command that appends the server's key of this type, as known_hosts records it."""
    port_option = f"-p {port} " if port != 22 else ""
    return f"ssh-keyscan {port_option}-t {key.algorithm_name.lower()} {shlex.quote(host)}"


def unknown_key_reason(key: paramiko.PKey, host: str, port: int, known_hosts: Path) -> str:
    """Refused like ``ssh`` with StrictHostKeyChecking: the fingerprint, and how to trust it."""
    entry, where = _host_entry(host, port), shlex.quote(str(known_hosts))
    if known_hosts.is_file():
        missing = f"{entry} is not in {known_hosts} (sftp.known_hosts)"
    else:
        missing = f"{entry}: known_hosts file {known_hosts} not found (sftp.known_hosts)"
    return (
        f"unknown host key: {missing}; the server offered {key.algorithm_name} key {key.fingerprint}; "
        f"once the server's administrator confirms that fingerprint, trust it: "
        f"{_keyscan(host, port, key)} >> {where}"
    )


def changed_key_reason(exc: paramiko.BadHostKeyException, host: str, port: int, known_hosts: Path) -> str:
    """A key other than the recorded one: refused (``ssh``: REMOTE HOST IDENTIFICATION HAS
    CHANGED); replacing the entry is the operator's decision, never ours."""
    offered, expected = exc.key, exc.expected_key
    entry, where = _host_entry(host, port), shlex.quote(str(known_hosts))
    return (
        f"host key changed: {entry} offered {offered.algorithm_name} key {offered.fingerprint}, "
        f"but {known_hosts} (sftp.known_hosts) holds {expected.algorithm_name} key "
        f"{expected.fingerprint} for it; refused: the connection may be intercepted. Only if the "
        f"server's administrator confirms its key was replaced with {offered.fingerprint}: "
        f"ssh-keygen -R {shlex.quote(entry)} -f {where} && "
        f"{_keyscan(host, port, offered)} >> {where}"
    )


# --- private key file --------------------------------------------------------------------


def load_private_key(path_setting: str, passphrase: str | None, label: str) -> paramiko.PKey:
    """The key of ``sftp.private_key``, refused as ``ssh`` refuses it when group or others
    may read it (any of 0o077) and, stricter, unless it belongs to the user running us.

    The file is opened once and checked on that descriptor (no swap between check and read).
    """
    path = Path(path_setting).expanduser()
    what = f"{label}: private key file {path} (sftp.private_key)"
    try:
        # non-blocking: a FIFO in its place must not hang the step (no effect on a regular file)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise ConnectorError("sftp", f"{what} not found") from None
    except PermissionError:
        raise ConnectorError("sftp", f"{what} is not readable by {_user_name(os.geteuid())}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConnectorError("sftp", f"{what} is not a regular file")
        problems, fixes = [], []
        me = os.geteuid()
        if info.st_uid != me:
            owner = _user_name(info.st_uid)
            problems.append(f"owned by {owner}, not by {_user_name(me)} who runs etl_assets")
            fixes.append(f"chown {shlex.quote(_user_name(me))} {shlex.quote(str(path))}")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            problems.append(f"permissions {mode:04o} are too open (group or others may read or change it)")
            fixes.append(f"chmod 600 {shlex.quote(str(path))}")
        if problems:
            raise ConnectorError(
                "sftp",
                f"{what} refused: {' and '.join(problems)}; ssh refuses such a key too; "
                f"fix: {' && '.join(fixes)}",
            )
        data = handle.read()
    return _parse_private_key(data, passphrase, what, path)


def _parse_private_key(data: bytes, passphrase: str | None, what: str, path: Path) -> paramiko.PKey:
    """A paramiko key from the file's bytes (OpenSSH or PEM; Ed25519, ECDSA or RSA).

    A passphrase given for a key that has none is ignored, as ``ssh`` does. Messages name the
    file and the setting, never a byte of the key or the passphrase.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    openssh = b"-----BEGIN OPENSSH PRIVATE KEY-----" in data[:200]
    loader = serialization.load_ssh_private_key if openssh else serialization.load_pem_private_key
    secret = passphrase.encode() if passphrase else None
    try:
        try:
            loaded = loader(data, password=secret)
        except TypeError:
            if secret is None:
                raise ConnectorError(
                    "sftp", f"{what} is protected by a passphrase: set sftp.private_key_passphrase"
                ) from None
            secret = None  # the key has no passphrase: the one given is not needed
            loaded = loader(data, password=None)
    except (ValueError, UnsupportedAlgorithm):
        if secret is not None:
            reason = "cannot be decrypted with sftp.private_key_passphrase (wrong passphrase?)"
        else:
            reason = "is not a private key this client reads (OpenSSH or PEM: Ed25519, ECDSA, RSA)"
        raise ConnectorError("sftp", f"{what} {reason}") from None
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class: type[paramiko.PKey] = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise ConnectorError("sftp", f"{what}: its key type ({type(loaded).__name__}) is not supported")
    text = io.StringIO(data.decode("ascii", errors="replace"))
    key = key_class.from_private_key(text, password=passphrase if secret is not None else None)
    certificate = path.with_name(path.name + "-cert.pub")
    if certificate.is_file():  # as paramiko's key_filename does: the key's certificate beside it
        key.load_certificate(str(certificate))
    return key


def _user_name(uid: int) -> str:
    """The login name of ``uid`` (its number when it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
