#!/usr/bin/env bash
# localstripe: a stateful fake of Stripe's API, for the Stripe tests
# (crates/backroom/tests/api/stripe.rs read its URL from BACKROOM_TEST_STRIPE_URL).
# `install` also puts `standardwebhooks` (the reference Python implementation of the Standard
# Webhooks specification) into the same virtualenv: scripts/webhook_receiver.py, the receiver
# the webhook tests start, verifies every delivery with it.
#
#   scripts/localstripe.sh start   installs it (pinned, into the test virtualenv that
#                                  scripts/schemathesis.sh uses), starts it on a free loopback
#                                  port in the background and prints
#                                  `export BACKROOM_TEST_STRIPE_URL=http://127.0.0.1:PORT`
#   scripts/localstripe.sh stop    stops the one `start` started
#   scripts/localstripe.sh install only installs it
#
# For a local run:  eval "$(scripts/localstripe.sh start)"  then cargo test as usual.
# scripts/test.sh does the same around `cargo test` and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCALSTRIPE_VERSION=1.15.10
STANDARDWEBHOOKS_VERSION=1.1.0
# The same virtualenv, with the same schemathesis pin, as scripts/schemathesis.sh.
SCHEMATHESIS_VERSION=$(sed -n 's/^SCHEMATHESIS_VERSION=//p' scripts/schemathesis.sh)
TARGET=${CARGO_TARGET_DIR:-target}
VENV="$(realpath -m "$TARGET")/schemathesis-venv"
PIDFILE="$(realpath -m "$TARGET")/localstripe.pid"
LOGFILE="$(realpath -m "$TARGET")/localstripe.log"

log() { printf '\033[1m[localstripe.sh]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

install() {
  command -v python3 >/dev/null || die "python3 is required (Debian: apt-get install python3 python3-venv)"
  local st_ok=0 ls_ok=0
  [ -x "$VENV/bin/st" ] && [ "$("$VENV/bin/st" --version 2>/dev/null)" = "st, version $SCHEMATHESIS_VERSION" ] && st_ok=1
  [ -x "$VENV/bin/python" ] \
    && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("localstripe"))' 2>/dev/null)" = "$LOCALSTRIPE_VERSION" ] \
    && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("standardwebhooks"))' 2>/dev/null)" = "$STANDARDWEBHOOKS_VERSION" ] \
    && ls_ok=1
  if [ "$st_ok" = 1 ] && [ "$ls_ok" = 1 ]; then return 0; fi
  if [ "$st_ok" = 0 ]; then
    log "creating $VENV (schemathesis $SCHEMATHESIS_VERSION, localstripe $LOCALSTRIPE_VERSION)"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed: install the venv module (Debian: apt-get install python3-venv)"
  else
    log "installing localstripe $LOCALSTRIPE_VERSION and standardwebhooks $STANDARDWEBHOOKS_VERSION into $VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "localstripe==$LOCALSTRIPE_VERSION" \
    "standardwebhooks==$STANDARDWEBHOOKS_VERSION" \
    || die "could not install localstripe $LOCALSTRIPE_VERSION and standardwebhooks $STANDARDWEBHOOKS_VERSION from PyPI"
}

stop() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
}

start() {
  install
  stop
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  # A fresh store each time (--from-scratch): it would otherwise reload /tmp/localstripe.pickle.
  # It listens on every address (localstripe has no host option); the tests use loopback.
  "$VENV/bin/localstripe" --port "$port" --from-scratch >"$LOGFILE" 2>&1 &
  echo $! >"$PIDFILE"
  local url="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null -H 'Authorization: Bearer sk_test_ping' "$url/v1/balance" 2>/dev/null \
      || python3 -c "import urllib.request as u; u.urlopen(u.Request('$url/v1/balance', headers={'Authorization': 'Bearer sk_test_ping'}), timeout=1)" 2>/dev/null; then
      log "localstripe $LOCALSTRIPE_VERSION listening on $url (log: $LOGFILE)"
      echo "export BACKROOM_TEST_STRIPE_URL=$url"
      return 0
    fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { cat "$LOGFILE" >&2; die "localstripe exited"; }
    sleep 0.2
  done
  cat "$LOGFILE" >&2
  die "localstripe did not answer on $url"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  install) install ;;
  *) die "usage: $0 [start|stop|install]" ;;
esac
