"""A private OpenSSH server on loopback, for SFTP tests against the real protocol.

Why real sshd and not a paramiko stub: the flows meet OpenSSH in production, and the failure
modes we test (wrong host key, dropped connection, chrooted absolute paths) are sshd's own.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from etl_assets_tests.services._net import HOST, free_port, terminate, wait_for_banner

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = Path("/usr/bin/ssh-keygen")
TEST_USER = "etltest"
# Chroot needs root-owned, non-writable path components all the way up: /tmp (1777) fails.
CHROOT_BASE = Path("/srv/etl-assets-tests")


def _run(cmd: list[str], *, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a setup command and fail loudly with its output (setup errors must be readable)."""
    result = subprocess.run(cmd, input=input_text, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout}{result.stderr}"
        )
    return result


def _ensure_user(password: str) -> pwd.struct_passwd:
    """Create the test user once per machine and give it this run's password.

    Password login with `UsePAM no` checks /etc/shadow directly, so the user must be real.
    """
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        result = subprocess.run(
            ["useradd", "-m", "-s", "/bin/bash", TEST_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        # 9 = "already exists": a parallel session created it first; that is fine.
        if result.returncode not in (0, 9):
            raise RuntimeError(f"useradd {TEST_USER} failed: {result.stderr}") from None
        pw = pwd.getpwnam(TEST_USER)
    _run(["chpasswd"], input_text=f"{TEST_USER}:{password}\n")
    return pw


def _shared_password() -> str:
    """The test user's password, random once per machine and kept root-only in CHROOT_BASE.

    Every test session (several may run at once) sets the same password on the one test
    user: a fresh password per session would break the other sessions' password logins.
    """
    path = CHROOT_BASE / ".etltest_password"
    if not path.exists():
        tmp = CHROOT_BASE / f".etltest_password.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(18))
        try:
            os.link(tmp, path)  # atomic: the first session to get here wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _keygen(path: Path, passphrase: str = "") -> str:
    """Generate an ed25519 key pair with ssh-keygen; return "ssh-ed25519 AAAA..." (no comment)."""
    _run([str(SSH_KEYGEN), "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)])
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _sshd_version() -> tuple[int, int]:
    """Installed OpenSSH version, to decide which config keywords exist."""
    out = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stdout + out.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _descendants(pid: int) -> list[int]:
    """All live descendants of `pid` (read from /proc; per-connection sshd children call
    setsid(), so a process-group kill would miss them)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces or parentheses.
        fields = stat.rpartition(")")[2].split()
        parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found.extend(kids)
        frontier.extend(kids)
    return found


def _kill_all(pids: list[int]) -> int:
    """SIGKILL each pid that still exists; return how many signals were delivered."""
    killed = 0
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


@dataclass
class SshdServer:
    """A running private sshd; `root` is the chroot that remote absolute paths resolve into."""

    host: str
    port: int
    user: str
    password: str
    key_path: Path
    key_with_passphrase_path: Path
    key_passphrase: str
    known_hosts_path: Path
    wrong_known_hosts_path: Path
    root: Path
    log_path: Path
    config_path: Path = field(repr=False)
    _uid: int = field(default=-1, repr=False)
    _gid: int = field(default=-1, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        """Pid of the listening sshd, or None when stopped."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        """(Re)start the listener on the same port; used at setup and for "SFTP back up" tests."""
        if self.pid is not None:
            return
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            start_new_session=True,  # a Ctrl-C in pytest should not hit sshd before cleanup
        )
        try:
            wait_for_banner(self.port, b"SSH-", proc=self._proc, log_path=self.log_path, what="sshd")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the listener and every live session (it does not delete files; exit does)."""
        proc = self._proc
        if proc is not None:
            # Sessions first, while the listener is alive to reap them; then the listener.
            _kill_all(_descendants(proc.pid))
            late = _descendants(proc.pid)  # a session forked in between
            terminate(proc)
            _kill_all(late)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def drop_connections(self) -> int:
        """Kill the per-connection sshd processes, keep the listener: clients see a drop.

        Returns how many processes were killed (0 means no client was connected).
        """
        if self._proc is None:
            return 0
        return _kill_all(_descendants(self._proc.pid))

    def put_file(self, remote_path: str, data: bytes) -> Path:
        """Place a file where the SFTP user sees it as `remote_path`; returns the local path.

        Missing parent directories are created and, like the file, owned by the test user.
        """
        target = (self.root / remote_path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ValueError(f"{remote_path!r} escapes the chroot")
        missing: list[Path] = []
        parent = target.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o755)
            os.chown(directory, self._uid, self._gid)
        target.write_bytes(data)
        os.chown(target, self._uid, self._gid)
        return target


def _write_config(
    path: Path, *, port: int, host_key: Path, pid_file: Path, keys_dir: Path, root: Path
) -> None:
    """Write a self-contained sshd_config (nothing read from /etc/ssh)."""
    lines = [
        f"Port {port}",
        f"ListenAddress {HOST}",
        "AddressFamily inet",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        # sshd reads authorized keys with the user's uid, so they live in a dir the user can read.
        f"AuthorizedKeysFile {keys_dir}/%u_keys",
        "PasswordAuthentication yes",
        "PubkeyAuthentication yes",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin no",
        "UseDNS no",
        "LogLevel VERBOSE",
        "MaxStartups 100:30:200",
        "Subsystem sftp internal-sftp",
    ]
    if _sshd_version() >= (9, 8):
        # Newer sshd penalises sources after failed logins: tests fail logins on purpose.
        lines.append("PerSourcePenalties no")
    lines += [
        f"Match User {TEST_USER}",
        f"    ChrootDirectory {root}",
        "    ForceCommand internal-sftp",
        "    AllowTcpForwarding no",
        "    X11Forwarding no",
        "",
    ]
    path.write_text("\n".join(lines))


@contextmanager
def start_sshd(workdir: Path) -> Iterator[SshdServer]:
    """Start a private chrooted SFTP server on a free loopback port; clean everything on exit.

    Needs root (chroot, useradd, password login) and openssh-server installed.
    """
    if not SSHD.exists():
        raise RuntimeError("openssh-server is not installed: apt-get install -y openssh-server")
    token = secrets.token_hex(6)
    confdir = Path(workdir) / f"sshd-{token}"
    confdir.mkdir(parents=True)
    CHROOT_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(CHROOT_BASE, 0, 0)
    CHROOT_BASE.chmod(0o755)
    password = _shared_password()
    pw = _ensure_user(password)

    base = CHROOT_BASE / token
    base.mkdir(mode=0o755)
    server: SshdServer | None = None
    try:
        base.chmod(0o755)  # mkdir's mode is masked by the umask
        root = base / "chroot"
        root.mkdir(mode=0o755)
        root.chmod(0o755)
        outbound = root / "outbound"
        outbound.mkdir()
        os.chown(outbound, pw.pw_uid, pw.pw_gid)
        outbound.chmod(0o755)
        keys_dir = base / "keys"
        keys_dir.mkdir(mode=0o755)
        keys_dir.chmod(0o755)

        port = free_port()
        host_key = confdir / "ssh_host_ed25519_key"
        host_pub = _keygen(host_key)
        wrong_pub = _keygen(confdir / "wrong_host_ed25519_key")
        key_path = confdir / "id_ed25519"
        key_pub = _keygen(key_path)
        passphrase = secrets.token_urlsafe(12)
        key_pp_path = confdir / "id_ed25519_passphrase"
        key_pp_pub = _keygen(key_pp_path, passphrase)
        authorized = keys_dir / f"{TEST_USER}_keys"
        authorized.write_text(f"{key_pub}\n{key_pp_pub}\n")
        authorized.chmod(0o644)

        known_hosts = confdir / "known_hosts"
        known_hosts.write_text(f"[{HOST}]:{port} {host_pub}\n")
        wrong_known_hosts = confdir / "known_hosts_wrong"
        wrong_known_hosts.write_text(f"[{HOST}]:{port} {wrong_pub}\n")

        config = confdir / "sshd_config"
        _write_config(
            config,
            port=port,
            host_key=host_key,
            pid_file=confdir / "sshd.pid",
            keys_dir=keys_dir,
            root=root,
        )
        server = SshdServer(
            host=HOST,
            port=port,
            user=TEST_USER,
            password=password,
            key_path=key_path,
            key_with_passphrase_path=key_pp_path,
            key_passphrase=passphrase,
            known_hosts_path=known_hosts,
            wrong_known_hosts_path=wrong_known_hosts,
            root=root,
            log_path=confdir / "sshd.log",
            config_path=config,
            _uid=pw.pw_uid,
            _gid=pw.pw_gid,
        )
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
