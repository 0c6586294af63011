"""Connector faults as one exception type whose message is safe to show anywhere."""

from __future__ import annotations

from collections.abc import Iterable


class ConnectorError(Exception):
    """A connector failed; ``reason`` is short, actionable and holds no secret."""

    def __init__(self, connector: str, reason: str) -> None:
        super().__init__(f"{connector}: {reason}")
        self.connector = connector
        self.reason = reason


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Remove every secret value from a driver's message before it goes anywhere."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
