"""Small loopback helpers shared by the service starters (free ports, readiness polls)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """Ask the kernel for an unused loopback port (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path | None, limit: int = 4000) -> str:
    """Return the end of a log file for error messages (empty if it does not exist yet)."""
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")[-limit:]


def wait_for_banner(
    port: int,
    prefix: bytes,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    timeout: float = 10.0,
    what: str = "service",
) -> None:
    """Poll until a TCP connect on loopback returns a greeting starting with `prefix`.

    A bare connect can succeed before the server really serves (or hit a stranger that grabbed
    the port), so wait for the protocol banner; fail fast if our process already exited.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {proc.returncode} before accepting connections "
                f"on {HOST}:{port}\n{_tail(log_path)}"
            )
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                data = b""
                while not data.endswith(b"\n") and len(data) < 512:
                    chunk = sock.recv(512)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(prefix):
                    return
                last_error = RuntimeError(f"unexpected banner {data!r}")
        except OSError as exc:
            last_error = exc
        time.sleep(0.02)
    raise RuntimeError(
        f"{what} did not answer on {HOST}:{port} within {timeout} s ({last_error})\n{_tail(log_path)}"
    )


def terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
