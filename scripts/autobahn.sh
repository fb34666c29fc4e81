#!/usr/bin/env bash
# make autobahn: the Autobahn|Testsuite fuzzingclient against wshub's /echo
# (and, with AUTOBAHN_PATH=/ws, the chat path with --echo-sender), all
# cases. With AUTOBAHN_COMPRESSION=1 the server runs with --compression and
# no 12.x/13.x case may be UNIMPLEMENTED. Prints one summary line; fails on
# any FAILED case or close behaviour, or when fewer cases ran than were
# selected. The HTML report stays in target/autobahn/report/ (report-deflate/
# with compression).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/autobahn-setup.sh
cargo build --release --quiet

ENV="$PWD/target/autobahn/env"
OUT="$PWD/target/autobahn"
PATH_UNDER_TEST="${AUTOBAHN_PATH:-/echo}"
CASES="${AUTOBAHN_CASES:-*}"
export LD_LIBRARY_PATH="$ENV/root/usr/lib/x86_64-linux-gnu:$ENV/root/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# A free port, then the server on it (16 MiB cases need a larger limit).
# shellcheck source=scripts/server_lib.sh
. scripts/server_lib.sh
PORT=$(free_port)
EXTRA=()
[ "$PATH_UNDER_TEST" = "/echo" ] || EXTRA=(--echo-sender)
COMPRESSION="${AUTOBAHN_COMPRESSION:-}"
REPORT="$OUT/report"
RUN="$OUT/plain"
if [ -n "$COMPRESSION" ]; then
  # Every message compressible, so that the compressor is exercised too.
  EXTRA+=(--compression --compression-min-bytes 0)
  REPORT="$OUT/report-deflate"
  RUN="$OUT/deflate"
fi
# Each mode its own files: `make autobahn` runs both at once.
mkdir -p "$RUN"
: > "$RUN/server.log"
SERVER_PID=
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
start_server ./target/release/wshub "$PORT" "$RUN/server.log" --max-message-bytes 64MiB \
  --send-queue-bytes 256MiB --log-level warn "${EXTRA[@]}" ||
  { echo "autobahn: wshub did not start; see $RUN/server.log" >&2; exit 1; }

rm -rf "$REPORT"
cat > "$RUN/fuzzingclient.json" <<JSON
{
  "outdir": "$REPORT",
  "servers": [{"agent": "wshub", "url": "ws://127.0.0.1:$PORT$PATH_UNDER_TEST"}],
  "cases": ["$CASES"],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
(cd "$RUN" && "$ENV/venv/bin/wstest" -m fuzzingclient -s "$RUN/fuzzingclient.json" > "$RUN/wstest.log" 2>&1) || true

kill -TERM $SERVER_PID
wait $SERVER_PID || { echo "autobahn: wshub exited with an error; see $RUN/server.log" >&2; exit 1; }
trap - EXIT

# wstest exits 0 even when it cannot connect: count the results.
python3 - "$REPORT/index.json" "$CASES" "$COMPRESSION" <<'PY'
import json, sys
path, selected, compression = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    results = json.load(open(path))["wshub"]
except (OSError, KeyError, ValueError) as e:
    sys.exit(f"autobahn: no results ({e}); see the wstest.log beside the report")
counts = {}
failed = []
for case, r in sorted(results.items()):
    b = r["behavior"]
    counts[b] = counts.get(b, 0) + 1
    if b == "FAILED" or r["behaviorClose"] == "FAILED":
        failed.append(f'{case} ({b}/{r["behaviorClose"]})')
order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
line = " ".join(f"{k}={counts.get(k, 0)}" for k in order)
extra = sorted(set(counts) - set(order))
if extra:
    line += " " + " ".join(f"{k}={counts[k]}" for k in extra)
mode = " (with --compression)" if compression else ""
print(f"autobahn{mode}: {line} cases={len(results)}")
unimplemented = [c for c, r in results.items() if r["behavior"] == "UNIMPLEMENTED"]
if compression and unimplemented:
    sys.exit("autobahn: unimplemented with --compression: " + ", ".join(sorted(unimplemented)[:20]))
expected = 517 if selected == "*" else None
if failed:
    sys.exit("autobahn: failed: " + ", ".join(failed))
if expected and len(results) < expected:
    sys.exit(f"autobahn: only {len(results)} of {expected} cases ran")
if extra:
    sys.exit("autobahn: unexpected results " + ", ".join(extra))
PY
echo "autobahn: report in ${REPORT#"$PWD/"}/index.html"
