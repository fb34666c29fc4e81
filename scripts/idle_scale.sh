#!/usr/bin/env bash
# Idle clients side by side: one server, N idle clients from the wshub
# generator, the generator's JSON line (server RSS and threads per
# connection), then the peak rise of /proc/meminfo Slab + KernelStack per
# client (both ends of loopback).
#
#   scripts/idle_scale.sh NAME 'COMMAND with PORT' CLIENTS
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 cmd=$2 n=$3
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
km() { awk '/^Slab:|^KernelStack:/{s+=$2} END{print s}' /proc/meminfo; }
k0=$(km)
bash -c "exec ${cmd//PORT/$port}" >/dev/null 2>/tmp/idle_$name.log & pid=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
./target/release/wshub bench idle --url ws://127.0.0.1:$port/ws --clients $n --connect-rate 5000 --duration 3s --settle 3s --pid $pid --label $name 2>/dev/null > /tmp/idle_$name.json &
gen=$!
peak=$k0
while kill -0 $gen 2>/dev/null; do k=$(km); [ $k -gt $peak ] && peak=$k; sleep 0.3; done
kill -TERM $pid; wait $pid 2>/dev/null || true
tail -1 /tmp/idle_$name.json
echo "kernel_kib_per_client $(( (peak - k0) * 100 / n ))e-2"
