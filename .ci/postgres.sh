#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the sweep tests (sourced by .ci/run):
# Debian's packages, installed when missing; a fresh cluster in a temporary folder, trust auth
# on loopback only; stopped when the sourcing shell exits.
# Exports STANCERUN_TEST_POSTGRES_URL, and STANCERUN_REQUIRE_POSTGRES=1 so that the test fails
# (rather than skips) if the server is missing.

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }  # set -o pipefail: none is not an error

PG_BIN=$(pg_bin)
if [ -z "$PG_BIN" ]; then
    echo "installing PostgreSQL from Debian's packages"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
    PG_BIN=$(pg_bin)
fi

PG_DATA=$(mktemp -d /tmp/stancerun-pg.XXXXXX)
PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() {  # the server refuses to run as root
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" -eq 0 ] && chown postgres "$PG_DATA"
as_pg "$PG_BIN/initdb" -D "$PG_DATA/db" -U stancerun --auth=trust >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA/db" -l "$PG_DATA/db/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA/db" start >/dev/null
as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U stancerun stancerun
trap 'as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA/db" -m fast stop >/dev/null; rm -rf "$PG_DATA"' EXIT

export STANCERUN_TEST_POSTGRES_URL="postgresql+psycopg2://stancerun@127.0.0.1:$PG_PORT/stancerun"
export STANCERUN_REQUIRE_POSTGRES=1
echo "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
