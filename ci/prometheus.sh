#!/usr/bin/env bash
# A real Prometheus scraping a real hubbub, end to end:
#   - installs prometheus/promtool with apt-get when missing;
#   - starts target/release/hubbub (or $HUBBUB_BIN) on a free port, temp data dir, TLS on (its own CA);
#   - starts Prometheus with deploy/prometheus.yml's shape (1 s scrapes, that port);
#   - signs up two users (curl) and chats over WebSockets (node);
#   - checks Prometheus stored hubbub_connections and chat frames, the target is up,
#     `promtool check metrics` on /metrics, and every metric the Grafana dashboard uses.
# Run from anywhere: `bash ci/prometheus.sh`. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
T0=$(date +%s)
WORK=$(mktemp -d /tmp/hubbub-prom.XXXXXX)
PIDS=()
FAILED=1

log() { echo "[prometheus.sh] $*"; }
ok() { echo "[prometheus.sh] ok: $*"; }

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ "$FAILED" != 0 ]; then
        for f in hubbub.log prometheus.log traffic.log; do
            if [ -s "$WORK/$f" ]; then
                echo "----- last lines of $f -----" >&2
                tail -n 40 "$WORK/$f" >&2
            fi
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "[prometheus.sh] FAIL: $*" >&2
    exit 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Polls "$@" (a command) every 0.25 s until it succeeds or $1 seconds pass.
wait_for() {
    local secs=$1
    shift
    local deadline=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.25
    done
}

# --- tools ---------------------------------------------------------------
if [ ! -x /usr/bin/prometheus ] || [ ! -x /usr/bin/promtool ]; then
    log "installing prometheus with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq prometheus >/dev/null
fi
PROMETHEUS=/usr/bin/prometheus
PROMTOOL=/usr/bin/promtool
log "using $($PROMETHEUS --version 2>&1 | head -n 1)"
command -v curl >/dev/null || fail "curl is required"
command -v python3 >/dev/null || fail "python3 is required"
command -v node >/dev/null || fail "node is required (WebSocket traffic)"

HUBBUB_BIN=${HUBBUB_BIN:-$ROOT/target/release/hubbub}
if [ ! -x "$HUBBUB_BIN" ]; then
    log "building $HUBBUB_BIN"
    cargo build --release --bin hubbub
fi
[ -x "$HUBBUB_BIN" ] || fail "no hubbub binary at $HUBBUB_BIN"

# deploy/prometheus.yml must be a valid config as shipped.
"$PROMTOOL" check config deploy/prometheus.yml >"$WORK/promtool-config.log" 2>&1 ||
    { cat "$WORK/promtool-config.log" >&2; fail "promtool check config deploy/prometheus.yml"; }
ok "promtool check config deploy/prometheus.yml"

# --- hubbub --------------------------------------------------------------
HPORT=$(free_port)
HUB=https://127.0.0.1:$HPORT
# The server generates its CA on start; curl and node trust it from here on.
export CURL_CA_BUNDLE="$WORK/certs/ca.pem" NODE_EXTRA_CA_CERTS="$WORK/certs/ca.pem"
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
"$HUBBUB_BIN" --listen "127.0.0.1:$HPORT" --tls on \
    --data-dir "$WORK/data" --certs-dir "$WORK/certs" --web-dir "$ROOT/web" \
    --jwt-secret "$SECRET" --node-id ci-node --msgs-per-sec 1000 --burst 1000 \
    </dev/null >"$WORK/hubbub.log" 2>&1 &
PIDS+=($!)
wait_for 30 curl -sf "$HUB/healthz" || fail "hubbub did not answer /healthz on $HUB"
ok "hubbub up on $HUB (pid ${PIDS[0]})"

# --- Prometheus ------------------------------------------------------------
# The shipped config, with 1 s scrapes and the chosen port.
PPORT=$(free_port)
PROM=http://127.0.0.1:$PPORT
sed -e "s/scrape_interval: 15s/scrape_interval: 1s/" \
    -e "s/evaluation_interval: 15s/evaluation_interval: 1s/" \
    -e "s/127\.0\.0\.1:8443/127.0.0.1:$HPORT/" \
    -e "s#ca_file: \.\./certs/ca\.pem#ca_file: $WORK/certs/ca.pem#" \
    deploy/prometheus.yml >"$WORK/prometheus.yml"
grep -q "scrape_interval: 1s" "$WORK/prometheus.yml" || fail "could not set scrape_interval in the generated config"
grep -q "127.0.0.1:$HPORT" "$WORK/prometheus.yml" || fail "could not set the target in the generated config"
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PPORT" </dev/null >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_for 30 curl -sf "$PROM/-/ready" || fail "Prometheus did not become ready on $PROM"
ok "Prometheus up on $PROM (pid ${PIDS[1]})"

