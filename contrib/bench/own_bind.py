#!/usr/bin/env python3
"""What bind interception (--bind-intercept, docs/own-bind.md) costs.

0. What the filter costs every other system call, in CPU time (robust
   to a busy machine): N getppid() calls in a worker, with and without.
1. A bind of an unrelated address (port 0 on 127.0.0.1, which no --listen
   serves): N binds in a worker, with the filter (each bind waits for the
   primary's answer) and without; the time per bind.
2. Steady-state throughput of a Go net/http server that never binds again:
   the fd-3 server (tests/fixtures/stock_go) with the filter and without,
   and the same server binding its own port (tests/fixtures/own_bind_go)
   with the filter; wrk -t2 -c50 -d10s, keep-alive, each run ROUNDS times,
   alternating, median shown.

Run from the repository root after `cargo build --release`:
    python3 contrib/bench/own_bind.py
"""

import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOTSWAP = os.environ.get("HOTSWAP", os.path.join(ROOT, "target/release/hotswap"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
BINDS = int(os.environ.get("BINDS", "5000"))
TMP = tempfile.mkdtemp(prefix="hotswap-own-bind-bench-")

BIND_LOOP = f"""
import socket, time
n = {BINDS}
t = time.perf_counter()
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.close()
t = time.perf_counter() - t
print("binds: %d in %.3f s, %.1f us each" % (n, t, t / n * 1e6), flush=True)
time.sleep(60)
"""


SYSCALL_LOOP = f"""
import os, time
n = {BINDS} * 400
t = time.process_time()
for _ in range(n):
    os.getppid()
t = time.process_time() - t
print("syscalls: %d in %.3f s CPU, %.1f ns each" % (n, t, t / n * 1e9), flush=True)
time.sleep(60)
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def go_build(name):
    out = os.path.join(TMP, name)
    env = dict(os.environ, GO111MODULE="off", GOCACHE=os.path.join(ROOT, "target/go-cache"))
    subprocess.run(["go", "build", "-o", out, "main.go"], cwd=os.path.join(ROOT, "tests/fixtures", name), env=env, check=True)
    return out


def run(args, command, until, timeout=30):
    """Starts a primary, waits until its log matches `until`, returns (proc, control, log path)."""
    control = os.path.join(TMP, "c%d.sock" % time.monotonic_ns())
    log = control + ".log"
    proc = subprocess.Popen([HOTSWAP, "run", "--control", control] + args + ["--"] + command,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = open(log).read()
        m = re.search(until, text)
        if m:
            return proc, control, log, m
        if proc.poll() is not None:
            sys.exit("hotswap exited:\n" + text)
        time.sleep(0.1)
    proc.kill()
    sys.exit("timed out waiting for %r:\n%s" % (until, open(log).read()))


def stop(proc, control):
    subprocess.run([HOTSWAP, "stop", "--control", control], capture_output=True)
    proc.wait(timeout=30)


def binds(mode, loop=BIND_LOOP, pattern=r"binds: \d+ in [\d.]+ s, ([\d.]+) us each"):
    port = free_port()
    proc, control, _, m = run(["-l", "127.0.0.1:%d" % port, "-w", "1", "--ready", "none", "--bind-intercept", mode],
                              ["python3", "-c", loop], pattern, timeout=120)
    stop(proc, control)
    return float(m.group(1))


def wrk(mode, command, port_arg):
    port = free_port()
    cmd = [c.replace("PORT", str(port)) for c in command]
    proc, control, _, _ = run(["-l", "127.0.0.1:%d" % port, "-w", "2", "--bind-intercept", mode], cmd,
                              r"(?s)ready in.*ready in")
    out = subprocess.run(["wrk", "-t2", "-c50", "-d10s", "http://127.0.0.1:%d/" % port], capture_output=True, text=True).stdout
    stop(proc, control)
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    print("hotswap:", HOTSWAP, "| kernel:", os.uname().release, "| cpus:", os.cpu_count(),
          "| load:", open("/proc/loadavg").read().split()[0])
    for _ in range(ROUNDS):
        per = {mode: binds(mode, SYSCALL_LOOP, r"syscalls: \d+ in [\d.]+ s CPU, ([\d.]+) ns each") for mode in ["off", "on"]}
        print("getppid() in a worker, CPU ns per call: --bind-intercept off %.1f, on %.1f" % (per["off"], per["on"]))
    for mode in ["off", "on"]:
        per = [binds(mode) for _ in range(ROUNDS)]
        print("bind of an unrelated address, --bind-intercept %-3s: %s us (median %.1f)"
              % (mode, ", ".join("%.1f" % p for p in per), statistics.median(per)))
    fd3, own = go_build("stock_go"), go_build("own_bind_go")
    runs = {"fd 3, --bind-intercept off": [], "fd 3, --bind-intercept on": [], "own bind :PORT, on": []}
    for _ in range(ROUNDS):
        runs["fd 3, --bind-intercept off"].append(wrk("off", [fd3], None))
        runs["fd 3, --bind-intercept on"].append(wrk("on", [fd3], None))
        runs["own bind :PORT, on"].append(wrk("on", [own, ":PORT"], None))
    for name, rs in runs.items():
        print("Go net/http, %-27s req/s: %s (median %.0f)" % (name, ", ".join("%.0f" % r for r in rs), statistics.median(rs)))


if __name__ == "__main__":
    main()
