#!/usr/bin/env bash
# make bench: every scenario of BENCHMARKS.md, each RUNS times (default 3)
# against a fresh release server, server and load generator sharing this
# machine's cores. Results: one JSON line per run in target/bench/results.jsonl;
# then scripts/bench_report.py prints medians and spreads and draws docs/*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
OUT=target/bench
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
cargo build --release --quiet
BIN=./target/release/wshub

# 10,000 clients are 20,000 threads with four mappings each.
if [ "$(cat /proc/sys/vm/max_map_count)" -lt 262144 ] && [ "$(id -u)" = 0 ]; then
  sysctl -qw vm.max_map_count=262144 || echo "bench: could not raise vm.max_map_count" >&2
fi
ulimit -n "$(ulimit -Hn)" || true

# shellcheck source=scripts/server_lib.sh
. scripts/server_lib.sh

# run LABEL SERVER_FLAGS -- BENCH_ARGS...: a fresh server per run.
run() {
  local label=$1 flags=$2; shift 3
  local p; p=$(free_port)
  # shellcheck disable=SC2086
  start_server "$BIN" "$p" "$OUT/server.log" --log-level error $flags
  local pid=$SERVER_PID
  local args=("$@")
  args=("${args[@]//PORT/$p}")
  echo "== $label: wshub bench ${args[*]}" >&2
  $BIN bench "${args[@]}" --pid "$pid" --label "$label" | tee -a "$OUT/bench.log" | tail -n 1 >> "$OUT/results.jsonl"
  kill -TERM "$pid"; wait "$pid" || true
}

for i in $(seq "$RUNS"); do
  run fanout-100x10 "" -- fanout --url ws://127.0.0.1:PORT/ws/bench --clients 100 --senders 10 --window 16 --duration "$DURATION"
  run light-1000 "" -- fanout --url ws://127.0.0.1:PORT/ws/bench --clients 1000 --senders 10 --rate 10 --duration "$DURATION"
  run one-to-10 "" -- fanout --url ws://127.0.0.1:PORT/ws/bench --clients 11 --senders 1 --window 64 --duration "$DURATION"
  # The same two with senders that write a whole window per system call
  # (flatters the server: it gets ready-made batches browsers never send).
  run fanout-100x10-batched "" -- fanout --url ws://127.0.0.1:PORT/ws/bench --clients 100 --senders 10 --window 16 --batch-writes --duration "$DURATION"
  run one-to-10-batched "" -- fanout --url ws://127.0.0.1:PORT/ws/bench --clients 11 --senders 1 --window 64 --batch-writes --duration "$DURATION"
  run echo "" -- echo --url ws://127.0.0.1:PORT/echo --duration "$DURATION"
  run big-16MiB "--max-message-bytes 17MiB" -- fanout --url ws://127.0.0.1:PORT/ws/big --clients 11 --senders 1 --window 1 --size 16777216 --binary --duration "$DURATION"
  run churn "" -- churn --url ws://127.0.0.1:PORT/echo --duration 5s
  for n in 10 100 1000 5000; do
    run "scale-$n" "" -- fanout --url ws://127.0.0.1:PORT/ws/bench --clients "$n" --senders "$(( n < 10 ? n : 10 ))" --window 16 --duration 5s --connect-rate 5000
  done
  for n in 1000 5000 10000; do
    run "idle-$n" "" -- idle --url ws://127.0.0.1:PORT/ws/idle --clients "$n" --connect-rate 5000
  done
  run "idle-10000-rb1k" "--read-buffer-bytes 1KiB" -- idle --url ws://127.0.0.1:PORT/ws/idle --clients 10000 --connect-rate 5000
done
python3 scripts/bench_report.py "$OUT/results.jsonl"
