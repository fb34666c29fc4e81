# Sourced by the scripts that run a wshub server on loopback: a free port,
# and a server started on it once it accepts connections.

# A free loopback port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits (at most 10 s) until something accepts on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.1)" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# start_server BIN PORT LOG [SERVE_FLAGS...]: `BIN serve` in the background,
# stderr appended to LOG; sets SERVER_PID and returns once it accepts.
start_server() {
  local bin=$1 port=$2 log=$3
  shift 3
  "$bin" serve --addr "127.0.0.1:$port" "$@" 2>>"$log" &
  SERVER_PID=$!
  wait_port "$port"
}
