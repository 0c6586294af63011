#!/usr/bin/env bash
# The Dagster UI on sample data with the embedded dev defaults (SQLite, ETL_HOME/import,
# e-mails to ETL_HOME/logs/outbox): no server needed. Open http://127.0.0.1:3000
source "$(dirname "$0")/setup.sh"
export ETL_ENV="${ETL_ENV:-dev}" ETL_HOME="${ETL_HOME:-$PWD/var}"
export DAGSTER_HOME="${DAGSTER_HOME:-$ETL_HOME/dagster_home}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp etl_assets/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
# Sample files on first start, so the companies flow has something to load and catch.
compgen -G "$ETL_HOME/import/*.csv" >/dev/null || etl-assets demo-data >/dev/null
# dg dev (Dagster 1.13's successor of `dagster dev`): the webserver and the daemon, on the
# project's code location as pyproject.toml's [tool.dg] names it.
exec dg dev -h "${HOST:-127.0.0.1}" -p "${PORT:-3000}"
