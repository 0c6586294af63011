"""Subprocess entry point for the test SMTP server (aiosmtpd) that stores mail as files.

It runs in its own process so a test can stop it and start it again ("SMTP down, then up")
without touching the pytest process's event loop, and so readers only ever see files.

Usage: python -m etl_assets_tests.services.smtp_server --port P --maildir D
       [--cert C --key K] [--user U --password W]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


class MaildirHandler:
    """Write every accepted message to its own file, atomically (temp name, then rename)."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self._counter = itertools.count()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        """Store the raw bytes exactly as received plus a JSON sidecar with the envelope; while
        ``.defer`` holds a count above 0, answer 451 instead (and count down), as a server that
        is busy or greylisting does."""
        defer = self.maildir / ".defer"
        left = int(defer.read_text() or 0) if defer.exists() else 0
        if left > 0:
            self._write_atomic(defer, str(left - 1).encode())
            return "451 4.3.0 Try again later (deferred by the test)"
        # Nanosecond time first: names sort by arrival even across server restarts.
        stem = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}"
        content = envelope.original_content or b""
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": list(session.peer) if session.peer else None,
        }
        # The sidecar lands first, so whoever sees the .eml also finds its envelope.
        self._write_atomic(self.maildir / f"{stem}.json", json.dumps(meta).encode())
        self._write_atomic(self.maildir / f"{stem}.eml", content)
        return "250 Message accepted for delivery"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_bytes(data)
        os.replace(tmp, path)


class SingleUserAuthenticator:
    """Accept exactly one user/password pair (used for LOGIN and PLAIN)."""

    def __init__(self, user: str, password: str) -> None:
        self.user = user.encode()
        self.password = password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        return AuthResult(success=ok, handled=False)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, start the controller, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args(argv)
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    args.maildir.mkdir(parents=True, exist_ok=True)

    kwargs: dict[str, Any] = {}
    tls = args.cert is not None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(args.cert), str(args.key))
        kwargs.update(tls_context=context, require_starttls=True)
    if args.user is not None:
        kwargs.update(
            authenticator=SingleUserAuthenticator(args.user, args.password),
            auth_required=True,
            auth_require_tls=tls,
        )

    controller = Controller(MaildirHandler(args.maildir), hostname=args.host, port=args.port, **kwargs)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller.start()
    print(f"smtp_server listening on {args.host}:{args.port}", flush=True)
    try:
        stop.wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
