#!/usr/bin/env bash
# Fan-out: hubbub (--spawn) against the Go hub (gorilla/websocket, the Go
# original's design) and the Node `ws` peer, alternately (A B C A B C ...).
#
#   bench/compare.sh [extra hubbub-bench flags...]
#   PEERS="go node" bench/compare.sh      # which raw peers run beside hubbub (default both)
#   ROUNDS=3 N=1000 RATE=1000 DURATION=10 SIZE=100 SENDERS=10 bench/compare.sh
#   SKIP_BUILD=1 CARGO_TARGET_DIR=/work/target-bench bench/compare.sh   # binaries already built
#   SCENARIO=idle N=10000 bench/compare.sh  # idle memory: server RSS per connection, connect rate
#
# Prints one line per run, per-round ratios (hubbub / each peer), and medians.
# Everything runs on loopback; every server is stopped after its run.
# The Go hub is built with Debian's golang-go and golang-github-gorilla-websocket-dev
# (no network); without `go` it is skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SCENARIO=${SCENARIO:-fanout}
case "$SCENARIO" in fanout | idle) ;; *) echo "SCENARIO is fanout or idle" >&2; exit 2 ;; esac
if [ "$SCENARIO" = idle ]; then N=${N:-10000}; else N=${N:-1000}; fi
RATE=${RATE:-1000}
DURATION=${DURATION:-10}
SIZE=${SIZE:-100}
SENDERS=${SENDERS:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BENCH="$TARGET_DIR/release/hubbub-bench"
PEER=bench/peers/node-ws
GOHUB=bench/peers/go-hub
PEERS=${PEERS:-go node}
OUT=${OUT:-$(mktemp -d /tmp/hubbub-compare.XXXXXX)}
mkdir -p "$OUT"

command -v jq >/dev/null || { echo "jq is required" >&2; exit 1; }

[ "${SKIP_BUILD:-0}" = 1 ] || CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --bins >&2
WHO=(hubbub)
for p in $PEERS; do
  case "$p" in
    go)
      if ! command -v go >/dev/null; then
        echo "go not found: skipping the Go hub (apt-get install golang-go golang-github-gorilla-websocket-dev)" >&2
      elif (cd "$GOHUB" && GO111MODULE=off GOPATH=${GOHUB_GOPATH:-/usr/share/gocode} go build -o go-hub . >&2); then
        WHO+=(go)
      else
        echo "the Go hub did not build (is golang-github-gorilla-websocket-dev installed?): skipping it" >&2
      fi
      ;;
    node)
      [ -d "$PEER/node_modules/ws" ] || (cd "$PEER" && npm ci --no-audit --no-fund >&2)
      WHO+=(node)
      ;;
    *) echo "unknown peer $p (go, node)" >&2; exit 2 ;;
  esac
done

if [ "$SCENARIO" = idle ]; then
  COMMON=(idle -n "$N" "$@")
else
  COMMON=(fanout -n "$N" -s "$SENDERS" -r "$RATE" -b "$SIZE" --duration "$DURATION" "$@")
fi

run_hubbub() { # $1 = round
  "$BENCH" "${COMMON[@]}" --spawn --server-bin "$TARGET_DIR/release/hubbub" --label "hubbub-$1" \
    > "$OUT/hubbub-$1.json" 2> "$OUT/hubbub-$1.log"
}

# A raw broadcast peer: start it on a free port, read "listening on http://127.0.0.1:PORT pid PID".
run_raw() { # $1 = name, $2 = round, $3... = command
  local name=$1 r=$2; shift 2
  local log="$OUT/$name-$r.server.log" port pid
  "$@" 0 > "$log" 2>&1 &
  local spid=$!
  for _ in $(seq 1 100); do grep -q "listening" "$log" 2>/dev/null && break; sleep 0.1; done
  port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
  pid=$(sed -n 's/.* pid \([0-9]*\).*/\1/p' "$log" | head -1)
  "$BENCH" "${COMMON[@]}" --raw --url "http://127.0.0.1:$port" --server-pid "$pid" --label "$name-$r" \
    > "$OUT/$name-$r.json" 2> "$OUT/$name-$r.log" || true
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
}
run_node() { run_raw node "$1" node "$PEER/server.js"; }
run_go() { run_raw go "$1" "$GOHUB/go-hub"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# One round: runs every server once and prints its row ($2: jq fields as TSV, $3: awk printf format).
run_round() { # $1 = round
  local r=$1 who
  for who in "${WHO[@]}"; do
    "run_$who" "$r"
    if [ -s "$OUT/$who-$r.json" ]; then
      printf '%-10s ' "$who-$r"
      jq -r "$2" "$OUT/$who-$r.json" | awk -F'\t' "{printf \"$3\\n\",\$1,\$2,\$3,\$4,\$5,\$6,\$7,\$8,\$9,\$10,\$11,\$12,\$13,\$14,\$15,\$16}"
    else
      echo "$who-$r failed: see $OUT/$who-$r.log"
    fi
  done
}

if [ "$SCENARIO" = idle ]; then
  # Server RSS per idle connection (after the bench's warm-up connections) and the connect rate.
  ifields='[.results.rss_per_conn_kib, .results.connects_per_sec, .results.connect_latency.p50_ms, .results.connect_latency.p99_ms, .results.failed, .results.rss_before_kib, .results.rss_after_kib] | @tsv'
  printf '%-10s %12s %11s %9s %9s %7s %12s %12s\n' run rss_kib/conn connects/s p50_ms p99_ms failed rss_before rss_after
  for r in $(seq 1 "$ROUNDS"); do
    run_round "$r" "$ifields" '%12s %11s %9s %9s %7s %12s %12s'
  done
  echo "medians over $ROUNDS rounds (results in $OUT):"
  for who in "${WHO[@]}"; do
    k=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r '.results.rss_per_conn_kib // empty' | median)
    c=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r '.results.connects_per_sec // empty' | median)
    printf '%-8s RSS per connection %s KiB  connects/s %s\n' "$who" "$k" "$c"
  done
  exit 0
