#!/usr/bin/env bash
# Checks that the README works as written on a fresh copy of the repository, and that no file
# of the repository points outside it.
#
# 1. Links. No tracked (or new, not ignored) file may point to the planning folder outside the
#    repository or name its files; every relative link in a Markdown file must reach a file of
#    the repository, and its #anchor a heading there.
# 2. Snippets. Every ```sh block of README.md runs, in README order, in one bash session with
#    `set -euo pipefail`, in a copy of the repository's files (so ./backroom-data is new), with
#    the debug `backroom` binary on PATH and no BACKROOM_* variable from the caller. A command
#    that fails (a curl -f on a non-2xx answer, say) fails the script. A snippet that starts
#    something in the background (`backroom serve &`) is waited for until
#    http://127.0.0.1:8080/readyz answers; background jobs are stopped at the end.
#
# A snippet may be marked by an HTML comment on the line before its fence:
#   <!-- readme: skip (why) -->   not run; the reason is printed. Keep these few.
#   <!-- readme: postgres -->     run in a subshell, and only when BACKROOM_TEST_DATABASE_URL
#                                 is set: every postgres:// URL in it is replaced by a URL of a
#                                 new database on that server (dropped afterwards with psql).
#
# Needs: cargo, curl, jq, python3; psql to drop the PostgreSQL database afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '\033[1m[readme.sh]\033[0m %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in cargo curl jq python3; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# ---- 1. nothing points outside the repository ---------------------------------------------
log "checking that no file points outside the repository"
# The patterns are escaped so that this file does not match itself.
if git grep --untracked -nE '\.\./shared|/work/share[d]|(^|[^A-Za-z_])API\.md|ARCHITECTURE\.md' -- . ; then
  die "the files above point to the planning folder outside the repository; point to docs/ instead"
fi
python3 - <<'PY' || die "broken links in the Markdown files above"
import os, re, subprocess, sys

files = subprocess.run(
    ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    capture_output=True, check=True,
).stdout.decode().split("\0")
files = {f for f in files if f and os.path.exists(f)}

def slug(heading):
    # GitHub's anchors: lower case, punctuation dropped, spaces to hyphens.
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")

def anchors(path):
    out, fence = set(), False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out

bad = 0
for md in sorted(f for f in files if f.endswith(".md")):
    text = open(md, encoding="utf-8").read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links in code blocks are code
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(md), path)) if path else md
        if full.startswith("..") or os.path.isabs(full):
            print(f"{md}: link outside the repository: {target}"); bad += 1
        elif full not in files and not any(f.startswith(full + "/") for f in files):
            print(f"{md}: link to a file the repository does not have: {target}"); bad += 1
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            print(f"{md}: no heading for #{anchor} in {full}"); bad += 1
sys.exit(1 if bad else 0)
PY

# ---- 2. the README's snippets ---------------------------------------------------------------
log "building the debug backroom binary"
cargo build --locked --quiet -p backroom
BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/backroom"
[ -x "$BIN" ] || die "$BIN not found after cargo build"

PG_URL=${BACKROOM_TEST_DATABASE_URL:-}
for v in $(compgen -e); do
  case $v in BACKROOM_*) unset "$v" ;; esac
done