# --- traffic -------------------------------------------------------------
# Sign-up with curl; the access token comes back as a Set-Cookie.
signup() {
    curl -s -D - -o /dev/null -H 'content-type: application/json' \
        -d "{\"username\":\"$1\",\"password\":\"ci password $1 12345\"}" "$HUB/api/auth/signup" |
        tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: access_token=\([^;]*\).*/\1/p'
}
ALICE=$(signup alice)
BOB=$(signup bob)
[ -n "$ALICE" ] && [ -n "$BOB" ] || fail "sign-up did not return access tokens"
ok "signed up alice and bob with curl"
# A login (ok), a wrong password (failed) and a refresh (ok) for the auth counters.
REFRESH=$(curl -s -D - -o /dev/null -H 'content-type: application/json' \
    -d '{"username":"alice","password":"ci password alice 12345"}' "$HUB/api/auth/login" |
    tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: refresh_token=\([^;]*\).*/\1/p')
[ -n "$REFRESH" ] || fail "login did not return a refresh token"
CODE=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -d '{"username":"bob","password":"not bobs password"}' "$HUB/api/auth/login")
[ "$CODE" = 401 ] || fail "a wrong password got $CODE"
CODE=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "cookie: refresh_token=$REFRESH" "$HUB/api/auth/refresh")
[ "$CODE" = 200 ] || fail "refresh got $CODE"
ok "login ok, login failed, refresh ok with curl"

# Node's WebSocket (built in from Node 22, behind a flag in 20/21), else the
# `ws` package installed into a temp dir.
NODE_FLAGS=()
if node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null; then
    :
elif node --experimental-websocket -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null; then
    NODE_FLAGS=(--experimental-websocket)
else
    log "installing the ws package into a temp dir"
    (cd "$WORK" && timeout 60 npm install --silent --no-audit --no-fund ws >/dev/null 2>&1) ||
        fail "npm install ws failed"
fi
MESSAGES=20
cat >"$WORK/traffic.cjs" <<'EOF'
// Two users in one room: alice sends N chats, bob receives them; then a bad
// frame and a replaced session. Three sockets stay open (hubbub_connections
// is 3) until this process is killed.
const [url, alice, bob, n, readyFile] = process.argv.slice(2);
const WS = globalThis.WebSocket ?? require(require('path').join(__dirname, 'node_modules', 'ws'));
const N = Number(n);
function open(token, query = '') {
    return new Promise((resolve, reject) => {
        const ws = new WS(url + query, { headers: { cookie: 'access_token=' + token } });
        ws.frames = [];
        ws.onmessage = (e) => {
            const f = JSON.parse(String(e.data));
            ws.frames.push(f);
            if (f.type === 'history') resolve(ws);
            if (ws.waiter) ws.waiter();
        };
        ws.onerror = (e) => reject(new Error('websocket error ' + (e.message || '')));
        ws.onclose = (e) => { if (!ws.done) { console.error('closed', e.code); process.exit(1); } };
    });
}
function until(ws, pred) {
    return new Promise((resolve) => {
        const check = () => { if (pred(ws.frames)) { ws.waiter = null; resolve(); } };
        ws.waiter = check;
        check();
    });
}
(async () => {
    const a = await open(alice);
    const b = await open(bob);
    for (let i = 0; i < N; i++) {
        a.send(JSON.stringify({ type: 'chat', id: crypto.randomUUID(), content: 'ci message ' + i }));
    }
    const saved = (fs) => fs.filter((f) => f.type === 'receipt' && f.status === 'saved').length;
    const chats = (fs) => fs.filter((f) => f.type === 'chat').length;
    await until(a, (fs) => saved(fs) >= N);
    await until(b, (fs) => chats(fs) >= N);
    // An invalid frame (errors_sent{code="bad_request"}) ...
    a.send('not json');
    await until(a, (fs) => fs.some((f) => f.type === 'error' && f.code === 'bad_request'));
    // ... and bob's second device replaced by a third with the same client id
    // (evictions{reason="replaced"}, closes{code="4001"}).
    const old = await open(bob, '&client=ci-dup');
    old.done = true;
    const closed = new Promise((resolve) => { old.onclose = (e) => resolve(e.code); });
    await open(bob, '&client=ci-dup');
    const code = await closed;
    if (code !== 4001) throw new Error('replaced session closed with ' + code);
    console.log(`sent ${N}, ${saved(a.frames)} saved, bob got ${chats(b.frames)}; bad frame answered; duplicate client closed with ${code}`);
    require('fs').writeFileSync(readyFile, 'ok');
    setTimeout(() => process.exit(0), 120000);
})().catch((e) => { console.error(e); process.exit(1); });
EOF
node "${NODE_FLAGS[@]}" "$WORK/traffic.cjs" "wss://127.0.0.1:$HPORT/ws?room=lobby" "$ALICE" "$BOB" \
    "$MESSAGES" "$WORK/traffic.ok" </dev/null >"$WORK/traffic.log" 2>&1 &
PIDS+=($!)
wait_for 30 test -f "$WORK/traffic.ok" || fail "WebSocket traffic did not complete"
ok "WebSocket chat: $(cat "$WORK/traffic.log")"

