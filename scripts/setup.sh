# Sourced by scripts/ui.sh and scripts/test.sh: a venv with the project installed.
# Needs only python3.11 (or python3 >= 3.11) on the PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
quiet=(); [ -t 1 ] || quiet=(-q)
.venv/bin/python -m pip install "${quiet[@]}" --disable-pip-version-check -e ".[dev]" \
    2>&1 | grep -v "^WARNING: Location" || true
# as `source .venv/bin/activate` would: dg checks that the active venv is the project's
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
