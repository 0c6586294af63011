"""SFTP through paramiko: host key checked (``ssh_trust``: as strict as OpenSSH's), retries
with back-off on dropped connections."""

from __future__ import annotations

import errno
import logging
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TypeVar

import paramiko

from etl_assets.resources.errors import ConnectorError, first_line, redact, reveal
from etl_assets.resources.files import FileListing, FilesResource, RemoteFile, partial_name
from etl_assets.resources.names import accepted
from etl_assets.resources.ssh_trust import (
    AcceptUnknownWithWarning,
    RefuseUnknown,
    UnknownHostKey,
    changed_key_reason,
    load_private_key,
    unknown_key_reason,
)

log = logging.getLogger("etl_assets.sftp")
T = TypeVar("T")

# OSError numbers that mean "the file system said no", not "the line dropped".
_FILE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR}


class SftpResource(FilesResource):
    """An OpenSSH/SFTP server; passwords are tokens, decrypted only to log in."""

    host: str
    port: int = 22
    user: str
    password: str = ""
    private_key: str = ""
    private_key_passphrase: str = ""
    known_hosts: str = "~/.ssh/known_hosts"
    allow_unknown_host_keys: bool = False
    timeout: float = 10.0
    retries: int = 3
    backoff_seconds: float = 1.0

    @property
    def label(self) -> str:
        return f"sftp {self.user}@{self.host}:{self.port}"

    @contextmanager
    def session(self) -> Iterator[paramiko.SFTPClient]:
        """One logged-in SFTP session; faults become ConnectorError with the reason."""
        client = self._connect()
        try:
            yield client.open_sftp()
        finally:
            client.close()

    def _connect(self) -> paramiko.SSHClient:
        password = reveal("sftp", self.password, "sftp.password")
        passphrase = reveal("sftp", self.private_key_passphrase, "sftp.private_key_passphrase")
        pkey = load_private_key(self.private_key, passphrase, self.label) if self.private_key else None
        client = paramiko.SSHClient()
        known_hosts = Path(self.known_hosts).expanduser()
        if known_hosts.is_file():
            client.load_host_keys(str(known_hosts))
        # no file: no key is known, so the policy refuses the server's key with its fingerprint
        if self.allow_unknown_host_keys:
            client.set_missing_host_key_policy(AcceptUnknownWithWarning(self.label, known_hosts))
        else:
            client.set_missing_host_key_policy(RefuseUnknown())
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                password=password,
                pkey=pkey,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                look_for_keys=False,
                allow_agent=False,
            )
        except Exception as exc:
            client.close()
            raise self._as_connector_error(exc, known_hosts, [password, passphrase]) from None
        return client

    def _as_connector_error(
        self, exc: BaseException, known_hosts: Path, secrets: list[str | None]
    ) -> ConnectorError:
        if isinstance(exc, paramiko.BadHostKeyException):
            reason = changed_key_reason(exc, self.host, self.port, known_hosts)
        elif isinstance(exc, UnknownHostKey):
            reason = unknown_key_reason(exc.key, self.host, self.port, known_hosts)
        elif isinstance(exc, paramiko.AuthenticationException):
            reason = f"login refused for user {self.user!r} (wrong password or key?)"
        elif isinstance(exc, (socket.error, paramiko.ssh_exception.NoValidConnectionsError)):
            reason = f"host unreachable: {self.host}:{self.port} ({first_line(exc)})"
        else:
            reason = first_line(exc)
        error = ConnectorError("sftp", redact(f"{self.label}: {reason}", secrets))
        error.transient = _is_transient(exc)  # type: ignore[attr-defined]
        return error

    def _retrying(self, what: str, action: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run ``action`` in a session; a dropped line gets a new session after a back-off."""
        attempt = 0
        while True:
            try:
                with self.session() as sftp:
                    try:
                        return action(sftp)
                    except OSError as exc:
                        # paramiko gives SFTP "Failure" (e.g. removing a folder) no errno: that
                        # is the server saying no while the line is up, not a dropped line
                        if exc.errno is None and _line_is_up(sftp):
                            raise _permanent(exc, f"{self.label}: {what}") from None
                        raise
            except ConnectorError as exc:
                if not getattr(exc, "transient", False) or attempt >= self.retries:
                    raise
                failure: str = exc.reason
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not _is_transient(exc):
                    raise _permanent(exc, f"{self.label}: {what}") from None
                if attempt >= self.retries:
                    raise ConnectorError(
                        "sftp", f"{self.label}: {what} failed after {attempt + 1} attempts: {first_line(exc)}"
                    ) from None
                failure = first_line(exc)
            delay = self.backoff_seconds * (2**attempt)
            attempt += 1
            log.warning(
                "%s: %s failed (%s); retry %d/%d in %.1fs",
                self.label,
                what,
                failure,
                attempt,
                self.retries,
                delay,
            )
            time.sleep(delay)

    def list_files(self, folder: str) -> FileListing:
        def action(sftp: paramiko.SFTPClient) -> FileListing:
            try:
                entries = _listdir_bytes(sftp, folder)
            except FileNotFoundError:
                raise ConnectorError("sftp", f"{self.label}: remote folder {folder} is missing") from None
            files, refused = [], []
            for raw, attr in entries:
                if attr.st_mode is None or not stat.S_ISREG(attr.st_mode):
                    continue
                name = accepted(raw, folder, refused)
                if name is not None:
                    path = str(PurePosixPath(folder) / name)
                    files.append(RemoteFile(name, path, attr.st_size or 0, float(attr.st_mtime or 0)))
            return FileListing(files, refused)

        return self._retrying(f"listing {folder}", action)

    def download(self, remote_path: str, local_path: Path) -> Path:
        """Download under a temporary name of its own and rename when complete: no half file
        is ever seen, and two downloads of one file never share a temporary file."""
        local_path.parent.mkdir(parents=True, exist_ok=True)
        partial = local_path.with_name(partial_name(local_path.name))

        def action(sftp: paramiko.SFTPClient) -> Path:
            sftp.get(remote_path, str(partial))
            partial.replace(local_path)
            return local_path

        try:
            return self._retrying(f"download of {remote_path}", action)
        finally:
            partial.unlink(missing_ok=True)

    def upload(self, local_path: Path, remote_path: str) -> None:
        """Upload under a temporary name, then rename: readers never see a partial file."""
        remote = PurePosixPath(remote_path)
        partial = str(remote.with_name(partial_name(remote.name)))

        def action(sftp: paramiko.SFTPClient) -> None:
            sftp.put(str(local_path), partial)
            sftp.posix_rename(partial, remote_path)

        self._retrying(f"upload of {remote_path}", action)

    def rename(self, remote_path: str, new_path: str) -> None:
        def action(sftp: paramiko.SFTPClient) -> None:
            parent = str(PurePosixPath(new_path).parent)
            try:
                sftp.stat(parent)
            except FileNotFoundError:
                sftp.mkdir(parent)
            sftp.posix_rename(remote_path, new_path)

        self._retrying(f"rename of {remote_path}", action)

    def remove(self, remote_path: str) -> None:
        self._retrying(f"removal of {remote_path}", lambda sftp: sftp.remove(remote_path))

    def check_connection(self) -> str:
        """Log in and list every flow's folder; the first fault is the reason."""
        listed = []
        with self.session() as sftp:
            for flow, folder in sorted(self.folders.items()):
                try:
                    count = len(_listdir_bytes(sftp, folder))
                except FileNotFoundError:
                    raise ConnectorError(
                        "sftp", f"{self.label}: remote folder {folder} ({flow}) is missing"
                    ) from None
                except PermissionError:
                    raise ConnectorError(
                        "sftp", f"{self.label}: remote folder {folder} ({flow}) is not readable"
                    ) from None
                listed.append(f"{folder} {count} files")
        return f"{self.label}" + (f" ({', '.join(listed)})" if listed else " (no folders configured)")


def _listdir_bytes(sftp: paramiko.SFTPClient, folder: str) -> list[tuple[bytes, paramiko.SFTPAttributes]]:
    """``listdir_attr`` with the names as the server sent them: paramiko decodes each name as
    UTF-8 and fails the whole listing on one that is not (its own loop, ``get_string`` for
    ``get_text``; paramiko 3's private ``_request``)."""
    from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, SFTPError

    kind, msg = sftp._request(CMD_OPENDIR, sftp._adjust_cwd(folder))  # noqa: SLF001
    if kind != CMD_HANDLE:
        raise SFTPError("Expected handle")
    handle = msg.get_binary()
    found = []
    try:
        while True:
            try:
                kind, msg = sftp._request(CMD_READDIR, handle)  # noqa: SLF001
            except EOFError:
                break
            if kind != CMD_NAME:
                raise SFTPError("Expected name response")
            for _ in range(msg.get_int()):
                raw, longname = msg.get_string(), msg.get_string()
                attr = paramiko.SFTPAttributes._from_msg(msg, raw, longname)  # noqa: SLF001
                if raw not in (b".", b".."):
                    found.append((raw, attr))
    finally:
        sftp._request(CMD_CLOSE, handle)  # noqa: SLF001
    return found


def _permanent(exc: BaseException, context: str) -> Exception:
    """The same kind of error, its message naming the server and the path (paramiko's does not).

    A file-system refusal stays an OSError (FileNotFoundError, PermissionError...) as from
    LocalFilesResource; anything else becomes a ConnectorError.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        message = f"{context}: {exc.strerror or first_line(exc)}"
        return OSError(exc.errno, message, exc.filename) if exc.filename else OSError(exc.errno, message)
    return ConnectorError("sftp", f"{context} failed: {first_line(exc)}")


def _line_is_up(sftp: paramiko.SFTPClient) -> bool:
    """The session still stands (its channel open, its transport active)."""
    channel = sftp.get_channel()
    if channel is None or channel.closed:
        return False
    transport = channel.get_transport()
    return transport is not None and transport.is_active()


def _is_transient(exc: BaseException) -> bool:
    """A dropped or refused line is worth a retry; a refused login or a missing file is not."""
    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException, UnknownHostKey)):
        return False
    if isinstance(exc, paramiko.SSHException):
        return "known_hosts" not in str(exc)
    if isinstance(exc, EOFError):
        return True
    if isinstance(exc, OSError):
        return exc.errno not in _FILE_ERRNOS
    return False
