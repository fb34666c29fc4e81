#!/usr/bin/env bash
# Side-by-side runs of two WebSocket servers under the same load generator,
# interleaved (A, B, A, B, …) so that both see the same machine noise, with
# the machine's CPU steal during every run. Prints each scenario's median of
# per-run ratios A/B; the runs are in target/bench/vs.jsonl.
#
#   scripts/bench_vs.sh NAME_A 'COMMAND_A' NAME_B 'COMMAND_B'
#
# Each COMMAND starts a server in the foreground; PORT in it is replaced by
# a free loopback port. Both servers are driven at ws://127.0.0.1:PORT$WS_PATH
# and must relay every message to every client of the room, the sender
# included (gorilla's chat does; wshub does with --echo-sender). E.g.:
#
#   scripts/bench_vs.sh \
#     wshub   './target/release/wshub serve --addr 127.0.0.1:PORT --echo-sender --log-level error' \
#     gorilla '/tmp/gorilla/chat -addr 127.0.0.1:PORT'
#
# Senders write one message per system call, as browsers do.
# RUNS (default 3), DURATION (default 5s), SCENARIOS (default all of
# "fanout light one-to-10 rtt churn idle"), GEN (the generator binary,
# default ./target/release/wshub) and WS_PATH (default /ws) can be set.
set -euo pipefail
cd "$(dirname "$0")/.."
name_a=$1 cmd_a=$2 name_b=$3 cmd_b=$4
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
SCENARIOS="${SCENARIOS:-fanout light one-to-10 rtt churn idle}"
GEN="${GEN:-./target/release/wshub}"
WS_PATH="${WS_PATH:-/ws}"
OUT="${OUT:-target/bench/vs.jsonl}"
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
[ -x "$GEN" ] || cargo build --release --quiet
if [ "$(cat /proc/sys/vm/max_map_count)" -lt 262144 ] && [ "$(id -u)" = 0 ]; then
  echo "bench_vs: as root, raising vm.max_map_count to 262144 (the idle rows need thread room; it stays raised)" >&2
  sysctl -qw vm.max_map_count=262144 || true
fi
ulimit -n "$(ulimit -Hn)" || true
# shellcheck source=scripts/server_lib.sh
. scripts/server_lib.sh

# The generator's arguments for one scenario (PORT replaced later).
scenario_args() {
  local url="ws://127.0.0.1:PORT$WS_PATH"
  case $1 in
    fanout) echo "fanout --url $url --echo-sender --clients 100 --senders 10 --window 16 --duration $DURATION" ;;
    light) echo "fanout --url $url --echo-sender --clients 1000 --senders 10 --rate 10 --duration $DURATION --connect-rate 5000" ;;
    one-to-10) echo "fanout --url $url --echo-sender --clients 10 --senders 1 --window 64 --duration $DURATION" ;;
    rtt) echo "echo --url $url --duration $DURATION" ;;
    churn) echo "churn --url $url --duration $DURATION" ;;
    idle) echo "idle --url $url --clients 5000 --connect-rate 5000" ;;
    *) echo "bench_vs: unknown scenario $1" >&2; exit 2 ;;
  esac
}

# steal and total jiffies of all CPUs so far.
cpu_jiffies() {
  awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print $9, t}' /proc/stat
}

# run NAME COMMAND SCENARIO RUN_NUMBER
run() {
  local name=$1 cmd=$2 scenario=$3 i=$4
  local p; p=$(free_port)
  local log; log=$(mktemp)
  bash -c "exec ${cmd//PORT/$p}" >/dev/null 2>"$log" &
  local pid=$!
  if ! wait_port "$p"; then
    echo "bench_vs: $name did not start:" >&2; cat "$log" >&2; exit 1
  fi
  local args; args=$(scenario_args "$scenario")
  args=${args//PORT/$p}
  echo "== run $i, $scenario, $name" >&2
  local before after t; before=$(cpu_jiffies); t=$(mktemp)
  # shellcheck disable=SC2086
  "$GEN" bench $args --pid "$pid" --label "$name" | tail -n 1 > "$t"
  after=$(cpu_jiffies)
  python3 - "$t" "$name" "$scenario" "$i" "$before" "$after" >> "$OUT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s0, t0 = map(int, sys.argv[5].split()); s1, t1 = map(int, sys.argv[6].split())
r.update(server=sys.argv[2], scenario_name=sys.argv[3], run=int(sys.argv[4]),
         steal_pct=round(100.0 * (s1 - s0) / max(t1 - t0, 1), 1))
print(json.dumps(r))
PY
  rm -f "$t" "$log"
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
}

for i in $(seq "$RUNS"); do
  for scenario in $SCENARIOS; do
    # Alternate which server goes first, so neither always runs on a warmer machine.
    if [ $((i % 2)) = 1 ]; then order="a b"; else order="b a"; fi
    for side in $order; do
      if [ "$side" = a ]; then run "$name_a" "$cmd_a" "$scenario" "$i"; else run "$name_b" "$cmd_b" "$scenario" "$i"; fi
    done
  done
done
python3 scripts/bench_vs_report.py "$OUT" "$name_a" "$name_b"
