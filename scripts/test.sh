#!/usr/bin/env bash
# Runs the whole test suite against SQLite and PostgreSQL.
#
# PostgreSQL: uses $BACKROOM_TEST_DATABASE_URL when set (a superuser URL; each test creates
# its own database). Otherwise it starts a throw-away PostgreSQL 15 cluster in a temporary
# directory, installing Debian's postgresql-15 first if the server binaries are missing and
# this is a root shell with apt. It never silently skips the PostgreSQL half.
# Stripe: starts localstripe (a fake Stripe, installed pinned into the test virtualenv by
# scripts/localstripe.sh) on a free loopback port unless $BACKROOM_TEST_STRIPE_URL is set, and
# stops it at the end; the Stripe tests fail, never skip, under CI without it.
# After `cargo test` it runs scripts/schemathesis.sh (property-based API tests, both databases),
# then scripts/readme.sh (the README's commands as written; no link outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[test.sh]\033[0m %s\n' "$*" >&2; }

find_pg_bin() {
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

cleanup() {
  if [ -n "${STARTED_LOCALSTRIPE:-}" ]; then
    ./scripts/localstripe.sh stop || true
  fi
  if [ -n "${PGDATA_DIR:-}" ] && [ -d "$PGDATA_DIR" ]; then
    run_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PGDATA_DIR"
  fi
}

run_pg() {
  # initdb and postgres refuse to run as root: run them as the postgres user then.
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -z "${BACKROOM_TEST_DATABASE_URL:-}" ]; then
  if ! PG_BIN=$(find_pg_bin); then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      log "PostgreSQL server binaries not found; installing postgresql-15 from Debian"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
      PG_BIN=$(find_pg_bin) || { log "postgresql-15 installed but initdb not found"; exit 1; }
    else
      log "PostgreSQL 15 server binaries are required (Debian: apt-get install postgresql-15),"
      log "or set BACKROOM_TEST_DATABASE_URL to a PostgreSQL superuser URL."
      exit 1
    fi
  fi
  if [ "$(id -u)" = "0" ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
  fi
  PGDATA_DIR=$(mktemp -d /tmp/backroom-pg.XXXXXX)
  chmod 755 "$PGDATA_DIR"
  [ "$(id -u)" = "0" ] && chown postgres "$PGDATA_DIR"
  trap cleanup EXIT
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  log "starting a temporary PostgreSQL ($PG_BIN) on port $PORT"
  run_pg "$PG_BIN/initdb" -D "$PGDATA_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
  # fsync off: this cluster is thrown away after the run; the product's own durability
  # settings (synchronous_commit=on) are unaffected.
  run_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR/data" -l "$PGDATA_DIR/log" -w -o \
    "-p $PORT -k $PGDATA_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400 -c shared_buffers=128MB" start >/dev/null
  export BACKROOM_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
fi

log "PostgreSQL for tests: ${BACKROOM_TEST_DATABASE_URL%%@*}@…"

trap cleanup EXIT
if [ -z "${BACKROOM_TEST_STRIPE_URL:-}" ]; then
  log "starting localstripe (a fake Stripe) for the Stripe tests"
  STRIPE_EXPORT=$(./scripts/localstripe.sh start) || { log "could not start localstripe"; exit 1; }
  eval "$STRIPE_EXPORT"
  STARTED_LOCALSTRIPE=1
fi
log "fake Stripe for tests: $BACKROOM_TEST_STRIPE_URL"
cargo test --workspace --locked "$@"

# The API against its own OpenAPI document, on SQLite and on this PostgreSQL (schemathesis,
# installed pinned into target/ on first use; fails, never skips, when python3 is missing).
log "schemathesis: property-based API tests against /openapi.json"
./scripts/schemathesis.sh

# The README's shell examples, run as written on a copy of the repository, and a check that no
# file points outside the repository (scripts/readme.sh).
log "readme.sh: the README's commands, as written"
./scripts/readme.sh
