#!/usr/bin/env bash
# make soak: SOAK_SECONDS (default 1800) of steady chat with joins and leaves
# against a release server. Every 10 s the server's RSS, threads and open
# fds go to docs/soak.csv; docs/soak.png plots them; the script fails if
# any of them grew between the first and the last third of the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL="${SOAK_SECONDS:-1800}"
cargo build --release --quiet
BIN=./target/release/wshub
mkdir -p docs target/soak
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$BIN serve --addr "127.0.0.1:$PORT" --log-level warn 2> target/soak/server.log &
SERVER=$!
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
sleep 0.5
END=$(( $(date +%s) + SECONDS_TOTAL ))

# Sampler.
(
  echo "seconds,rss_kib,threads,fds"
  T0=$(date +%s)
  while [ "$(date +%s)" -lt "$END" ]; do
    rss=$(awk '/^VmRSS:/ {print $2}' /proc/$SERVER/status)
    thr=$(awk '/^Threads:/ {print $2}' /proc/$SERVER/status)
    fds=$(ls /proc/$SERVER/fd | wc -l)
    echo "$(( $(date +%s) - T0 )),$rss,$thr,$fds"
    sleep 10
  done
) > docs/soak.csv &
SAMPLER=$!

# Steady chat for the whole run: 20 clients, 4 of them talking, 20 msg/s each.
$BIN bench fanout --url "ws://127.0.0.1:$PORT/ws/steady" --clients 20 --senders 4 --rate 20 \
  --duration "${SECONDS_TOTAL}s" > target/soak/steady.log 2>&1 &
# Joins and leaves: rooms that fill, chat for a while and empty, and
# connections that come and go, until the end.
(
  i=0
  while [ "$(( END - $(date +%s) ))" -gt 30 ]; do
    i=$((i + 1))
    $BIN bench fanout --url "ws://127.0.0.1:$PORT/ws/room$((i % 5))" --clients 40 --senders 4 --rate 10 \
      --duration 15s >> target/soak/rooms.log 2>&1 || true
    $BIN bench churn --url "ws://127.0.0.1:$PORT/echo" --workers 1 --duration 5s >> target/soak/churn.log 2>&1 || true
  done
) &
wait $SAMPLER
kill -TERM $SERVER; wait $SERVER || true
python3 scripts/soak_plot.py docs/soak.csv docs/soak.png
