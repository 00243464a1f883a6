#!/bin/sh
# Connections per second through an app's primary that hands each one to a
# worker (@socket.io/sticky's setupMaster, tests/apps/node/socketio-cluster.js):
# Node's own cluster against hotswap's handle relay (docs/node-primary.md,
# "Cost"). Every request is a new connection (sticky answers
# `Connection: close`), so every request is one handle passed.
# Usage: contrib/bench/primary_handles.sh [path/to/hotswap]  (PORT, SECONDS, CONNS)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
hotswap=${1:-$here/../../target/release/hotswap}
app=$here/../../tests/apps/node/socketio-cluster.js
port=${PORT:-18631} secs=${SECONDS_:-10} conns=${CONNS:-8}
run_wrk() {
    i=0; until curl -sf "http://127.0.0.1:$port/" >/dev/null || [ $i -gt 100 ]; do sleep 0.1; i=$((i+1)); done
    wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$port/" | grep -E 'Requests/sec|requests in|errors|Non-2xx|Latency'
}
echo "node's own cluster:"
PORT=$port node "$app" >/dev/null 2>&1 &
pid=$!
run_wrk
kill "$pid"; wait "$pid" 2>/dev/null || true
sleep 1
echo "hotswap:"
"$hotswap" run -w 2 -l "127.0.0.1:$port" --control "/tmp/primary_handles.$$.sock" -- node "$app" >/dev/null 2>&1 &
pid=$!
run_wrk
kill "$pid"; wait "$pid" 2>/dev/null || true
