#!/usr/bin/env bash
# Runs every hubbub-bench scenario ROUNDS times against a freshly spawned
# server each time, appends the JSON lines to $OUT/<name>.jsonl, and prints
# the median (min-max) of the headline figures.
#
#   bench/run-all.sh                    # everything, 3 rounds
#   ROUNDS=5 ONLY="fanout-1k idle" bench/run-all.sh
#   QUIET_LOAD=2 QUIET_WAIT=120 ...     # wait (at most QUIET_WAIT s) for load1 < QUIET_LOAD before each run
#   HISTORY_MESSAGES=100000 ...         # a smaller history room
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
B="$TARGET_DIR/release/hubbub-bench"
OUT=${OUT:-$(mktemp -d /tmp/hubbub-bench-results.XXXXXX)}
QUIET_LOAD=${QUIET_LOAD:-100}
QUIET_WAIT=${QUIET_WAIT:-0}
HISTORY_MESSAGES=${HISTORY_MESSAGES:-1000000}
ONLY=${ONLY:-"fanout-1k fanout-1k-1sender fanout-sweep fanout-max rooms idle durable history"}
mkdir -p "$OUT"
command -v jq >/dev/null || { echo "jq is required" >&2; exit 1; }
[ "${SKIP_BUILD:-0}" = 1 ] || CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --bins >&2
SPAWN=(--spawn --server-bin "$TARGET_DIR/release/hubbub")

wait_quiet() {
  local waited=0
  while [ "$waited" -lt "$QUIET_WAIT" ] && awk -v q="$QUIET_LOAD" '{exit !($1 >= q)}' /proc/loadavg; do
    sleep 5; waited=$((waited + 5))
  done
}

run() { # name, bench args...
  local name=$1; shift
  for r in $(seq 1 "$ROUNDS"); do
    wait_quiet
    echo "== $name round $r (load $(cut -d' ' -f1 /proc/loadavg)): $*" >&2
    "$B" "$@" --label "$name-$r" >> "$OUT/$name.jsonl" 2>> "$OUT/$name.log" \
      || echo "   $name round $r failed, see $OUT/$name.log" >&2
  done
}

want() { [[ " $ONLY " == *" $1 "* ]]; }

# 10 senders at 100 msgs/s each: a sender's session gets every chat plus a
# `saved` receipt per own message, so one sender at 1000 msgs/s gets twice a
# receiver's frames and is the first evicted (see docs/BENCHMARKS.md).
want fanout-1k && run fanout-1k fanout "${SPAWN[@]}" -n 1000 -s 10 -r 1000 --duration 10
want fanout-1k-1sender && run fanout-1k-1sender fanout "${SPAWN[@]}" -n 1000 -s 1 -r 1000 --duration 10
if want fanout-sweep; then
  for rate in 1500 2000 3000; do
    run "fanout-$rate" fanout "${SPAWN[@]}" -n 1000 -s 20 -r "$rate" --duration 10
  done
fi
want fanout-max && run fanout-max fanout "${SPAWN[@]}" -n 1000 -s 4 -r 0 --duration 10
want rooms && run rooms rooms "${SPAWN[@]}" --rooms 100 --room-size 10 -r 10000 --duration 10
want idle && run idle idle "${SPAWN[@]}" -n 10000
want durable && run durable durable "${SPAWN[@]}" --duration 10
if want history; then
  HDIR=$(mktemp -d /tmp/hubbub-history-data.XXXXXX)
  run history history "${SPAWN[@]}" --data-dir "$HDIR" --messages "$HISTORY_MESSAGES"
  rm -rf "$HDIR"
fi

# median (min-max) of each figure over the rounds
summ() { # file, label, jq path...
  local f=$1 label=$2; shift 2
  [ -s "$f" ] || return 0
  printf '%s\n' "$label"
  for p in "$@"; do
    jq -rs --arg p "$p" '
      [ .[] | getpath($p | split(".")) | select(. != null) ] | sort as $v
      | if ($v | length) == 0 then "n/a"
        else "\($v[(($v | length) - 1) / 2 | floor]) (\($v[0])-\($v[-1]))" end
      | "  \($p): \(.)"' "$f"
  done
}
F="results.deliveries_per_sec results.lost results.evicted results.latency.p50_ms results.latency.p90_ms results.latency.p99_ms results.latency.p999_ms results.latency.max_ms results.cpu.server_cores results.cpu.bench_cores results.cpu.machine_load1"
for n in fanout-1k fanout-1k-1sender fanout-1500 fanout-2000 fanout-3000 fanout-max rooms; do
  # shellcheck disable=SC2086
  summ "$OUT/$n.jsonl" "$n" $F
done
summ "$OUT/idle.jsonl" idle results.rss_per_conn_kib results.connects_per_sec results.connect_latency.p50_ms results.connect_latency.p99_ms results.failed
summ "$OUT/durable.jsonl" durable results.rate.saved_per_sec results.rate.send_to_saved.p50_ms results.rate.send_to_saved.p99_ms results.rate.unavailable results.max.saved_per_sec results.max.send_to_saved.p50_ms results.max.send_to_saved.p99_ms results.max.cpu.server_cores
summ "$OUT/history.jsonl" history results.prefill.saved_per_sec results.join_to_history.p50_ms results.join_to_history.p99_ms results.latest_page.p50_ms results.latest_page.p99_ms results.paging_before.p50_ms results.paging_before.p99_ms
echo "raw results: $OUT" >&2
