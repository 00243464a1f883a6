#!/usr/bin/env python3
"""Keep-alive p99 latency, steady and during reloads, with and without
`--warmup-nice`; and the reload time of each.

    python3 contrib/bench/warmup.py [--workers 2] [--startup-cpu-ms 500]
        [--duration 10] [--reload-every 2] [--rounds 2] [--modes off,10] [--out contrib/bench/warmup.md]

Runs `target/release/hotswap run -w N --min-ready 0 --warmup-nice MODE` with
the Node.js example worker, whose start-up burns `--startup-cpu-ms` of CPU
(`EXAMPLE_STARTUP_CPU_MS`: what loading modules and filling caches cost a
real app), for each MODE of `--modes` (default `off,10`), in alternating rounds. Each round: wrk
(`-t2 -c50`, keep-alive) for `--duration` s without reloads, then the same
with `hotswap reload` every `--reload-every` s. `--min-ready 0` keeps the
stability window out of the reload time (it would add the same second to
both). Prints (and writes to `--out`) per mode: req/s, p50 and p99 steady
and during reloads, their ratio, the median reload time, failed requests.
Needs wrk; targets 127.0.0.1 only and stops everything it started.
"""
import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(port, duration):
    argv = ["wrk", "-t2", "-c50", f"-d{duration}s", "--timeout", "2s",
            "-s", os.path.join(HERE, "lua", "summary.lua"), f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30).stdout
    m = re.search(r"^BENCHJSON (.*)$", out, re.M)
    if not m:
        sys.exit(f"wrk gave no result: {out[-800:]}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["failed"] = sum(r["errors"].values())
    return r


class Hotswap:
    def __init__(self, hotswap, workers, mode, startup_cpu_ms, tmp):
        self.hotswap, self.port = hotswap, free_port()
        self.sock = os.path.join(tmp, f"hs-{mode}.sock")
        env = dict(os.environ, EXAMPLE_STARTUP_CPU_MS=str(startup_cpu_ms), HOTSWAP_LOG="info")
        self.log = open(os.path.join(tmp, f"hotswap-{mode}.log"), "w")
        self.proc = subprocess.Popen(
            [hotswap, "run", "-l", f"127.0.0.1:{self.port}", "-w", str(workers), "--control", self.sock,
             "--min-ready", "0", "--warmup-nice", mode, "--",
             "node", os.path.join(ROOT, "contrib/workers/node/worker.js")],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            st = self.status()
            if st and sum(1 for w in st["workers"] if w["state"] == "ready") >= workers:
                return
            time.sleep(0.2)
        self.stop()
        sys.exit(f"hotswap --warmup-nice {mode} did not get ready")

    def status(self):
        out = subprocess.run([self.hotswap, "status", "--json", "--control", self.sock],
                             capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def reload(self):
        out = subprocess.run([self.hotswap, "reload", "--control", self.sock],
                             capture_output=True, text=True, timeout=120)
        st = self.status()
        return dict(ok=out.returncode == 0, ms=(st or {}).get("last_reload", {}).get("duration_ms", 0))

    def stop(self):
        subprocess.run([self.hotswap, "stop", "--control", self.sock], capture_output=True, timeout=60)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def under_reloads(hs, duration, every):
    reloads = []

    def loop():
        t0 = time.time()
        k = 0
        while True:
            at = t0 + 1.0 + k * every
            if at > t0 + duration - 2.0:
                return
            time.sleep(max(0.0, at - time.time()))
            reloads.append(hs.reload())
            k += 1

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    r = wrk(hs.port, duration)
    th.join(120)
    r["reloads"] = reloads
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--startup-cpu-ms", type=int, default=500)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--reload-every", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="off,10", help="--warmup-nice values, comma-separated")
    ap.add_argument("--out")
    a = ap.parse_args()
    hotswap = os.path.join(ROOT, "target/release/hotswap")
    if not os.path.exists(hotswap):
        sys.exit("build it first: cargo build --release")
    modes = a.modes.split(",")
    runs = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="hotswap-warmup-") as tmp:
        for rnd in range(a.rounds):
            for mode in (modes if rnd % 2 == 0 else modes[::-1]):
                hs = Hotswap(hotswap, a.workers, mode, a.startup_cpu_ms, tmp)
                try:
                    steady = wrk(hs.port, a.duration)
                    reloading = under_reloads(hs, a.duration, a.reload_every)
                finally:
                    hs.stop()
                runs[mode].append((steady, reloading))
                ms = [x["ms"] for x in reloading["reloads"]]
                print(f"round {rnd + 1} --warmup-nice {mode:3}: steady p99 {steady['latency_us']['p99'] / 1000:.2f} ms "
                      f"{steady['rps']:.0f} req/s; reloading p99 {reloading['latency_us']['p99'] / 1000:.2f} ms "
                      f"{reloading['rps']:.0f} req/s, {len(ms)} reloads median {statistics.median(ms) if ms else 0:.0f} ms, "
                      f"failed {steady['failed'] + reloading['failed']}", flush=True)
    lines = [
        "| `--warmup-nice` | steady req/s | steady p50 / p99 | reloading req/s | reloading p50 / p99 | p99 reloading / steady | reload time (median) | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        for steady, rel in runs[mode]:
            ms = [x["ms"] for x in rel["reloads"]]
            ratio = rel["latency_us"]["p99"] / max(1, steady["latency_us"]["p99"])
            lines.append(
                f"| {mode} | {steady['rps']:,.0f} | {steady['latency_us']['p50'] / 1000:.2f} / "
                f"{steady['latency_us']['p99'] / 1000:.2f} ms | {rel['rps']:,.0f} | "
                f"{rel['latency_us']['p50'] / 1000:.2f} / {rel['latency_us']['p99'] / 1000:.2f} ms | {ratio:.2f}x | "
                f"{statistics.median(ms) if ms else 0:.0f} ms ({len(ms)}) | {steady['failed'] + rel['failed']} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        load = os.getloadavg()
        with open(a.out, "w") as f:
            f.write("# Warm-up priority: keep-alive latency during reloads\n\n")
            f.write(f"`python3 contrib/bench/warmup.py --workers {a.workers} --startup-cpu-ms {a.startup_cpu_ms} "
                    f"--duration {a.duration} --reload-every {a.reload_every} --rounds {a.rounds} --modes {a.modes}`\n\n")
            f.write(f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, "
                    f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
                    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n")
            f.write(table + "\n")


if __name__ == "__main__":
    main()
