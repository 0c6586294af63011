#!/usr/bin/env bash
# The whole test suite. Installs what the tests need (openssh-server, the PostgreSQL
# server binaries) when run as root on Debian, then runs pytest; every service is
# started by the tests themselves on loopback.
source "$(dirname "$0")/setup.sh"
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${need[*]} for the tests" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "the tests need: ${need[*]} (apt-get install -y ${need[*]}, as root)" >&2
        exit 2
    fi
fi
# Two workers, a test file each at a time (a module's fixtures stay in one process); each
# worker starts its own PostgreSQL, sshd and SMTP server. ETL_TEST_WORKERS=0 runs in one process.
exec .venv/bin/pytest -n "${ETL_TEST_WORKERS:-2}" --dist loadfile "$@"
