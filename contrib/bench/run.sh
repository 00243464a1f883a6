#!/usr/bin/env bash
# Side-by-side benchmark of hotswap against no supervisor, Node's cluster
# module (SCHED_RR and SCHED_NONE), PM2 cluster mode and Server::Starter.
#
#   contrib/bench/run.sh
#
# Installs what it needs, idempotently: wrk (apt), Server::Starter (apt
# libserver-starter-perl; optional, skipped if it will not install), PM2 (npm,
# locally into contrib/bench/node_modules, gitignored). Builds hotswap with
# `cargo build --release`, runs bench.py, and leaves contrib/bench/results.md,
# results.json and latency.svg (raw logs in contrib/bench/out/).
#
# Bounded: about 10-12 minutes on 2 cores, never more than 14 (see
# BENCH_TOTAL_BUDGET below). Targets 127.0.0.1 only. Every process it starts
# carries BENCH_RUN_ID in its environment; on exit (trap EXIT) PM2's daemon is
# killed through `pm2 kill` and any process still carrying this run's id is
# ended by its pid.
set -euo pipefail

BENCH_T0=$(date +%s.%N)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

export BENCH_RUN_ID="hotswap-bench-$$-$(date +%s)"
export BENCH_TMP
BENCH_TMP=$(mktemp -d /tmp/hotswap-bench.XXXXXX)
export BENCH_T0

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    # PM2's daemon detaches from us: stop it through its own CLI first.
    if [ -f "$BENCH_TMP/pm2/pm2.pid" ] && [ -x "$HERE/node_modules/.bin/pm2" ]; then
        PM2_HOME="$BENCH_TMP/pm2" timeout 30 "$HERE/node_modules/.bin/pm2" kill >/dev/null 2>&1 || true
    fi
    # Then every process of this run still alive, found by the run id in its
    # environment, each ended by pid (TERM, then KILL).
    local pids=() p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$$" ] && continue
        if { tr '\0' '\n' < "/proc/$p/environ"; } 2>/dev/null | grep -qx "BENCH_RUN_ID=$BENCH_RUN_ID"; then
            pids+=("$p")
        fi
    done
    if [ ${#pids[@]} -gt 0 ]; then
        log "ending ${#pids[@]} leftover process(es): ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        sleep 1
        for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    fi
    rm -rf "$BENCH_TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------ dependencies
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}
need() { command -v "$1" >/dev/null 2>&1; }

need node || apt_install nodejs npm
need npm || apt_install npm
need python3 || apt_install python3
need cargo || { log "cargo is required (rustup)"; exit 1; }
need wrk || apt_install wrk
if ! need start_server; then
    apt_install libserver-starter-perl || log "Server::Starter unavailable: it will be skipped"
fi
if [ "$(node -p 'require("'"$HERE"'/node_modules/pm2/package.json").version' 2>/dev/null)" != \
     "$(node -p 'require("'"$HERE"'/package.json").dependencies.pm2')" ]; then
    log "installing PM2 into contrib/bench/node_modules"
    (cd "$HERE" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi

# ------------------------------------------------------------------ build
# By default the work tree is built (target/release/hotswap). With
# BENCH_HOTSWAP_REV=<git revision> that committed revision is exported to
# contrib/bench/out/rev-<sha> and built there instead (target dir
# contrib/bench/out/target-rev), so that a benchmark can run on a known commit
# while src/ is being edited.
if [ -n "${BENCH_HOTSWAP_REV:-}" ]; then
    sha=$(git rev-parse --short "$BENCH_HOTSWAP_REV^{commit}")
    src="$HERE/out/rev-$sha"
    if [ ! -f "$src/Cargo.toml" ]; then
        mkdir -p "$src"
        git archive "$sha" | tar -x -C "$src"
    fi
    log "cargo build --release of commit $sha (in $src)"
    (cd "$src" && CARGO_TARGET_DIR="$HERE/out/target-rev" cargo build --release)
    export BENCH_HOTSWAP_BIN="$HERE/out/target-rev/release/hotswap" BENCH_HOTSWAP_COMMIT="$sha"
else
    log "cargo build --release"
    cargo build --release
    export BENCH_HOTSWAP_BIN="$ROOT/target/release/hotswap"
fi
[ -x "$BENCH_HOTSWAP_BIN" ] || { log "$BENCH_HOTSWAP_BIN missing after the build"; exit 1; }

# The warm-up priority part (BENCH_ONLY=warmup) is a script of its own,
# with its own results file.
if [ "${BENCH_ONLY:-}" = warmup ]; then
    log "warm-up priority: p99 during reloads with and without --warmup-nice"
    python3 "$HERE/warmup.py" --rounds "${BENCH_WARMUP_ROUNDS:-2}" --modes "${BENCH_WARMUP_MODES:-off,10}" \
        --out "$HERE/warmup.md"
    exit 0
fi

# ------------------------------------------------------------------ run
# The rescue part runs alone: stock servers (tests/fixtures), rescue on and off.
if [ "${BENCH_ONLY:-}" = rescue ]; then
    log "running the rescue benchmark (contrib/bench/rescue.py)"
    python3 "$HERE/rescue.py"
    exit 0
fi
log "running the benchmark (run id $BENCH_RUN_ID)"
# The whole run stays under 14 minutes: the driver gets what is left of
# BENCH_TOTAL_BUDGET (810 s) after the install and the build as its budget for
# waiting out other load on the machine and repeating disturbed runs, and is
# stopped for good 30 s after that. In the background + wait, so that a signal
# to run.sh is handled at once.
spent=$(python3 -c "import time; print(int(time.time() - $BENCH_T0))")
export BENCH_BUDGET=${BENCH_BUDGET:-$(( ${BENCH_TOTAL_BUDGET:-810} - spent - 20 ))}
# A build that took (nearly) the whole budget (a busy machine) would leave
# the driver nothing, or a negative time that `timeout` refuses: say so.
if [ "$BENCH_BUDGET" -lt 60 ]; then
    log "the install and the build took ${spent} s of BENCH_TOTAL_BUDGET (${BENCH_TOTAL_BUDGET:-810} s):" \
        "run again (the build is done) or raise BENCH_TOTAL_BUDGET"
    exit 1
fi
log "measurement budget ${BENCH_BUDGET} s"
timeout -s TERM "$(( BENCH_BUDGET + 30 ))" python3 "$HERE/bench.py" &
wait $!

total=$(python3 -c "import time; print(time.time() - $BENCH_T0)")
python3 - "$HERE/results.json" "$total" <<'EOF'
import json, sys
path, total = sys.argv[1], float(sys.argv[2])
with open(path) as f:
    res = json.load(f)
# A run of the balance part alone keeps the other parts' figures (bench.py):
# its time is its own.
res["balance_total_seconds" if res.get("last_run") == "balance" else "total_seconds"] = total
with open(path, "w") as f:
    json.dump(res, f, indent=1)
EOF
python3 "$HERE/report.py"
log "done in $(printf '%.0f' "$total") s: $HERE/results.md, $HERE/latency.svg"
