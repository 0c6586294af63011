"""The ``etl-assets`` console script: a thin shell over settings, resources and the flows.

Exit status: 0 success, 1 the work failed, 2 a usage or settings error. Errors are one
line on stderr that says what to do.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from etl_assets.cli import ledger, runs
from etl_assets.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from etl_assets.orchestration import instance_cli
from etl_assets.resources import build_resources, test_connections
from etl_assets.sdk import cli as flows_cli
from etl_assets.settings import (
    ENVIRONMENTS,
    SecretError,
    SettingsError,
    encrypt,
    init_key,
    load_settings,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etl-assets", description=__doc__.splitlines()[0])
    env = argparse.ArgumentParser(add_help=False)
    env.add_argument("-e", "--env", choices=ENVIRONMENTS, help="environment (default: ETL_ENV, else dev)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enc = commands.add_parser("encrypt-password", help="print an enc: token for the settings file")
    enc.add_argument("password", nargs="?", help="the password (read from stdin when left out)")

    key = commands.add_parser("init-key", help="create the secret key file (0600)")
    key.add_argument(
        "--path", type=Path, help="where (default: ETL_SECRET_KEY_FILE or ~/.config/etl_assets/secret.key)"
    )
    key.add_argument("--force", action="store_true", help="replace an existing key (old tokens stop working)")

    conn = commands.add_parser("test-connections", parents=[env], help="try every configured connector")
    conn.add_argument(
        "--send-test-email", action="store_true", help="also send a test e-mail to the recipients"
    )
    demo = commands.add_parser(
        "demo-data",
        parents=[env],
        help="write sample source files to ETL_HOME/import, the dev CRM's contacts to data/crm.sqlite",
    )
    demo.add_argument("--days", type=int, default=3, help="how many daily files, up to today (default 3)")
    demo.add_argument("--rows", type=int, default=40, help="good rows per file (default 40)")
    demo.add_argument("--to", type=Path, help="folder (default: ETL_HOME/import)")
    runs.add_parsers(commands, env)
    instance_cli.add_parsers(commands, env)
    ledger.add_parsers(commands, env)
    flows_cli.add_parser(commands, env)
    return parser


def _demo_data(args: argparse.Namespace) -> int:
    from etl_assets.resources import build_resources
    from etl_assets.samples import write_crm_demo_data, write_demo_data

    settings = load_settings(args.env)
    target = args.to or Path(settings.home).expanduser() / "import"
    for path in write_demo_data(target, days=args.days, rows_per_day=args.rows):
        print(path)
    crm = settings.sources.get("crm")
    if crm is not None and crm.driver == "sqlite":  # the dev CRM only: never a real one
        connector = build_resources(settings)["sources"].connector("crm")  # type: ignore[attr-defined]
        rows = write_crm_demo_data(connector.engine(), days=args.days, rows_per_day=args.rows)
        print(f"{connector.sqlite_file} (contacts: {rows} rows)")
    return EXIT_OK


def _encrypt_password(args: argparse.Namespace) -> int:
    if args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.read().rstrip("\r\n")
    if not password:
        print("etl-assets: empty password: give one as argument or on stdin", file=sys.stderr)
        return EXIT_USAGE
    print(encrypt(password))
    return EXIT_OK


def _init_key(args: argparse.Namespace) -> int:
    path = init_key(args.path, force=args.force)
    print(f"created {path} (mode 0600); keep it outside the repository and back it up")
    return EXIT_OK


def _test_connections(args: argparse.Namespace) -> int:
    settings = load_settings(args.env)
    results = test_connections(build_resources(settings), send_test_email=args.send_test_email)
    print(f"test-connections, environment {settings.env}:")
    for result in results:
        print(result.line())
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


COMMANDS = {
    **runs.COMMANDS,
    "encrypt-password": _encrypt_password,
    "init-key": _init_key,
    "test-connections": _test_connections,
    "demo-data": _demo_data,
    **instance_cli.COMMANDS,
    "flows": flows_cli.run,
    **ledger.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    logging.basicConfig(level=logging.WARNING, format="etl-assets: %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (SettingsError, SecretError) as exc:
        print(f"etl-assets: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
