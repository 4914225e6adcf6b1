#!/usr/bin/env bash
# Unit tests of the web client's modules (node:test, e2e/unit/), then
# browser tests of the web client: starts hubbub on port 0 with a fresh
# data dir, waits for /healthz, runs e2e/*.test.mjs with BASE_URL, stops it.
# Env: HUBBUB_BIN (default target/release/hubbub), CHROMIUM (default
# /usr/bin/chromium), BASE_URL (skip starting a server; use that one),
# E2E_TLS=off (plain HTTP even when the server supports TLS).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

# Unit tests of the client's modules first: node only, no browser, no server.
echo "run.sh: unit tests (e2e/unit)"
(cd "$here" && timeout 120 node --test --test-reporter=spec unit/)

if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/axe-core" ]; then
  if [ -f "$here/package-lock.json" ]; then
    (cd "$here" && npm ci --no-audit --no-fund)
  else
    (cd "$here" && npm install --no-audit --no-fund)
  fi
fi

if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "run.sh: ${CHROMIUM:-/usr/bin/chromium} not found: apt-get install -y chromium" >&2
  exit 2
fi

server_pid=""
data_dir=""
log=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  [ -n "$data_dir" ] && rm -rf "$data_dir"
  return 0
}
trap cleanup EXIT

if [ -z "${BASE_URL:-}" ]; then
  bin="${HUBBUB_BIN:-target/release/hubbub}"
  case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
  if [ ! -x "$bin" ]; then
    echo "run.sh: no hubbub binary at $bin (cargo build --release, or set HUBBUB_BIN)" >&2
    exit 2
  fi
  export HUBBUB_BIN="$bin"
  data_dir="$(mktemp -d)"
  log="$data_dir/server.log"
  # Flags this build knows: the edge limits are raised (the tests sign up a
  # dozen people from one address in a minute; the limits are tested in
  # tests/, not here), TLS is used when the server has it (E2E_TLS=off
  # forces plain HTTP).
  help="$("$bin" --help 2>&1 || true)"
  has() { grep -q -- "$1" <<<"$help"; }
  limits=()
  for f in --signups-per-min --logins-per-min --logins-per-user-per-min --upgrades-per-min; do
    if has "$f "; then limits+=("$f" 100000); fi
  done
  scheme=http
  tls=()
  if has "--tls "; then
    if [ "${E2E_TLS:-on}" = on ]; then
      scheme=https
      tls=(--tls on)
      if has "--certs-dir "; then tls+=(--certs-dir "$data_dir/certs"); fi
    else
      tls=(--tls off)
    fi
  fi
  # For a test that starts a server of its own (plain HTTP, same limits).
  plain=("${limits[@]}")
  if has "--tls "; then plain+=(--tls off); fi
  export HUBBUB_E2E_ARGS="${plain[*]}"
  # The UI files embedded in the binary (what an installed hubbub serves).
  # Port 0: the server binds a free port itself and prints the address.
  "$bin" --listen "127.0.0.1:0" --data-dir "$data_dir/data" \
    "${limits[@]}" "${tls[@]}" >"$log" 2>&1 &
  server_pid=$!
  BASE_URL=""
  for i in $(seq 1 150); do
    if [ -z "$BASE_URL" ]; then
      BASE_URL="$(sed -n "s#^hubbub listening on \($scheme://[^ ]*\).*#\1#p" "$log" | head -n 1)"
    fi
    if [ -n "$BASE_URL" ] && curl -kfsS "$BASE_URL/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then echo "run.sh: hubbub exited:" >&2; cat "$log" >&2; exit 1; fi
    sleep 0.1
    if [ "$i" = 150 ]; then echo "run.sh: hubbub did not answer /healthz" >&2; cat "$log" >&2; exit 1; fi
  done
  export BASE_URL
fi

echo "run.sh: testing $BASE_URL"
status=0
(cd "$here" && timeout 420 node --test --test-concurrency=1 --test-reporter=spec ./*.test.mjs) || status=$?
if [ "$status" != 0 ] && [ -n "$log" ]; then
  echo "--- hubbub log (tail) ---" >&2
  tail -n 50 "$log" >&2 || true
fi
exit "$status"
