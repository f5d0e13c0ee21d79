#!/usr/bin/env bash
# PostgreSQL for the ledger's `postgres` tests: install Debian's server, start the default cluster
# (no systemd here, so through pg_ctlcluster), and create the test role and database.
# Idempotent: safe to run again while the server is up.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PG_USER="${AR_TEST_PG_USER:-ar_test}"
PG_PASSWORD="${AR_TEST_PG_PASSWORD:-ar_test}"
PG_DB="${AR_TEST_PG_DB:-ar_ledger_test}"

if ! command -v pg_lsclusters >/dev/null || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    pg_createcluster 15 main >/dev/null
fi

read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
if [ "${status}" != "online" ]; then
    pg_ctlcluster "${version}" "${cluster}" start
fi

for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "${port}"; then
        break
    fi
    sleep 0.5
done
pg_isready -h 127.0.0.1 -p "${port}"

as_postgres() { runuser -u postgres -- "$@"; }
if [ "$(as_postgres psql -p "${port}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '${PG_USER}'")" != "1" ]; then
    as_postgres psql -p "${port}" -q -c "CREATE ROLE ${PG_USER} LOGIN PASSWORD '${PG_PASSWORD}'"
fi
if [ "$(as_postgres psql -p "${port}" -tAc "SELECT 1 FROM pg_database WHERE datname = '${PG_DB}'")" != "1" ]; then
    as_postgres createdb -p "${port}" -O "${PG_USER}" "${PG_DB}"
fi
echo "postgresql ready: postgresql://${PG_USER}:***@127.0.0.1:${port}/${PG_DB}"
