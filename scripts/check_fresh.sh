#!/usr/bin/env bash
# A newcomer's machine, simulated: `make test` with a PATH that is only a
# temporary directory of links to the Rust toolchain and the few core
# programs that building and the tests use — no python3, redis-server,
# nginx, openssl or systemd-analyze — an environment emptied of all but
# HOME and the toolchain's own variables, and CI unset. Asserts that it
# passes and that its closing summary names each of those programs as
# skipped. .ci/run runs it before the full run. It reuses target/, so after
# a build it costs one run of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=(
  cargo rustc rustdoc # the toolchain (rustup's proxies, where rustup put it)
  cc as ld ar         # the linker, and the C that build scripts compile (ring)
  make bash rm        # make test's recipe and scripts/skipped.sh
  kill                # tests signal a server process
)
hidden=(redis-server nginx openssl systemd-analyze)

bin=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$bin" "$log"' EXIT
for tool in "${tools[@]}"; do
  path=$(type -P "$tool") || { echo "check_fresh: no $tool on PATH here" >&2; exit 1; }
  ln -s "$path" "$bin/$tool"
done

# HOME, and the toolchain's settings (RUSTUP_HOME, CARGO_HOME, CARGO_TARGET_DIR…).
keep=("HOME=$HOME" "PATH=$bin")
while IFS= read -r var; do
  keep+=("$var")
done < <(env | grep -E '^(RUSTUP|CARGO)_[A-Z_]*=' || true)

for program in "${hidden[@]}" python3; do
  if env -i "${keep[@]}" bash -c "type -P $program" >/dev/null; then
    echo "check_fresh: $program is still reachable" >&2
    exit 1
  fi
done

echo "check_fresh: make test with PATH=$bin (${tools[*]})"
set +e
env -i "${keep[@]}" make test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

fail=0
if [ "$status" -ne 0 ]; then
  echo "check_fresh: make test failed (exit $status) with only the toolchain" >&2
  fail=1
fi
grep -q '^test result: ok' "$log" || { echo "check_fresh: no test ran" >&2; fail=1; }
for program in "${hidden[@]}"; do
  if ! grep -Eq "^skipped: [0-9]+ tests? needs? $program \(apt-get install " "$log"; then
    echo "check_fresh: the summary does not name $program" >&2
    fail=1
  fi
done
[ "$fail" -eq 0 ] && echo "check_fresh: ok: make test passes with only the toolchain, and says what it skipped"
exit "$fail"
