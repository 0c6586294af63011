"""A private PostgreSQL cluster on loopback, for tests that restart or kill the database.

Why not the shared server on :5432: restarting it would hit every other user of the machine,
and password authentication (scram) needs a pg_hba we control.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from etl_assets_tests.services._net import HOST, free_port

if TYPE_CHECKING:
    import sqlalchemy as sa

PG_USER = "postgres"
# sun_path is 108 bytes; keep a margin for "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 80


def find_pg_bin() -> Path:
    """Newest /usr/lib/postgresql/<major>/bin holding initdb (Debian layout)."""
    candidates = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            major = re.match(r"\d+", bindir.parent.name)
            candidates.append((int(major.group()) if major else 0, bindir))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install -y postgresql")
    return max(candidates)[1]


def _traversable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Can that user reach entries under `path` (execute permission on every ancestor)?"""
    for part in [path, *path.parents]:
        st = part.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
    return True


def _as_postgres(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a server tool as the postgres OS user (initdb and pg_ctl refuse root)."""
    result = subprocess.run(
        ["runuser", "-u", PG_USER, "--", *cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


@dataclass
class PostgresServer:
    """A running private cluster; `url(db)` gives a SQLAlchemy URL with the password."""

    host: str
    port: int
    user: str
    password: str
    data_dir: Path
    log_path: Path
    bin_dir: Path = field(repr=False)
    base_dir: Path = field(repr=False)
    _remove_dir: Path | None = field(default=None, repr=False)
    _running: bool = field(default=False, repr=False)

    def url(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) for a database on this cluster."""
        return (
            f"postgresql+psycopg://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    def dsn(self, database: str = "postgres") -> str:
        """libpq connection string (quoted by psycopg) for psycopg.connect()."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
        )

    def _admin_execute(self, sql: object) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str) -> None:
        """CREATE DATABASE name (quoted as an identifier)."""
        from psycopg import sql

        self._admin_execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS name WITH (FORCE): ends open connections to it first."""
        from psycopg import sql

        self._admin_execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    @contextmanager
    def own_engine(self, prefix: str) -> Iterator[sa.Engine]:
        """An engine on a fresh database of its own (``<prefix>_<random>``), dropped after."""
        import sqlalchemy as sa

        name = f"{prefix}_{secrets.token_hex(6)}"
        self.create_database(name)
        engine = sa.create_engine(self.url(name))
        try:
            yield engine
        finally:
            engine.dispose()
            self.drop_database(name)

    def _pg_ctl(self, *args: str) -> None:
        _as_postgres(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                "30",
                *args,
            ],
            cwd=self.base_dir,
        )

    def start(self) -> None:
        """Start the cluster (after pause()) and wait until it accepts connections."""
        if not self._running:
            self._pg_ctl("start")
            self._running = True

    def pause(self) -> None:
        """Stop the server but keep the data, for "database down, then up" tests."""
        if self._running:
            self._pg_ctl("stop", "-m", "fast")
            self._running = False

    def restart(self) -> None:
        """pg_ctl restart -m fast: open connections then fail with AdminShutdown."""
        self._pg_ctl("restart", "-m", "fast")
        self._running = True

    def stop(self) -> None:
        """Stop the server (fast) and delete the cluster directory."""
        try:
            if self._running or (self.data_dir / "postmaster.pid").exists():
                try:
                    self._pg_ctl("stop", "-m", "fast")
                except RuntimeError:
                    # Already down (e.g. killed by a test): make sure nothing is left running.
                    subprocess.run(
                        [
                            "runuser",
                            "-u",
                            PG_USER,
                            "--",
                            str(self.bin_dir / "pg_ctl"),
                            "-D",
                            str(self.data_dir),
                            "stop",
                            "-m",
                            "immediate",
                        ],
                        cwd=self.base_dir,
                        capture_output=True,
                        check=False,
                    )
                self._running = False
        finally:
            if self._remove_dir is not None:
                shutil.rmtree(self._remove_dir, ignore_errors=True)
                self._remove_dir = None


@contextmanager
def start_postgres(workdir: Path) -> Iterator[PostgresServer]:
    """initdb + start a throwaway cluster on a free loopback port; stop and delete on exit.

    Host connections need the generated password (scram-sha-256), as in production.
    """
    bin_dir = find_pg_bin()
    import grp
    import pwd

    pw = pwd.getpwnam(PG_USER)
    gids = {pw.pw_gid, *(g.gr_gid for g in grp.getgrall() if PG_USER in g.gr_mem)}

    workdir = Path(workdir).resolve()
    name = f"postgres-{secrets.token_hex(4)}"
    remove_dir: Path
    if _traversable_by(workdir, pw.pw_uid, gids) and len(str(workdir / name)) < _MAX_SOCKET_DIR:
        base = workdir / name
        remove_dir = base
    else:
        # pytest's /tmp/pytest-of-root is 0700: the postgres user cannot reach it.
        holder = Path(tempfile.mkdtemp(prefix="etl-assets-pg-", dir="/var/tmp"))
        holder.chmod(0o755)
        base = holder / "pg"
        remove_dir = holder
    server: PostgresServer | None = None
    try:
        subprocess.run(
            ["install", "-d", "-o", PG_USER, "-g", str(pw.pw_gid), "-m", "700", str(base)],
            check=True,
        )
        password = secrets.token_urlsafe(18)
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        pwfile.chmod(0o600)
        data_dir = base / "data"
        _as_postgres(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                PG_USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            cwd=base,
        )
        pwfile.unlink()
        port = free_port()
        # In postgresql.conf, not `pg_ctl -o`: options given with -o are lost on restart.
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# etl_assets_tests private cluster\n"
                f"listen_addresses = '{HOST}'\n"
                f"port = {port}\n"
                f"unix_socket_directories = '{base}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
            )
        server = PostgresServer(
            host=HOST,
            port=port,
            user=PG_USER,
            password=password,
            data_dir=data_dir,
            log_path=base / "server.log",
            bin_dir=bin_dir,
            base_dir=base,
            _remove_dir=remove_dir,
        )
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        else:
            shutil.rmtree(remove_dir, ignore_errors=True)