WORK=$(mktemp -d /tmp/backroom-readme.XXXXXX)
PG_DBS=()
cleanup() {
  if [ -s "$WORK/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
    while read -r pid; do
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    done <"$WORK/pids"
  fi
  if command -v psql >/dev/null; then
    for db in "${PG_DBS[@]}"; do
      psql "$PG_URL" -qX -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# A copy of the repository's files, as a fresh clone (plus new files not yet committed).
mkdir -p "$WORK/repo" "$WORK/bin" "$WORK/snippets"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$WORK/repo"
ln -s "$BIN" "$WORK/bin/backroom"
: >"$WORK/pids"

# Snippets: NN.sh with NN.meta holding "kind line reason".
awk -v dir="$WORK/snippets" '
  /^<!-- readme: [a-z]+.* -->[[:space:]]*$/ && !fence {
    mark = $0; sub(/^<!-- readme: /, "", mark); sub(/ -->[[:space:]]*$/, "", mark); next
  }
  /^```/ && !fence {
    fence = 1; lang = substr($0, 4); gsub(/[[:space:]]/, "", lang)
    if (lang == "sh" || lang == "bash" || lang == "shell") {
      n++; file = sprintf("%s/%02d.sh", dir, n)
      kind = "run"; reason = ""
      if (mark != "") { kind = mark; sub(/ .*/, "", kind); reason = mark; sub(/^[a-z]+ ?/, "", reason) }
      printf "%s %d %s\n", kind, NR, reason > sprintf("%s/%02d.meta", dir, n)
      printf "" > file
    } else { file = "" }
    mark = ""; next
  }
  /^```[[:space:]]*$/ && fence { fence = 0; if (file != "") close(file); file = ""; next }
  fence { if (file != "") print > file; next }
  NF { mark = "" }
' "$ROOT/README.md"

if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  die "something already listens on 127.0.0.1:8080, where the README starts its server; stop it first"
fi

# The driver: one bash session that runs the snippets in order.
DRIVER="$WORK/driver.sh"
cat >"$DRIVER" <<EOF
set -euo pipefail
cd "$WORK/repo"
export PATH="$WORK/bin:\$PATH"
known_jobs() {
  local started=0
  for pid in \$(jobs -p); do
    grep -qx "\$pid" "$WORK/pids" || { echo "\$pid" >>"$WORK/pids"; started=1; }
  done
  [ "\$started" = 1 ] || return 0
  for _ in \$(seq 1 600); do
    curl -fsS -o /dev/null http://127.0.0.1:8080/readyz 2>/dev/null && return 0
    for pid in \$(jobs -p); do kill -0 "\$pid" 2>/dev/null || { echo "a background job exited" >&2; return 1; }; done
    sleep 0.1
  done
  echo "nothing answered http://127.0.0.1:8080/readyz within 60 s" >&2
  return 1
}
EOF
ran=0 skipped=0
for meta in "$WORK"/snippets/*.meta; do
  [ -e "$meta" ] || die "README.md has no sh snippets"
  snippet=${meta%.meta}.sh
  read -r kind line reason <"$meta"
  case $kind in
    run)
      ran=$((ran + 1))
      printf 'printf "\\n\\033[1m[readme.sh] README.md line %s:\\033[0m\\n" >&2\n' "$line" >>"$DRIVER"
      printf 'sed "s/^/    /" %q >&2\n' "$snippet" >>"$DRIVER"
      printf 'source %q\nknown_jobs\n' "$snippet" >>"$DRIVER"
      ;;
    skip)
      skipped=$((skipped + 1))
      log "README.md line $line: skipped $reason"
      ;;
    postgres)
      if [ -z "$PG_URL" ]; then
        skipped=$((skipped + 1))
        log "README.md line $line: skipped (a PostgreSQL example; BACKROOM_TEST_DATABASE_URL is not set)"
        continue
      fi
      ran=$((ran + 1))
      db="readme_$$_$RANDOM"
      PG_DBS+=("$db")
      url="${PG_URL%/*}/$db"
      sed -E "s#postgres(ql)?://[^[:space:]'\"]+#${url//#/\\#}#g" "$snippet" >"$snippet.pg"
      printf 'printf "\\n\\033[1m[readme.sh] README.md line %s (on a new database of BACKROOM_TEST_DATABASE_URL):\\033[0m\\n" >&2\n' "$line" >>"$DRIVER"
      printf 'sed "s/^/    /" %q >&2\n' "$snippet" >>"$DRIVER"
      printf '( source %q )\n' "$snippet.pg" >>"$DRIVER"
      ;;
    *) die "README.md line $line: unknown marker \`readme: $kind\` (use skip or postgres)" ;;
  esac
done

log "running $ran README snippets ($skipped skipped) in $WORK/repo"
rc=0
timeout 900 bash "$DRIVER" || rc=$?
[ "$rc" = 0 ] || die "a README snippet failed (exit $rc); the command is in the output above"
log "every README snippet ran as written"
