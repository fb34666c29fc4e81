#!/usr/bin/env bash
# Interleaved before/after comparison, the kind BENCHMARKS.md reports for a
# change: runs each scenario RUNS times, alternating two wshub binaries, so
# that both see the same machine noise. Prints medians.
#
#   scripts/bench_ab.sh server    OLD_BIN NEW_BIN   # the server varies, NEW_BIN generates the load
#   scripts/bench_ab.sh generator OLD_BIN NEW_BIN   # the generator varies, NEW_BIN serves
#
# An older build: git worktree add /tmp/old COMMIT && (cd /tmp/old && cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
what=$1 old=$2 new=$3
RUNS="${RUNS:-3}"   # ONLY=REGEX: only the matching scenarios
OUT=target/bench/ab-$what.jsonl
mkdir -p target/bench
: > "$OUT"
# shellcheck source=scripts/server_lib.sh
. scripts/server_lib.sh

# run LABEL SERVER_BIN GENERATOR_BIN BENCH_ARGS... (PORT is replaced)
run() {
  local label=$1 server=$2 generator=$3; shift 3
  # ONLY=REGEX runs just the scenarios whose label matches.
  [[ -z "${ONLY:-}" || "$label" =~ $ONLY ]] || return 0
  local p; p=$(free_port)
  start_server "$server" "$p" /dev/null --log-level error
  local pid=$SERVER_PID
  local args=("$@")
  args=("${args[@]//PORT/$p}")
  # The generator's own CPU time goes into the JSON line too (/usr/bin/time, if installed).
  local t; t=$(mktemp)
  local timer=(); [ -x /usr/bin/time ] && timer=(/usr/bin/time -o "$t.cpu" -f "%U %S")
  "${timer[@]}" "$generator" bench "${args[@]}" --pid "$pid" --label "$label" | tail -n 1 > "$t"
  python3 - "$t" >> "$OUT" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
cpu = sys.argv[1] + ".cpu"
if os.path.exists(cpu):
    u, s = open(cpu).read().split()[-2:]
    r["generator_cpu_s"] = float(u) + float(s)
print(json.dumps(r))
PY
  rm -f "$t" "$t.cpu"
  kill -TERM "$pid"; wait "$pid" || true
}

for i in $(seq "$RUNS"); do
  for side in before after; do
    bin=$old; [ "$side" = after ] && bin=$new
    if [ "$what" = server ]; then srv=$bin gen=$new; else srv=$new gen=$bin; fi
    echo "== run $i, $side" >&2
    run "$side:fanout-100x10" "$srv" "$gen" fanout --url ws://127.0.0.1:PORT/ws/b --clients 100 --senders 10 --window 16 --duration 5s
    run "$side:one-to-10" "$srv" "$gen" fanout --url ws://127.0.0.1:PORT/ws/b --clients 11 --senders 1 --window 64 --duration 5s
    run "$side:light-1000" "$srv" "$gen" fanout --url ws://127.0.0.1:PORT/ws/b --clients 1000 --senders 10 --rate 10 --duration 5s
    if [ "$what" = server ]; then
      run "$side:one-to-10-batched" "$srv" "$gen" fanout --url ws://127.0.0.1:PORT/ws/b --clients 11 --senders 1 --window 64 --batch-writes --duration 5s
      run "$side:churn" "$srv" "$gen" churn --url ws://127.0.0.1:PORT/echo --duration 4s
      run "$side:idle-2000" "$srv" "$gen" idle --url ws://127.0.0.1:PORT/ws/idle --clients 2000 --connect-rate 5000
    fi
  done
done

PYTHONPATH=scripts python3 - "$OUT" <<'PY'
import sys
from bench_runs import load, med
runs = load(sys.argv[1])
for label in sorted(runs):
    rs = runs[label]
    if "deliveries_per_s" in rs[0]:
        gen = med(rs, lambda r: r.get("generator_cpu_s") and r["generator_cpu_s"] * 1e6 / max(r["delivered"], 1))
        print(f"{label:24} {med(rs, lambda r: r['deliveries_per_s']):12,.0f}/s  p99 {med(rs, lambda r: r['latency_us']['p99'])/1e3:7.2f} ms  "
              f"server {med(rs, lambda r: r['server_cpu_us_per_delivery']):.3f} µs/delivery"
              + (f"  generator {gen:.3f} µs/delivery (connecting included)" if gen else ""))
    elif "sessions_per_s" in rs[0]:
        print(f"{label:24} {med(rs, lambda r: r['sessions_per_s']):12,.0f} sessions/s")
    else:
        print(f"{label:24} {med(rs, lambda r: r['rss_kib_per_connection']):12.1f} KiB RSS/connection")
PY
