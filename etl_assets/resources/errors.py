"""Connector faults as one exception type whose message is safe to show anywhere."""

from __future__ import annotations

from collections.abc import Iterable

from etl_assets.settings.secrets import SecretError, decrypt


class ConnectorError(Exception):
    """A connector failed; ``reason`` is short, actionable and holds no secret."""

    def __init__(self, connector: str, reason: str, transient: bool = False) -> None:
        super().__init__(f"{connector}: {reason}")
        self.connector = connector
        self.reason = reason
        self.transient = transient  # worth another try: a 4xx, a connection lost or refused


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


def reveal(connector: str, token: str, setting: str) -> str | None:
    """The clear text of a password token at connect time (None when unset); a key fault
    becomes the connector's error, naming the setting."""
    if not token:
        return None
    try:
        return decrypt(token, setting)
    except SecretError as exc:
        raise ConnectorError(connector, str(exc)) from None
