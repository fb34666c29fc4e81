#!/usr/bin/env bash
# permessage-deflate, measured: the fan-out scenario (100 clients, 10
# senders, window 16, one write per message) with chat-like JSON messages
# of 200 bytes (`bench fanout --json`), with and without compression, the
# rows interleaved, RUNS runs each; prints medians of deliveries/s, server
# CPU per delivery and payload bytes on the wire per delivery.
#
#   scripts/bench_compression.sh            # RUNS=3 by default
#
# Rows: off (no --compression anywhere); on (server --compression
# --compression-min-bytes 128, clients offer it: every message deflated by
# its sender and once per broadcast by the server); on-default-min (the
# server's default --compression-min-bytes 256: 200-byte messages come in
# compressed and go out plain); on-level-6 (as on, at --compression-level 6).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
OUT=target/bench/compression.jsonl
mkdir -p target/bench
: > "$OUT"
cargo build --release --quiet
# shellcheck source=scripts/server_lib.sh
. scripts/server_lib.sh
BIN=./target/release/wshub

run() {
  local label=$1 server_flags=$2 client_flags=$3
  local p; p=$(free_port)
  # shellcheck disable=SC2086
  start_server "$BIN" "$p" /dev/null --log-level error $server_flags
  local pid=$SERVER_PID
  # shellcheck disable=SC2086
  "$BIN" bench fanout --url "ws://127.0.0.1:$p/ws/b" --clients 100 --senders 10 --window 16 \
    --duration 5s --json --size 200 $client_flags --pid "$pid" --label "$label" | tail -n 1 >> "$OUT"
  kill -TERM "$pid"; wait "$pid" || true
}

for i in $(seq "$RUNS"); do
  echo "== run $i" >&2
  run off "" ""
  run on "--compression --compression-min-bytes 128" "--compression"
  run on-default-min "--compression" "--compression"
  run on-level-6 "--compression --compression-min-bytes 128 --compression-level 6" "--compression"
done

PYTHONPATH=scripts python3 - "$OUT" <<'PY'
import sys
from bench_runs import load, med
runs = load(sys.argv[1])
for label in ["off", "on", "on-default-min", "on-level-6"]:
    rs = runs[label]
    print(f"{label:15} {med(rs, lambda r: r['deliveries_per_s']):12,.0f}/s  "
          f"server {med(rs, lambda r: r['server_cpu_us_per_delivery']):.3f} µs/delivery  "
          f"wire {med(rs, lambda r: r['wire_bytes_per_delivery']):6.1f} B/delivery  "
          f"compressed {med(rs, lambda r: r['compressed_share']):.2f}  "
          f"p99 {med(rs, lambda r: r['latency_us']['p99'])/1e3:.2f} ms  lost {sum(r['lost'] for r in rs)}")
PY
