#!/usr/bin/env bash
# A real Prometheus scraping a real hubbub, end to end:
#   - installs prometheus/promtool with apt-get when missing;
#   - starts target/release/hubbub (or $HUBBUB_BIN): one single node, and a
#     three-node cluster (n1..n3, generated cluster secret) that must form
#     (/readyz 200 on all three); each on port 0, its own temp data dir, TLS
#     on (one CA, made by the first node);
#   - starts Prometheus with deploy/prometheus.yml's shape (1 s scrapes, all four nodes);
#   - signs up two users (curl) and chats over WebSockets (node) on the single
#     node, and likewise on the cluster (sign-up on n1, chat on n2);
#   - checks Prometheus stored hubbub_connections and chat frames, every target is up,
#     the cluster's members/links/leader, `promtool check metrics` on /metrics of
#     both kinds of node, and that every query of the Grafana dashboard returns
#     data from Prometheus (the Cluster row's: one series per cluster node).
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

# True while process $1 runs (an exited child not yet waited for is a zombie: not running).
running() {
    local st
    st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st#Z}" = "$st" ]
}

cleanup() {
    local p i alive
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    # hubbub drains on SIGTERM; whatever still runs after 10 s is killed.
    for i in $(seq 40); do
        alive=0
        for p in "${PIDS[@]}"; do
            running "$p" && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.25
    done
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$FAILED" != 0 ]; then
        for f in hubbub.log n1.log n2.log n3.log prometheus.log traffic-single.log traffic-cluster.log; do
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

# --- hubbub: one single node ------------------------------------------------
# Every hubbub (and Prometheus) listens on port 0 and prints the address it
# got: no port is picked here and bound later by someone else.
# start_hubbub NAME ARGS...: runs hubbub in the background, output in $WORK/NAME.log.
start_hubbub() {
    local name=$1
    shift
    "$HUBBUB_BIN" "$@" </dev/null >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
}
# printed NAME PREFIX: the rest of NAME's first output line starting with PREFIX;
# waits up to 30 s for it, failing at once when the process has exited.
printed() {
    local name=$1 prefix=$2 pid=${PIDS[-1]} deadline=$(($(date +%s) + 30)) line
    until line=$(grep -m 1 "^$prefix" "$WORK/$name.log"); do
        running "$pid" || fail "$name exited before printing '$prefix'"
        [ "$(date +%s)" -lt "$deadline" ] || fail "$name printed no '$prefix' within 30 s"
        sleep 0.1
    done
    echo "${line#"$prefix"}"
}
# The server generates its CA on start; curl, node, the cluster nodes and
# Prometheus trust it from here on.
export CURL_CA_BUNDLE="$WORK/certs/ca.pem" NODE_EXTRA_CA_CERTS="$WORK/certs/ca.pem"
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
start_hubbub hubbub --listen 127.0.0.1:0 --tls on \
    --data-dir "$WORK/data" --certs-dir "$WORK/certs" --web-dir "$ROOT/web" \
    --jwt-secret "$SECRET" --node-id ci-node --msgs-per-sec 1000 --burst 1000
HUB=$(printed hubbub "hubbub listening on ")
HPORT=${HUB##*:}
wait_for 30 curl -sf "$HUB/healthz" || fail "hubbub did not answer /healthz on $HUB"
ok "hubbub up on $HUB (pid ${PIDS[0]})"

# --- hubbub: a three-node cluster ----------------------------------------------
# Cluster metrics exist only in cluster mode. n1 starts alone, n2 and n3 seed
# from it; all share the single node's certs dir (one CA for Prometheus to
# trust) and a fresh cluster secret of their own.
(umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$WORK/cluster-secret")
CLUSTER_URLS=()
CLUSTER_INSTANCES=()
SEED=
for n in n1 n2 n3; do
    start_hubbub "$n" --listen 127.0.0.1:0 --tls on --node-id "$n" \
        --data-dir "$WORK/$n" --certs-dir "$WORK/certs" --web-dir "$ROOT/web" \
        --cluster-listen 127.0.0.1:0 --cluster-secret-file "$WORK/cluster-secret" \
        ${SEED:+--seeds "$SEED"} --msgs-per-sec 1000 --burst 1000
    url=$(printed "$n" "hubbub listening on ")
    addr=$(printed "$n" "hubbub cluster on ")
    addr=${addr%% *}
    SEED=${SEED:-$addr}
    CLUSTER_URLS+=("$url")
    CLUSTER_INSTANCES+=("${url#https://}")
    ok "$n up on $url, cluster address $addr (pid ${PIDS[-1]})"
done
for url in "${CLUSTER_URLS[@]}"; do
    wait_for 30 curl -sf "$url/readyz" ||
        fail "the cluster did not form within 30 s: $url/readyz says '$(curl -s "$url/readyz")'"
done
ok "cluster formed: /readyz 200 on ${CLUSTER_URLS[*]}"

# --- Prometheus ------------------------------------------------------------
# The shipped config, with 1 s scrapes, the single node's port, and one more
# static target per cluster node (labelled like the shipped example).
EXTRA_TARGETS=
for i in 0 1 2; do
    EXTRA_TARGETS+="\\n      - targets: [\"${CLUSTER_INSTANCES[$i]}\"]\\n        labels: { node: n$((i + 1)) }"
done
sed -e "s/scrape_interval: 15s/scrape_interval: 1s/" \
    -e "s/evaluation_interval: 15s/evaluation_interval: 1s/" \
    -e "s/127\.0\.0\.1:8443/127.0.0.1:$HPORT/" \
    -e "s#ca_file: \.\./certs/ca\.pem#ca_file: $WORK/certs/ca.pem#" \
    -e "s/^\( *labels: { node: node-1 }\)\$/\1$EXTRA_TARGETS/" \
    deploy/prometheus.yml >"$WORK/prometheus.yml"
grep -q "scrape_interval: 1s" "$WORK/prometheus.yml" || fail "could not set scrape_interval in the generated config"
grep -q "127.0.0.1:$HPORT" "$WORK/prometheus.yml" || fail "could not set the target in the generated config"
for inst in "${CLUSTER_INSTANCES[@]}"; do
    grep -q "^      - targets: \[\"$inst\"\]" "$WORK/prometheus.yml" ||
        fail "could not add the cluster target $inst to the generated config"
done
"$PROMTOOL" check config "$WORK/prometheus.yml" >"$WORK/promtool-config.log" 2>&1 ||
    { cat "$WORK/promtool-config.log" >&2; fail "promtool check config on the generated config"; }
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address=127.0.0.1:0 </dev/null >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
# It logs the bound address: msg="Listening on" address=127.0.0.1:PORT.
prom_addr() { sed -n 's/.*msg="Listening on" address=\([0-9.]*:[0-9]*\).*/\1/p' "$WORK/prometheus.log" | head -n 1; }
wait_for 30 grep -q 'msg="Listening on" address=' "$WORK/prometheus.log" ||
    fail "Prometheus logged no 'Listening on' address within 30 s"
PROM=http://$(prom_addr)
wait_for 30 curl -sf "$PROM/-/ready" || fail "Prometheus did not become ready on $PROM"
ok "Prometheus up on $PROM (pid ${PIDS[-1]})"

# Every target scraped once before any traffic, so the traffic's counts are
# increases Prometheus sees (rates and quantiles over them are not empty).
targets_health() {
    curl -s "$PROM/api/v1/targets" | python3 -c 'import json,sys
t = json.load(sys.stdin)["data"]["activeTargets"]
print(" ".join(sorted(x["labels"]["instance"] + "=" + x["health"] + ("" if x["health"] == "up" else ":" + x["lastError"]) for x in t)))'
}
all_up() {
    local h
    h=$(targets_health) && [ "$(echo "$h" | tr ' ' '\n' | grep -c '=up$')" = 4 ] &&
        ! echo "$h" | tr ' ' '\n' | grep -qv '=up$'
}
wait_for 30 all_up || fail "Prometheus targets not all up after 30 s: $(targets_health)"
ok "scrape targets up: $(targets_health)"

# --- traffic -------------------------------------------------------------
# Sign-up with curl at base URL $1; the access token comes back as a Set-Cookie.
signup() {
    curl -s -D - -o /dev/null -H 'content-type: application/json' \
        -d "{\"username\":\"$2\",\"password\":\"ci password $2 12345\"}" "$1/api/auth/signup" |
        tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: access_token=\([^;]*\).*/\1/p'
}
ALICE=$(signup "$HUB" alice)
BOB=$(signup "$HUB" bob)
[ -n "$ALICE" ] && [ -n "$BOB" ] || fail "sign-up did not return access tokens"
ok "signed up alice and bob with curl"
# On the cluster: signed up on n1 (a replicated account change), used on n2.
C_ALICE=$(signup "${CLUSTER_URLS[0]}" alice)
C_BOB=$(signup "${CLUSTER_URLS[0]}" bob)
[ -n "$C_ALICE" ] && [ -n "$C_BOB" ] || fail "sign-up on cluster node n1 did not return access tokens"
ok "signed up alice and bob on cluster node n1 with curl"
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
# traffic NAME BASE_URL ALICE BOB [QUERY]: the chat above in the background (both at once).
traffic() {
    node "${NODE_FLAGS[@]}" "$WORK/traffic.cjs" "wss://${2#https://}/ws?room=lobby${5:-}" "$3" "$4" \
        "$MESSAGES" "$WORK/traffic-$1.ok" </dev/null >"$WORK/traffic-$1.log" 2>&1 &
    PIDS+=($!)
}
traffic single "$HUB" "$ALICE" "$BOB"
# On n2 on purpose (its metrics are checked below): a request that carries
# `from=` is served where it lands instead of being redirected (307) to the
# user's home node, which Node's WebSocket would not follow.
traffic cluster "${CLUSTER_URLS[1]}" "$C_ALICE" "$C_BOB" "&from=n2"
wait_for 30 test -f "$WORK/traffic-single.ok" || fail "WebSocket traffic did not complete"
ok "WebSocket chat: $(cat "$WORK/traffic-single.log")"
wait_for 30 test -f "$WORK/traffic-cluster.ok" || fail "WebSocket traffic on cluster node n2 did not complete"
ok "WebSocket chat on cluster node n2: $(cat "$WORK/traffic-cluster.log")"

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
exactly() { # query, value
    local v
    v=$(query "$1") && [ -n "$v" ] && python3 -c "import sys; sys.exit(0 if float('$v') == $2 else 1)"
}
# The single node's series (Prometheus scrapes four nodes).
S="instance=\"127.0.0.1:$HPORT\""
wait_for 30 at_least "hubbub_connections{$S}" 0 || fail "Prometheus has no hubbub_connections after 30 s"
ok "Prometheus scraped hubbub_connections"
wait_for 30 at_least "hubbub_connections{$S}" 3 ||
    fail "hubbub_connections in Prometheus is $(query "hubbub_connections{$S}"), expected 3"
ok "hubbub_connections = $(query "hubbub_connections{$S}") in Prometheus"
wait_for 30 at_least "hubbub_frames_in_total{type=\"chat\",$S}" "$MESSAGES" ||
    fail "hubbub_frames_in_total{type=\"chat\"} in Prometheus is '$(query "hubbub_frames_in_total{type=\"chat\",$S}")', expected >= $MESSAGES"
ok "hubbub_frames_in_total{type=\"chat\"} = $(query "hubbub_frames_in_total{type=\"chat\",$S}") in Prometheus"
wait_for 30 at_least "hubbub_deliveries_total{$S}" $((2 * MESSAGES)) || fail "hubbub_deliveries_total below $((2 * MESSAGES))"
ok "hubbub_deliveries_total = $(query "hubbub_deliveries_total{$S}") in Prometheus"
all_up || fail "target health: $(targets_health)"
ok "scrape targets still up"
for q in 'hubbub_evictions_total{reason="replaced",' 'hubbub_errors_sent_total{code="bad_request",' \
    'hubbub_logins_total{result="failed",' 'hubbub_refreshes_total{result="ok",'; do
    q="$q$S}"
    wait_for 30 at_least "$q" 1 || fail "$q in Prometheus is '$(query "$q")', expected >= 1"
    ok "$q = $(query "$q") in Prometheus"
done
# The dashboard's quantile over all samples so far (its rate() window may hold
# a single burst here).
P99=$(query "histogram_quantile(0.99, sum by (le) (hubbub_send_to_durable_seconds_bucket{$S}))")
[ -n "$P99" ] && [ "$P99" != NaN ] || fail "p99 send→durable has no data: '$P99'"
ok "p99 send→durable = ${P99}s (histogram_quantile over hubbub_send_to_durable_seconds_bucket)"

# The cluster as its dashboard row shows it: every node sees three ready
# members and has two links, one node leads, n2's chats were committed.
for inst in "${CLUSTER_INSTANCES[@]}"; do
    q="hubbub_cluster_members{state=\"ready\",instance=\"$inst\"}"
    wait_for 30 exactly "$q" 3 || fail "$q in Prometheus is '$(query "$q")', expected 3"
    q="hubbub_links_up{instance=\"$inst\"}"
    wait_for 30 exactly "$q" 2 || fail "$q in Prometheus is '$(query "$q")', expected 2"
done
ok "each cluster node: 3 members ready, 2 links up"
q='count(hubbub_log_is_leader == 1)'
wait_for 30 exactly "$q" 1 || fail "$q in Prometheus is '$(query "$q")', expected 1"
ok "one leader: $(curl -s --get --data-urlencode 'query=hubbub_log_is_leader == 1' "$PROM/api/v1/query" |
    python3 -c 'import json,sys; print(" ".join(r["metric"].get("node", "?") for r in json.load(sys.stdin)["data"]["result"]))')"
q="hubbub_frames_in_total{type=\"chat\",instance=\"${CLUSTER_INSTANCES[1]}\"}"
wait_for 30 at_least "$q" "$MESSAGES" || fail "$q in Prometheus is '$(query "$q")', expected >= $MESSAGES"
q='sum(hubbub_log_commit_seconds_count)'
wait_for 30 at_least "$q" 1 || fail "$q in Prometheus is '$(query "$q")', expected >= 1"
ok "cluster: $MESSAGES chats in on n2, $(query "$q") log entries committed"

# --- exposition format ------------------------------------------------------
# A single node's /metrics and a cluster node's (the cluster families).
lint_metrics() { # URL, output file
    curl -s "$1/metrics" >"$2"
    set +e
    "$PROMTOOL" check metrics <"$2" >"$WORK/promtool.out" 2>&1
    RC=$?
    set -e
    if [ "$RC" != 0 ]; then
        cat "$WORK/promtool.out" >&2
        fail "promtool check metrics on $1/metrics exited $RC"
    fi
    ok "promtool check metrics on $1/metrics: clean"
}
lint_metrics "$HUB" "$WORK/metrics.txt"
lint_metrics "${CLUSTER_URLS[0]}" "$WORK/metrics-cluster.txt"

# --- Grafana dashboard --------------------------------------------------------
# Every query of the dashboard must return data from this Prometheus (the
# Cluster row's: a series per cluster node); see ci/check_dashboard.py.
python3 "$ROOT/ci/check_dashboard.py" "$ROOT/deploy/grafana/hubbub.json" "$PROM" \
    "$(IFS=,; echo "${CLUSTER_INSTANCES[*]}")" "$WORK/metrics.txt" "$WORK/metrics-cluster.txt"
ok "deploy/grafana/hubbub.json is valid and every query of it returns data from Prometheus"

FAILED=0
log "all checks passed in $(($(date +%s) - T0)) s"
