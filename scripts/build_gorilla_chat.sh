#!/usr/bin/env bash
# Builds gorilla/websocket's examples/chat, the reference for
# scripts/bench_vs.sh, outside this repository (none of its code is ever
# committed here), with Debian's Go and gorilla packages in GOPATH mode.
#
#   scripts/build_gorilla_chat.sh GORILLA_SOURCE [OUT_BINARY]
#
# GORILLA_SOURCE is a checkout of github.com/gorilla/websocket (a work tree,
# or a bare repository: HEAD is used). OUT_BINARY defaults to
# /tmp/gorilla-chat/chat.
set -euo pipefail
src=$1
out=${2:-/tmp/gorilla-chat/chat}
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/gorilla/websocket ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq golang-go golang-github-gorilla-websocket-dev >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/chat"
for f in client.go hub.go main.go home.html; do
  if [ -f "$src/examples/chat/$f" ]; then
    cp "$src/examples/chat/$f" "$work/chat/"
  else
    git --git-dir="$src" show "HEAD:examples/chat/$f" > "$work/chat/$f"
  fi
done
mkdir -p "$(dirname "$out")"
(cd "$work/chat" && GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$out" .)
echo "built $out"
