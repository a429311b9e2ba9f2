#!/usr/bin/env bash
# Property-based API tests: schemathesis generates requests (valid and invalid) from the
# server's own OpenAPI document and checks every answer: no 5xx, only documented statuses and
# content types, bodies that match the documented schemas.
#
# It builds the debug `backroom` binary, seeds the demo store in a temporary data directory,
# creates an owner API key (so the /admin operations are tested past authentication), starts
# `backroom serve` on a free port and runs schemathesis against /openapi.json. SQLite always;
# PostgreSQL too when $BACKROOM_TEST_DATABASE_URL is set (a superuser URL: a fresh database is
# created on that server, like the cargo tests do, and dropped afterwards).
#
# schemathesis is installed, pinned, into a virtualenv under target/ on first use (needs
# python3 with venv and access to PyPI). Exits non-zero on any failure.
#
# Settings: SCHEMATHESIS_MAX_EXAMPLES (test cases per operation and phase, default 50),
# SCHEMATHESIS_SEED (default: a random seed, printed so a failure can be replayed).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-50}
TARGET=${CARGO_TARGET_DIR:-target}
VENV="$(realpath -m "$TARGET")/schemathesis-venv"

log() { printf '\033[1m[schemathesis.sh]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# ---- schemathesis, pinned, in a virtualenv ------------------------------------------------
command -v python3 >/dev/null || die "python3 is required (Debian: apt-get install python3 python3-venv)"
if [ ! -x "$VENV/bin/st" ] || [ "$("$VENV/bin/st" --version 2>/dev/null)" != "st, version $SCHEMATHESIS_VERSION" ]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed: install the venv module (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || die "could not install schemathesis $SCHEMATHESIS_VERSION from PyPI"
fi

# ---- the binary ---------------------------------------------------------------------------
log "building the debug backroom binary"
cargo build --locked --quiet -p backroom
BIN="$(realpath "$TARGET")/debug/backroom"
[ -x "$BIN" ] || die "$BIN not found after cargo build"

WORK=$(mktemp -d /tmp/backroom-schemathesis.XXXXXX)
SERVER_PID=""
PG_ADMIN_URL=""
PG_DB=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "$PG_DB" ]; then
    psql "$PG_ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# run_against NAME [DATABASE_URL]: seeds a store, serves it and runs schemathesis against it
# (SQLite in the data directory without DATABASE_URL).
run_against() {
  local name=$1 db_url=${2:-}
  local data="$WORK/$name"
  mkdir -p "$data"
  export BACKROOM_DATA_DIR="$data"
  if [ -n "$db_url" ]; then export BACKROOM_DATABASE_URL="$db_url"; else unset BACKROOM_DATABASE_URL; fi
  "$BIN" seed --demo >/dev/null
  local key
  key=$("$BIN" admin create-key --role owner --name schemathesis 2>/dev/null)
  [ -n "$key" ] || die "$name: could not create an API key"

  # Port 0: the server picks a free port and prints it. Rate limits off: every generated
  # request comes from this one address, and a 429 would test nothing of the route.
  BACKROOM_LISTEN=127.0.0.1:0 BACKROOM_LOG=warn BACKROOM_PAYMENT_PROVIDERS=test BACKROOM_RATE_LIMITS=off "$BIN" serve >"$data/stdout.log" 2>"$data/server.log" &
  SERVER_PID=$!
  local base=""
  for _ in $(seq 1 100); do
    base=$(sed -n 's/^backroom listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$data/stdout.log")
    [ -n "$base" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$data/server.log" >&2; die "$name: backroom serve exited"; }
    sleep 0.1
  done
  [ -n "$base" ] || die "$name: backroom serve did not start listening"
  unset BACKROOM_DATA_DIR BACKROOM_DATABASE_URL

  local seed=${SCHEMATHESIS_SEED:-$RANDOM$RANDOM}
  log "$name: schemathesis against $base/openapi.json (seed $seed, $MAX_EXAMPLES examples)"
  local started=$SECONDS rc=0
  # From the work directory: schemathesis keeps its example database in ./.schemathesis.
  (cd "$WORK" && "$VENV/bin/st" run "$base/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$seed" \
    --no-color) \
    || rc=$?
  log "$name: schemathesis finished in $((SECONDS - started))s (exit $rc)"

  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  if grep -q 'ERROR' "$data/server.log"; then
    log "$name: the server logged errors:"
    grep 'ERROR' "$data/server.log" | tail -20 >&2
  fi
  [ "$rc" = 0 ] || die "$name: schemathesis found failures (replay with SCHEMATHESIS_SEED=$seed)"
}

run_against sqlite

if [ -n "${BACKROOM_TEST_DATABASE_URL:-}" ]; then
  command -v psql >/dev/null || die "psql is required to create the PostgreSQL test database (Debian: postgresql-client)"
  PG_ADMIN_URL=$BACKROOM_TEST_DATABASE_URL
  PG_DB="bk_schemathesis_$$_$RANDOM"
  psql "$PG_ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$PG_DB\"" >/dev/null \
    || die "could not create a database on BACKROOM_TEST_DATABASE_URL"
  run_against postgres "${PG_ADMIN_URL%/*}/$PG_DB"
else
  log "BACKROOM_TEST_DATABASE_URL is not set: PostgreSQL run skipped (scripts/test.sh sets it)"
fi
log "all schemathesis runs passed"
