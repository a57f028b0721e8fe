#!/usr/bin/env bash
# Make sure a local PostgreSQL (Debian's package) runs for the tests; print its admin URL on stdout.
# `make test` calls this; each test that uses PostgreSQL creates and drops its own database there.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 ||
    { as_root apt-get update -q >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
fi
if [ -z "$(pg_lsclusters -h)" ]; then
  as_root pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main >&2
fi
read -r version cluster port status _ < <(pg_lsclusters -h | head -1)
if [ "$status" != "online" ]; then
  as_root pg_ctlcluster "$version" "$cluster" start >&2
fi
if ! as_postgres psql -p "$port" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'openi2v_test'" | grep -q 1; then
  as_postgres psql -p "$port" -qc "CREATE ROLE openi2v_test LOGIN SUPERUSER PASSWORD 'openi2v_test'" >&2
fi
echo "postgresql+psycopg://openi2v_test:openi2v_test@127.0.0.1:$port/postgres"
