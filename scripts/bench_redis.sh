#!/usr/bin/env bash
# The Redis bridge measured: the fan-out scenario with its clients split
# over two wshub instances sharing the room through a redis-server, against
# all clients on one instance (with the bridge on, so that publishing costs
# the same), interleaved, RUNS times; flat out and at a fixed rate (the
# latency the Redis hop adds). Prints medians; runs in target/bench/redis.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
OUT=target/bench/redis.jsonl
mkdir -p target/bench
: > "$OUT"
cargo build --release --quiet
BIN=./target/release/wshub
# shellcheck source=scripts/server_lib.sh
. scripts/server_lib.sh
rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
REDIS=$!
trap 'kill $REDIS 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done

# run LABEL INSTANCES BENCH_ARGS...
run() {
  local label=$1 n=$2; shift 2
  local pids=() urls=()
  for _ in $(seq "$n"); do
    local p; p=$(free_port)
    start_server "$BIN" "$p" /dev/null --log-level error --echo-sender --redis "redis://127.0.0.1:$rport"
    pids+=("$SERVER_PID"); urls+=("ws://127.0.0.1:$p/ws/bench")
  done
  local extra=(); [ "$n" -gt 1 ] && extra=(--also-url "${urls[1]}")
  echo "== $label" >&2
  $BIN bench fanout --url "${urls[0]}" "${extra[@]}" --echo-sender "$@" --label "$label" | tail -n 1 >> "$OUT"
  kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
}

for _ in $(seq "$RUNS"); do
  run one-instance 1 --clients 100 --senders 10 --window 16 --duration "$DURATION"
  run two-instances 2 --clients 100 --senders 10 --window 16 --duration "$DURATION"
  run one-instance-rate 1 --clients 100 --senders 10 --rate 10 --duration "$DURATION"
  run two-instances-rate 2 --clients 100 --senders 10 --rate 10 --duration "$DURATION"
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line); runs[r["label"]].append(r)
med = lambda rs, f: statistics.median(f(r) for r in rs)
print("| setup | deliveries/s | latency p50 ms | p99 ms | lost |")
print("|---|---|---|---|---|")
for label in ["one-instance", "two-instances", "one-instance-rate", "two-instances-rate"]:
    rs = runs[label]
    print(f"| {label} | {med(rs, lambda r: r['deliveries_per_s']):,.0f} | {med(rs, lambda r: r['latency_us']['p50'])/1e3:.2f} | "
          f"{med(rs, lambda r: r['latency_us']['p99'])/1e3:.2f} | {med(rs, lambda r: r['lost']):.0f} |")
PY
