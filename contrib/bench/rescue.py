#!/usr/bin/env python3
"""Rescue benchmark: unchanged stock servers with their own graceful stop
(the fixtures of tests/it/rescue.rs: an asyncio server, nginx, Go net/http,
aiohttp), each under hotswap with --rescue on and off.

For each: steady keep-alive throughput (wrk -t2 -c50, BENCH_RESCUE_STEADY s,
no reload), then BENCH_RESCUE_DURATION s with `hotswap reload` every
BENCH_RELOAD_EVERY s under wrk (-c50, keep-alive) and 4 keep-alive clients
pausing 2 ms between requests: failed requests of each, and the primary's
CPU (utime+stime) during that run.

    BENCH_ONLY=rescue contrib/bench/run.sh     # builds, then runs this

Writes contrib/bench/rescue.md and rescue.json. Only 127.0.0.1.
BENCH_RESCUE_ONLY=nginx runs the servers whose name contains it.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("BENCH_HOTSWAP_BIN", os.path.join(ROOT, "target/release/hotswap"))
FIX = os.path.join(ROOT, "tests/fixtures")
STEADY = int(os.environ.get("BENCH_RESCUE_STEADY", "5"))
DURATION = int(os.environ.get("BENCH_RESCUE_DURATION", "10"))
EVERY = float(os.environ.get("BENCH_RELOAD_EVERY", "2"))
TMP = tempfile.mkdtemp(prefix="hotswap-rescue-bench-")
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print("[rescue.py %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def go_server():
    out = os.path.join(TMP, "stock-go")
    subprocess.run(["go", "build", "-o", out, "main.go"], cwd=os.path.join(FIX, "stock_go"), check=True,
                   env=dict(os.environ, GO111MODULE="off"))
    return [out]


SERVERS = [
    ("stock asyncio", lambda: ["python3", os.path.join(FIX, "stock_asyncio.py")], []),
    ("nginx (SIGQUIT)", lambda: ["python3", os.path.join(FIX, "stock_nginx.py")], ["--stop-signal", "SIGQUIT"]),
    ("Go net/http Shutdown", go_server, []),
    ("aiohttp", lambda: ["python3", os.path.join(FIX, "stock_aiohttp.py")], ["--python", "off"]),
]


def cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wrk(port, duration):
    out = subprocess.run(["wrk", "-t2", "-c50", "-d%ds" % duration, "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True).stdout
    rps, errors = 0.0, 0
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        if "Socket errors:" in line:
            errors += sum(int(x.strip().split()[-1]) for x in line.split(":", 1)[1].split(","))
        if "Non-2xx" in line:
            errors += int(line.split()[-1])
    return rps, errors


def paced(port, stop, result):
    """4 keep-alive clients, 2 ms between requests: [requests, failed]."""

    def one():
        s = f = None
        while not stop.is_set():
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", port))
                    f = s.makefile("rb")
                s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
                if not f.readline():
                    raise OSError("closed before an answer")
                length, close = 0, False
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b""):
                        break
                    k = h.lower()
                    if k.startswith(b"content-length:"):
                        length = int(k.split(b":")[1])
                    close |= k.startswith(b"connection: close")
                f.read(length)
                result[0] += 1
                if close:
                    s.close()
                    s = None
            except OSError:
                result[0] += 1
                result[1] += 1
                s = None
            time.sleep(0.002)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    return threads


def run(name, command, extra, rescue):
    port = free_port()
    control = os.path.join(TMP, "c-%d.sock" % port)
    argv = [BIN, "run", "-l", "127.0.0.1:%d" % port, "-w", "2", "--control", control, "--ready", "accepting",
            "--rescue", rescue] + extra + ["--"] + command
    logf = open(os.path.join(TMP, "%d.log" % port), "w")
    p = subprocess.Popen(argv, stdout=logf, stderr=logf)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            st = subprocess.run([BIN, "status", "--json", "--control", control], capture_output=True, text=True)
            if st.returncode == 0 and sum(w["state"] == "ready" for w in json.loads(st.stdout)["workers"]) == 2:
                break
            time.sleep(0.2)
        steady, _ = wrk(port, STEADY)
        stop, result = threading.Event(), [0, 0]
        threads = paced(port, stop, result)
        cpu0, t0 = cpu(p.pid), time.time()
        reloads = []
        w = threading.Thread(target=lambda: reloads.append(wrk(port, DURATION)))
        w.start()
        rescued = 0
        while time.time() - t0 < DURATION - EVERY / 2:
            try:
                out = subprocess.run([BIN, "reload", "--control", control], capture_output=True, text=True,
                                     timeout=60).stdout
            except subprocess.TimeoutExpired:
                log("%s: a reload took over 60 s" % name)
                out = ""
            if "rescued " in out:
                rescued += int(out.split("rescued ")[1].split()[0])
            time.sleep(max(0.0, EVERY - (time.time() - t0) % EVERY))
        w.join()
        stop.set()
        for t in threads:
            t.join()
        cpu_pct = 100 * (cpu(p.pid) - cpu0) / (time.time() - t0)
        rps, wrk_failed = reloads[0]
        return {"server": name, "rescue": rescue, "steady_rps": steady, "reload_rps": rps,
                "wrk_failed": wrk_failed, "paced_requests": result[0], "paced_failed": result[1],
                "rescued": rescued, "primary_cpu_pct": cpu_pct}
    finally:
        try:
            subprocess.run([BIN, "stop", "--control", control], capture_output=True, timeout=60)
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    rows = []
    only = os.environ.get("BENCH_RESCUE_ONLY", "")
    for name, command, extra in [s for s in SERVERS if only in s[0]]:
        try:
            cmd = command()
        except (OSError, subprocess.CalledProcessError) as e:
            log("%s skipped: %s" % (name, e))
            continue
        for rescue in ("on", "off"):
            r = run(name, cmd, extra, rescue)
            log(json.dumps(r))
            rows.append(r)
    with open(os.path.join(HERE, "rescue.json"), "w") as f:
        json.dump({"rows": rows, "duration_s": DURATION, "reload_every_s": EVERY, "steady_s": STEADY,
                   "cpus": os.cpu_count(), "loadavg": os.getloadavg()}, f, indent=1)
    lines = [
        "# Rescue: stock servers, reload every %g s" % EVERY,
        "",
        "2 workers; %d s with `hotswap reload` every %g s under wrk (-t2 -c50, keep-alive) and 4 keep-alive "
        "clients pausing 2 ms; steady: wrk alone, %d s, no reload. %d CPUs, load average %.1f at the end. "
        "`BENCH_ONLY=rescue contrib/bench/run.sh`." % (DURATION, EVERY, STEADY, os.cpu_count(), os.getloadavg()[0]),
        "",
        "| server | rescue | steady req/s | req/s with reloads | failed (wrk) | failed (paced clients) | rescued "
        "(reload answers) | primary CPU during reloads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| %s | %s | %.0f | %.0f | %d | %d of %d | %d | %.1f%% |" % (
            r["server"], r["rescue"], r["steady_rps"], r["reload_rps"], r["wrk_failed"], r["paced_failed"],
            r["paced_requests"], r["rescued"], r["primary_cpu_pct"]))
    with open(os.path.join(HERE, "rescue.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
