#!/usr/bin/env python3
"""Steady-state keep-alive throughput with --rescue on and off, interleaved
(on, off, on, off...) so that a shared machine's drift hits both alike.

Rescue acts only while a worker retires; this checks that it costs nothing
otherwise: 2 workers, wrk -t2 -c50 for 5 s per run, no reload; req/s and
the primary's CPU (utime+stime) during the run, with the load average.

    python3 contrib/bench/rescue_steady.py [HOTSWAP_BINARY]   # ROUNDS=3

The binary defaults to target/release/hotswap (no request passes through
the primary, so a debug build measures the same). Only 127.0.0.1.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/hotswap")
FIX = os.path.join(ROOT, "tests/fixtures")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SERVERS = [
    ("stock asyncio", ["python3", os.path.join(FIX, "stock_asyncio.py")], []),
    ("nginx", ["python3", os.path.join(FIX, "stock_nginx.py")], ["--stop-signal", "SIGQUIT"]),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(cmd, extra, rescue, tmp):
    port = free_port()
    ctl = os.path.join(tmp, "ctl")
    p = subprocess.Popen(
        [BIN, "run", "--control", ctl, "-w", "2", "--listen", f"127.0.0.1:{port}", "--rescue", rescue]
        + extra + ["--"] + cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(1)
        load = os.getloadavg()[0]
        c0 = cpu_seconds(p.pid)
        out = subprocess.run(["wrk", "-t2", "-c50", "-d5s", f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True).stdout
        cpu = (cpu_seconds(p.pid) - c0) / 5 * 100
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        return rps, cpu, load
    finally:
        p.terminate()
        p.wait()


def main():
    results = {}
    with tempfile.TemporaryDirectory(prefix="hotswap-rescue-steady-") as tmp:
        for name, cmd, extra in SERVERS:
            for r in range(ROUNDS):
                for rescue in ("on", "off"):
                    rps, cpu, load = one(cmd, extra, rescue, tmp)
                    results.setdefault((name, rescue), []).append(rps)
                    print(f"{name}, rescue {rescue}, round {r}: {rps:.0f} req/s, primary CPU {cpu:.1f}% "
                          f"(load {load:.1f})", flush=True)
    for (name, rescue), runs in results.items():
        runs.sort()
        print(f"{name}, rescue {rescue}: median {runs[len(runs) // 2]:.0f} req/s of {[round(x) for x in runs]}")


if __name__ == "__main__":
    main()
