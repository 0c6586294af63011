"""test-connections: try every configured connector for real, one line each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from etl_assets.resources.errors import ConnectorError, first_line
from etl_assets.resources.mailer import MailerResource
from etl_assets.resources.sources import SourcesResource

CHECKED = ("database", "files", "mailer")
NAMES = {"database": "database", "files": "sftp", "mailer": "mail"}


@dataclass(frozen=True)
class ConnectionResult:
    """The outcome for one connector: OK with what was reached, or FAIL with the reason."""

    connector: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.connector:<8} {'OK' if self.ok else 'FAIL':<4} {self.detail}"


def test_connections(
    resources: Mapping[str, object], *, send_test_email: bool = False
) -> list[ConnectionResult]:
    """Check ``database``, each source connector, ``files`` and ``mailer`` in turn; never raises
    for a fault."""
    checked: list[tuple[str, object]] = [(NAMES[key], resources[key]) for key in CHECKED]
    sources = resources.get("sources")
    if isinstance(sources, SourcesResource):  # after the target: sources.crm, ...
        checked[1:1] = [(f"sources.{n}", c) for n, c in sorted(sources.connectors.items())]
    results = []
    for name, resource in checked:
        try:
            if isinstance(resource, MailerResource):
                detail = resource.check_connection(send_test_email=send_test_email)
            else:
                detail = resource.check_connection()  # type: ignore[attr-defined]
            results.append(ConnectionResult(name, True, detail))
        except ConnectorError as exc:
            results.append(ConnectionResult(name, False, exc.reason))
        except Exception as exc:  # an unforeseen fault is still one FAIL line, not a crash
            results.append(ConnectionResult(name, False, f"{type(exc).__name__}: {first_line(exc)}"))
    return results


test_connections.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
