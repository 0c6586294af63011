"""The CLI commands of the Dagster instance and its workers: ``dagster-yaml`` writes an
environment's ``dagster.yaml``, ``exec`` starts a Dagster process with the instance's and the
broker's passwords in its environment (decrypted here, written nowhere), ``worker`` starts a
Celery worker on one queue, ``pools`` makes each flow's concurrency pool before runs claim it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from etl_assets.model.declarations import flows_of_environment
from etl_assets.orchestration.executor import executor_environment, pool_of
from etl_assets.orchestration.instance_config import PASSWORD_ENV, instance_environment, instance_yaml
from etl_assets.settings import load_settings

EXIT_OK, EXIT_USAGE = 0, 2
CELERY_COMMAND = (sys.executable, "-m", "celery")  # the celery of this interpreter's environment


def add_parsers(commands: argparse._SubParsersAction, env: argparse.ArgumentParser) -> None:
    instance = commands.add_parser(
        "dagster-yaml", parents=[env], help="write the environment's Dagster instance (dagster.yaml)"
    )
    instance.add_argument(
        "--dagster-home", type=Path, help="folder to write dagster.yaml into (default: DAGSTER_HOME)"
    )
    instance.add_argument("--stdout", action="store_true", help="print it instead of writing it")
    run = commands.add_parser(
        "exec",
        parents=[env],
        help="run a command (dagster-webserver, dagster-daemon, dagster ...) with the instance's password "
        "in its environment",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG ...]")
    worker = commands.add_parser(
        "worker", parents=[env], help="start a Celery worker for the environment's executor (one queue)"
    )
    worker.add_argument("--queue", choices=("io", "cpu"), default="io", help="kind of work (default io)")
    worker.add_argument("--name", help="worker name (default: etl-<queue>-<pid>)")
    worker.add_argument(
        "--concurrency", type=int, help="tasks at once (default: executor.worker_concurrency)"
    )
    pools = commands.add_parser(
        "pools",
        parents=[env],
        help="make each flow's concurrency pool in the instance (executor.connections_per_flow slots)",
    )
    pools.add_argument("--reset", action="store_true", help="set pools that exist to the settings' limit too")


def _dagster_yaml(args: argparse.Namespace) -> int:
    settings = load_settings(args.env)
    text = instance_yaml(settings)
    if args.stdout:
        print(text, end="")
        return EXIT_OK
    home = args.dagster_home or (Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME") else None)
    if home is None:
        print("etl-assets: give --dagster-home DIR, or set DAGSTER_HOME", file=sys.stderr)
        return EXIT_USAGE
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    temporary = path.with_name(".dagster.yaml.part")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    print(f"wrote {path} (environment {settings.env}, storage {settings.instance.storage})")
    if settings.instance.storage == "postgresql" and settings.instance.postgres.password is not None:
        print(
            f"its processes read the password from ${PASSWORD_ENV}: start them with etl-assets exec -e "
            f"{settings.env} -- <command>"
        )
    return EXIT_OK


def _exec(args: argparse.Namespace) -> int:
    """Replace this process by the command, with ETL_ENV and the instance password set: the
    password is decrypted here and exists only in that process's environment."""
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print(
            "etl-assets: give the command after --, e.g. etl-assets exec -e prod -- dagster-daemon run",
            file=sys.stderr,
        )
        return EXIT_USAGE
    settings = load_settings(args.env)
    environment = {
        **os.environ,
        "ETL_ENV": settings.env,
        **instance_environment(settings),
        **executor_environment(settings),
    }
    try:
        os.execvpe(argv[0], argv, environment)
    except FileNotFoundError:
        print(f"etl-assets: no command {argv[0]!r} on PATH", file=sys.stderr)
        return EXIT_USAGE


def _worker(args: argparse.Namespace) -> int:
    """Replace this process by ``celery worker`` on the queue of that kind of work, with the
    broker's URL and the instance's password in its environment only."""
    settings = load_settings(args.env)
    if settings.executor.kind != "celery":
        print(
            f"etl-assets: environment {settings.env} runs steps in process (executor.kind: "
            f"{settings.executor.kind}): set executor.kind: celery for workers",
            file=sys.stderr,
        )
        return EXIT_USAGE
    queue = settings.executor.queues[args.queue]
    concurrency = args.concurrency or settings.executor.worker_concurrency[args.queue]
    name = args.name or f"etl-{args.queue}-{os.getpid()}"
    argv = [
        *CELERY_COMMAND,
        "-A",
        "etl_assets.orchestration.celery_app",
        "worker",
        "-Q",
        queue,
        "-n",
        f"{name}@%h",
        "-c",
        str(concurrency),
        "--prefetch-multiplier=1",
        "--loglevel=INFO",
    ]
    environment = {
        **os.environ,
        "ETL_ENV": settings.env,
        **instance_environment(settings),
        **executor_environment(settings, worker=True),
    }
    os.execvpe(argv[0], argv, environment)


def _pools(args: argparse.Namespace) -> int:
    """Each flow's pool (``etl_flow_<flow>``) made once, with ``connections_per_flow`` slots:
    Dagster 1.13 otherwise makes a pool's row at its first claim, and two runs claiming a new
    pool at once race on that insert (one fails on a unique violation). A pool that exists
    keeps the limit an operator gave it unless ``--reset``."""
    import dagster as dg

    settings = load_settings(args.env)
    if settings.executor.kind != "celery":
        print(f"environment {settings.env} runs steps in process: its flows use no pools")
        return EXIT_OK
    os.environ.update(instance_environment(settings))  # the dagster.yaml reads its password here
    limit = settings.executor.connections_per_flow
    flows = [f.flow.name for f in flows_of_environment(settings.flow_dirs, settings.env)]
    try:
        instance = dg.DagsterInstance.get()
    except dg.DagsterHomeNotSetError:
        print("etl-assets: DAGSTER_HOME is not set: the folder dagster-yaml wrote", file=sys.stderr)
        return EXIT_USAGE
    with instance:
        storage = instance.event_log_storage
        if not storage.supports_global_concurrency_limits:
            print(
                f"etl-assets: the instance in {instance.root_directory} keeps no pools (SQLite storage): "
                f"write it with etl-assets dagster-yaml -e {settings.env}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        existing = storage.get_concurrency_keys()
        for flow in flows:
            pool = pool_of(flow)
            if pool in existing and not args.reset:
                print(f"{pool}: kept, {storage.get_concurrency_info(pool).slot_count} slots")
                continue
            storage.set_concurrency_slots(pool, limit)
            print(f"{pool}: {limit} slots")
    return EXIT_OK


COMMANDS = {"dagster-yaml": _dagster_yaml, "exec": _exec, "worker": _worker, "pools": _pools}