# --- what Prometheus scraped ------------------------------------------------
# Prints the first sample's value of an instant query ('' when empty).
query() {
    curl -s --get --data-urlencode "query=$1" "$PROM/api/v1/query" |
        python3 -c 'import json,sys
d = json.load(sys.stdin)
assert d["status"] == "success", d
r = d["data"]["result"]
print(r[0]["value"][1] if r else "")'
}
at_least() { # query, minimum
    local v
    v=$(query "$1") && [ -n "$v" ] && python3 -c "import sys; sys.exit(0 if float('$v') >= $2 else 1)"
}
wait_for 30 at_least 'hubbub_connections' 0 || fail "Prometheus has no hubbub_connections after 30 s"
ok "Prometheus scraped hubbub_connections"
wait_for 30 at_least 'hubbub_connections' 3 ||
    fail "hubbub_connections in Prometheus is $(query hubbub_connections), expected 3"
ok "hubbub_connections = $(query hubbub_connections) in Prometheus"
wait_for 30 at_least 'hubbub_frames_in_total{type="chat"}' "$MESSAGES" ||
    fail "hubbub_frames_in_total{type=\"chat\"} in Prometheus is '$(query 'hubbub_frames_in_total{type="chat"}')', expected >= $MESSAGES"
ok "hubbub_frames_in_total{type=\"chat\"} = $(query 'hubbub_frames_in_total{type="chat"}') in Prometheus"
wait_for 30 at_least 'hubbub_deliveries_total' $((2 * MESSAGES)) || fail "hubbub_deliveries_total below $((2 * MESSAGES))"
ok "hubbub_deliveries_total = $(query hubbub_deliveries_total) in Prometheus"
HEALTH=$(curl -s "$PROM/api/v1/targets" | python3 -c 'import json,sys
t = json.load(sys.stdin)["data"]["activeTargets"]
print(" ".join(x["health"] + ("" if x["health"] == "up" else ":" + x["lastError"]) for x in t))')
[ "$HEALTH" = "up" ] || fail "target health: $HEALTH"
ok "scrape target health: up"
for q in 'hubbub_evictions_total{reason="replaced"}' 'hubbub_errors_sent_total{code="bad_request"}' \
    'hubbub_logins_total{result="failed"}' 'hubbub_refreshes_total{result="ok"}'; do
    wait_for 30 at_least "$q" 1 || fail "$q in Prometheus is '$(query "$q")', expected >= 1"
    ok "$q = $(query "$q") in Prometheus"
done
# The dashboard's quantile over all samples so far (its rate() window may hold
# a single burst here).
P99=$(query 'histogram_quantile(0.99, sum by (le) (hubbub_send_to_durable_seconds_bucket))')
[ -n "$P99" ] && [ "$P99" != NaN ] || fail "p99 send→durable has no data: '$P99'"
ok "p99 send→durable = ${P99}s (histogram_quantile over hubbub_send_to_durable_seconds_bucket)"

# --- exposition format ------------------------------------------------------
curl -s "$HUB/metrics" >"$WORK/metrics.txt"
set +e
"$PROMTOOL" check metrics <"$WORK/metrics.txt" >"$WORK/promtool.out" 2>&1
RC=$?
set -e
if [ "$RC" != 0 ]; then
    cat "$WORK/promtool.out" >&2
    fail "promtool check metrics exited $RC"
fi
ok "promtool check metrics: clean"

# --- Grafana dashboard --------------------------------------------------------
python3 - "$ROOT/deploy/grafana/hubbub.json" "$WORK/metrics.txt" <<'EOF'
import json, re, sys
dash_path, metrics_path = sys.argv[1], sys.argv[2]
with open(dash_path) as f:
    dash = json.load(f)  # fails on invalid JSON
assert any(i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource" for i in dash.get("__inputs", [])), \
    "no DS_PROMETHEUS datasource input"
assert dash.get("schemaVersion", 0) >= 36, "schemaVersion < 36"
families = set()
for line in open(metrics_path):
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m:
        families.add(m.group(1))
exprs = []
def walk(panels):
    for p in panels:
        exprs.extend((p.get("title", "?"), t["expr"]) for t in p.get("targets", []) if t.get("expr"))
        walk(p.get("panels", []))
walk(dash["panels"])
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    exprs.append((v["name"], q.get("query", "") if isinstance(q, dict) else str(q or "")))
assert exprs, "no queries in the dashboard"
missing, used = [], set()
for title, e in exprs:
    for name in re.findall(r"hubbub_[a-z_]+", e):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in families:
            used.add(name)
        elif base != name and base in families:
            used.add(base)
        else:
            missing.append(f"{name} (panel {title!r})")
if missing:
    sys.exit("dashboard uses metrics /metrics does not have: " + ", ".join(missing))
rows = [p["title"] for p in dash["panels"] if p.get("type") == "row"]
print(f"{len(exprs)} queries over {len(used)} metric families, rows: {', '.join(rows)}")
EOF
ok "deploy/grafana/hubbub.json is valid and every metric it queries exists"

FAILED=0
log "all checks passed in $(($(date +%s) - T0)) s"
