#!/usr/bin/env bash
# make test's closing summary: one line per program that some tests skipped
# for (tests/common's `have` records each skip as DIR/PROGRAM/TEST, a file
# holding the Debian package that brings it), and how to get them all.
# Prints nothing when nothing was skipped. Only bash builtins: it runs in
# scripts/check_fresh.sh's bare PATH too.
# Usage: scripts/skipped.sh DIR   (DIR: <target>/tmp/skipped)
set -uo pipefail
dir="${1:?usage: scripts/skipped.sh DIR}"
shopt -s nullglob
any=
for program_dir in "$dir"/*/; do
  tests=("$program_dir"*)
  n=${#tests[@]}
  [ "$n" -gt 0 ] || continue
  program=${program_dir%/}
  program=${program##*/}
  read -r package < "${tests[0]}" || package=$program
  if [ "$n" -eq 1 ]; then what="1 test needs"; else what="$n tests need"; fi
  echo "skipped: $what $program (apt-get install $package)"
  any=1
done
if [ -n "$any" ]; then
  echo "(make test-deps installs them all on Debian)"
fi
