#!/usr/bin/env bash
# Sets up the Autobahn|Testsuite (Python 2.7 only) under target/autobahn/env
# without a system install: Debian 11's python2.7 packages are fetched with a
# private apt configuration (this machine's own Debian mirror, suite
# bullseye) and unpacked with dpkg -x; a 2.7 virtualenv is made from that
# interpreter and autobahntestsuite is installed into it.
# Idempotent: does nothing when wstest is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ENV="$PWD/target/autobahn/env"
PY2="$ENV/root/usr/bin/python2.7"
WSTEST="$ENV/venv/bin/wstest"
[ -x "$WSTEST" ] && exit 0

mkdir -p "$ENV/apt/lists/partial" "$ENV/apt/cache/archives/partial" "$ENV/debs" "$ENV/root"
# The mirror this machine already uses, from its apt sources.
MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
[ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$MIRROR" ] || { echo "autobahn-setup: no Debian mirror found in the apt sources" >&2; exit 1; }
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bullseye main" > "$ENV/apt/sources.list"
APT_OPTS=(
  -o "Dir::Etc::SourceList=$ENV/apt/sources.list" -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$ENV/apt/lists" -o "Dir::Cache=$ENV/apt/cache"
  -o "Dir::State::Status=/dev/null" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root"
)
apt-get "${APT_OPTS[@]}" update -qq
PKGS=(python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib libpython2.7 python2.7-dev libpython2.7-dev libssl1.1 libffi7)
(cd "$ENV/debs" && apt-get "${APT_OPTS[@]}" download "${PKGS[@]}")
for deb in "$ENV"/debs/*.deb; do dpkg -x "$deb" "$ENV/root"; done

LIBS="$ENV/root/usr/lib/x86_64-linux-gnu:$ENV/root/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONHOME="$ENV/root/usr"
"$PY2" -c 'import sys, ssl, ctypes; print(sys.version.split()[0])'
unset PYTHONHOME

# virtualenv 20.21.1 is the last that seeds a 2.7 environment; run it from Python 3.
python3 -m pip install -q --upgrade --target "$ENV/virtualenv" "virtualenv==20.21.1" 2>&1 | grep -v "^WARNING: Running pip as" || true
PYTHONPATH="$ENV/virtualenv" python3 -m virtualenv -q -p "$PY2" "$ENV/venv"
# wsaccel compiles against the unpacked headers.
CFLAGS="-I$ENV/root/usr/include -I$ENV/root/usr/include/python2.7 -I$ENV/root/usr/include/x86_64-linux-gnu/python2.7" \
  LDFLAGS="-L$ENV/root/usr/lib/x86_64-linux-gnu" \
  "$ENV/venv/bin/pip" install -q "autobahntestsuite==25.10.1"
"$WSTEST" --help >/dev/null
echo "autobahn-setup: wstest ready"
