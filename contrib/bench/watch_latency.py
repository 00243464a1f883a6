#!/usr/bin/env python3
"""Development-mode latency: from a file write to the new generation serving.

    python3 contrib/bench/watch_latency.py [--runs 20] [--debounce 200ms]

Starts `hotswap run --watch DIR` with 2 workers of the example worker
(Rust, then Node.js), writes a file in DIR, and polls the HTTP port until an
answer comes from the next generation. Prints the median, p90, min and max
over the runs. Targets 127.0.0.1 only and stops everything it started.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generation(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        m = re.search(rb"generation=(\d+)", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def measure(name, command, runs, debounce, hotswap):
    work = tempfile.mkdtemp(prefix="hotswap-watch-bench-")
    src = os.path.join(work, "src")
    os.makedirs(src)
    port = free_port()
    ctl = os.path.join(work, "control.sock")
    log = open(os.path.join(work, "log"), "w")
    p = subprocess.Popen(
        [hotswap, "run", "-l", f"127.0.0.1:{port}", "-w", "2", "--control", ctl,
         "--watch", src, "--watch-debounce", debounce, "--"] + command,
        stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 20
        while generation(port) != 1:
            if time.time() > deadline:
                sys.exit(f"{name}: hotswap did not come up; see {log.name}")
            time.sleep(0.05)
        samples = []
        for i in range(runs):
            want = i + 2
            t0 = time.perf_counter()
            with open(os.path.join(src, "app.txt"), "w") as f:
                f.write(str(i))
            while generation(port) != want:
                if time.perf_counter() - t0 > 20:
                    sys.exit(f"{name}: no reload to generation {want}; see {log.name}")
                time.sleep(0.002)
            samples.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.3)
        samples.sort()
        p90 = samples[int(len(samples) * 0.9) - 1] if len(samples) >= 10 else samples[-1]
        print(f"{name:<28} debounce {debounce:>6}: median {statistics.median(samples):7.1f} ms  "
              f"p90 {p90:7.1f} ms  min {samples[0]:7.1f} ms  max {samples[-1]:7.1f} ms  ({runs} runs)")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--debounce", default="200ms")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hotswap", "--example", "http-worker"],
                   cwd=ROOT, check=True)
    hotswap = os.path.join(ROOT, "target/release/hotswap")
    rust = [os.path.join(ROOT, "target/release/examples/http-worker")]
    node = ["node", os.path.join(ROOT, "contrib/workers/node/worker.js")]
    for debounce in sorted({args.debounce, "50ms"}, key=lambda d: -int(d.rstrip("ms"))):
        measure("rust example worker", rust, args.runs, debounce, hotswap)
        measure("node example worker", node, args.runs, debounce, hotswap)


if __name__ == "__main__":
    main()
