#!/bin/sh
# Messages per second from cluster workers to the app's primary: Node's own
# cluster against hotswap's relay (docs/node-primary.md, "Cost").
# Usage: contrib/bench/primary_messages.sh [path/to/hotswap]  (MESSAGES, FORKS)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
hotswap=${1:-$here/../../target/release/hotswap}
app=$here/apps/primary-messages.js
export MESSAGES=${MESSAGES:-100000} FORKS=${FORKS:-1}
echo "node's own cluster:"; node "$app" | grep RESULT
echo "hotswap:"
log=$(mktemp)
"$hotswap" run -w "$FORKS" --control "$log.sock" -- node "$app" >"$log" 2>&1 &
pid=$!
i=0; while ! grep -q RESULT "$log" && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
grep RESULT "$log" | sed 's/^\[[^]]*\] //'
kill "$pid"; wait "$pid" 2>/dev/null || true; rm -f "$log"
