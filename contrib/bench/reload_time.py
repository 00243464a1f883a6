#!/usr/bin/env python3
"""Reload time against pool size, with surge 1 and surge N.

    python3 contrib/bench/reload_time.py [--sizes 2,4,8] [--reloads 5]
        [--startup-ms 300] [--out contrib/bench/reload-time.md]

For each pool size N, starts `target/release/hotswap run -w N` with the
Node.js example worker (`contrib/workers/node/worker.js`,
`EXAMPLE_STARTUP_MS`), then runs `hotswap reload --surge 1` and
`hotswap reload --surge N` several times each, without load. Per reload it
records the primary's own duration (`last_reload.duration_ms` of
`hotswap status`: from the request to the last old worker's exit) and,
from `hotswap events`, how long each new worker took from fork to ready.
Prints a table of medians (and writes it, with the command and the
machine's facts, to `--out` if given). Python standard library only;
targets 127.0.0.1 only and stops everything it started.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def ctl(hotswap, sock, *args, check=True):
    out = subprocess.run([hotswap, *args, "--control", sock], capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        sys.exit(f"hotswap {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def status(hotswap, sock):
    out = ctl(hotswap, sock, "status", "--json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


class Events:
    """A `hotswap events --json` client: fork and listening times by worker."""

    def __init__(self, hotswap, sock):
        self.proc = subprocess.Popen([hotswap, "events", "--json", "--control", sock],
                                     stdout=subprocess.PIPE, text=True)
        self.fork, self.ready = {}, {}
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        for line in self.proc.stdout:
            e = json.loads(line)
            if e["event"] == "fork":
                self.fork[e["worker"]] = e["time"]
            elif e["event"] == "listening":
                self.ready[e["worker"]] = e["time"]

    def startup_ms(self, workers):
        """Fork-to-ready of these workers, in ms (those seen so far)."""
        return [(self.ready[w] - self.fork[w]) * 1000 for w in workers if w in self.ready and w in self.fork]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def measure(hotswap, n, surges, reloads, startup_ms, work):
    """Runs a primary of n workers; returns {surge: [(reload ms, [start-up ms])]}."""
    sock = os.path.join(work, f"control-{n}.sock")
    log = open(os.path.join(work, f"primary-{n}.log"), "w")
    env = dict(os.environ, EXAMPLE_STARTUP_MS=str(startup_ms))
    command = ["node", os.path.join(ROOT, "contrib/workers/node/worker.js")]
    p = subprocess.Popen([hotswap, "run", "-l", "127.0.0.1:0", "-w", str(n), "--control", sock, "--", *command],
                         stdout=log, stderr=log, env=env, start_new_session=True)
    events = None
    try:
        deadline = time.time() + 30
        while True:
            s = status(hotswap, sock)
            if s and sum(w["state"] == "ready" for w in s["workers"]) == n and len(s["workers"]) == n:
                break
            if p.poll() is not None or time.time() > deadline:
                sys.exit(f"hotswap with {n} workers did not come up; see {log.name}")
            time.sleep(0.05)
        events = Events(hotswap, sock)
        time.sleep(0.2)  # the subscription is taken before the first reload
        results = {}
        for surge in surges:
            samples = []
            for _ in range(reloads):
                before = {w["id"] for w in status(hotswap, sock)["workers"]}
                ctl(hotswap, sock, "reload", "--surge", str(surge))
                s = status(hotswap, sock)
                new = [w["id"] for w in s["workers"] if w["id"] not in before]
                time.sleep(0.1)  # the last events reach the client
                samples.append((s["last_reload"]["duration_ms"], events.startup_ms(new)))
                time.sleep(0.2)
            results[surge] = samples
        ctl(hotswap, sock, "stop", check=False)
        p.wait(timeout=30)
        return results
    finally:
        if events:
            events.stop()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2,4,8", help="pool sizes (default 2,4,8)")
    ap.add_argument("--reloads", type=int, default=5, help="reloads per pool size and surge (default 5)")
    ap.add_argument("--startup-ms", type=int, default=300, help="EXAMPLE_STARTUP_MS of the worker (default 300)")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/hotswap"))
    ap.add_argument("--out", help="also write the results as Markdown to this file")
    a = ap.parse_args()
    if not os.access(a.binary, os.X_OK):
        sys.exit(f"{a.binary} missing: run `cargo build --release` first")
    if not shutil.which("node"):
        sys.exit("node is needed for the example worker")
    sizes = [int(x) for x in a.sizes.split(",")]
    version = subprocess.run([a.binary, "--version"], capture_output=True, text=True).stdout.strip()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    load_before = loadavg()
    work = tempfile.mkdtemp(prefix="hotswap-reload-time-")
    rows = []
    try:
        for n in sizes:
            results = measure(a.binary, n, [1, n] if n > 1 else [1], a.reloads, a.startup_ms, work)
            for surge, samples in results.items():
                reload_ms = [r for r, _ in samples]
                starts = [ms for _, ups in samples for ms in ups]
                slowest = [max(ups) for _, ups in samples if ups]
                row = {
                    "workers": n,
                    "surge": "1" if surge == 1 else f"{surge} (N)",
                    "median": statistics.median(reload_ms),
                    "min": min(reload_ms),
                    "max": max(reload_ms),
                    "startup": statistics.median(starts) if starts else float("nan"),
                    # What the reload adds to its slowest new worker's start-up.
                    "beyond": statistics.median(r - s for r, s in zip(reload_ms, slowest)) if slowest else float("nan"),
                }
                rows.append(row)
                print(f"{n:>2} workers, surge {row['surge']:<6}: reload median {row['median']:7.0f} ms "
                      f"(min {row['min']:.0f}, max {row['max']:.0f}; {a.reloads} reloads); "
                      f"one worker's start-up {row['startup']:.0f} ms", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = loadavg()
    table = ["| workers | surge | reload, median | min | max | one worker's start-up, median | reload minus its slowest start-up, median |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['workers']} | {r['surge']} | {r['median']:.0f} ms | {r['min']:.0f} ms | {r['max']:.0f} ms "
                     f"| {r['startup']:.0f} ms | {r['beyond']:.0f} ms |")
    print("\n".join(table))
    if a.out:
        cmd = "python3 contrib/bench/reload_time.py " + " ".join(
            x for x in [f"--sizes {a.sizes}", f"--reloads {a.reloads}", f"--startup-ms {a.startup_ms}",
                        f"--out {os.path.relpath(a.out, ROOT)}"])
        text = f"""# Reload time against pool size

Generated by `{cmd}` (see CONTRIBUTING.md).

{version}, Node.js {node}, the example worker `contrib/workers/node/worker.js` with
`EXAMPLE_STARTUP_MS={a.startup_ms}`, no load; {os.cpu_count()} CPUs ({platform.machine()}), load average
{load_before} before the run and {load_after} after it (other work shared the machine).

"reload" is the primary's own `last_reload.duration_ms`: from the request to
the exit of the last old worker. "start-up" is a new worker's time from fork
to ready, from `hotswap events`.

{chr(10).join(table)}
"""
        with open(a.out, "w") as f:
            f.write(text)
        print(f"written to {a.out}")


if __name__ == "__main__":
    main()