fi

# send_s < DURATION means a sender was closed (evicted) early: that run did not sustain the rate.
# lost counts only receivers still open at the end; dropped = receivers the server closed
# without hubbub's eviction code (the Go hub drops a client whose 256-slot queue is full).
fields='[.results.deliveries_per_sec, (.results.deliveries_per_server_cpu_s // "n/a"), .results.send_s, .results.lost, .results.evicted, .results.closed_other, .results.latency.p50_ms, .results.latency.p99_ms, .results.latency.p999_ms, .results.latency.max_ms, .results.cpu.server_cores, .results.cpu.bench_cores, (if .results.deliveries > 0 then (.results.cpu.server_cpu_s / .results.deliveries * 1e8 | round) / 100 else "n/a" end), (if .results.deliveries > 0 then (.results.cpu.bench_cpu_s / .results.deliveries * 1e8 | round) / 100 else "n/a" end), .results.cpu.machine_load1, .server_rss_kib_end] | @tsv'
# srv_s/M, gen_s/M: CPU-seconds of the server and of this generator per million deliveries.
printf '%-10s %10s %12s %7s %7s %7s %7s %9s %9s %9s %9s %6s %6s %7s %7s %5s %9s\n' run deliv/s per_cpu_s send_s lost evicted dropped p50_ms p99_ms p999_ms max_ms srv_c gen_c srv_s/M gen_s/M load rss_kib
for r in $(seq 1 "$ROUNDS"); do
  run_round "$r" "$fields" '%10s %12s %7s %7s %7s %7s %9s %9s %9s %9s %6s %6s %7s %7s %5s %9s'
  for peer in "${WHO[@]:1}"; do
    if [ -s "$OUT/hubbub-$r.json" ] && [ -s "$OUT/$peer-$r.json" ]; then
      jq -rn --slurpfile a "$OUT/hubbub-$r.json" --slurpfile b "$OUT/$peer-$r.json" \
        '"round \($ARGS.named.r): hubbub/\($ARGS.named.p) deliveries/s \(($a[0].results.deliveries_per_sec / $b[0].results.deliveries_per_sec * 100 | round) / 100)  per server CPU-second \(if ($a[0].results.deliveries_per_server_cpu_s // 0) > 0 and ($b[0].results.deliveries_per_server_cpu_s // 0) > 0 then ($a[0].results.deliveries_per_server_cpu_s / $b[0].results.deliveries_per_server_cpu_s * 100 | round) / 100 else "n/a" end)  p99 \(if $b[0].results.latency.p99_ms > 0 then ($a[0].results.latency.p99_ms / $b[0].results.latency.p99_ms * 100 | round) / 100 else "n/a" end)"' \
        --arg r "$r" --arg p "$peer"
    fi
  done
done

echo "medians over $ROUNDS rounds (results in $OUT):"
for who in "${WHO[@]}"; do
  d=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r '.results.deliveries_per_sec' | median)
  p=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r '.results.latency.p99_ms' | median)
  l=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r '.results.lost' | median)
  e=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r '.results.evicted' | median)
  x=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r '.results.closed_other' | median)
  c=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r '.results.deliveries_per_server_cpu_s' | median)
  sm=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r 'if .results.deliveries > 0 then .results.cpu.server_cpu_s / .results.deliveries * 1e6 else empty end' | median)
  gm=$(cat "$OUT"/$who-*.json 2>/dev/null | jq -r 'if .results.deliveries > 0 then .results.cpu.bench_cpu_s / .results.deliveries * 1e6 else empty end' | median)
  printf '%-8s deliveries/s %s  per server CPU-second %s  p99 %s ms  lost %s  evicted %s  dropped %s  CPU-s per M deliveries: server %.2f generator %.2f\n' "$who" "$d" "$c" "$p" "$l" "$e" "$x" "$sm" "$gm"
done
