#!/usr/bin/env bash
# make test-deps: installs, on Debian, the optional programs that widen
# `make test` (without them their tests skip, and make test lists them),
# and those `make e2e` and `make autobahn` use. Only what is missing;
# as root, or through sudo. .ci/run calls this: it is the one list.
set -euo pipefail

# program on PATH, and the Debian package that brings it
deps=(
  "redis-server redis-server"     # tests/redis.rs, tests/nginx.rs: a server of their own
  "redis-cli redis-tools"         # ... asked with redis-cli
  "nginx nginx"                   # tests/nginx.rs: deploy/nginx.conf in front of two instances
  "openssl openssl"               # tests/nginx.rs: the run's own CA and certificate
  "systemd-analyze systemd"       # tests/deploy.rs: verifies deploy/wshub.service
  "curl curl"                     # tests/api_readme.rs: runs the README's server API examples
  "chromium chromium"             # make e2e: the chat page in headless Chromium
  "ss iproute2"                   # make e2e: drops a page's socket with ss -K
  "python3 python3"               # make autobahn: sets up the test suite
)

# nginx and ss live in /usr/sbin and /sbin, which a user's PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
need=()
for dep in "${deps[@]}"; do
  read -r program package <<<"$dep"
  command -v "$program" >/dev/null || need+=("$package")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "test-deps: all there"
  exit 0
fi
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
echo "test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
