#!/usr/bin/env python3
"""Long run: N reloads in a row (default 1000) under light load, then the
primary's open fds, threads and RSS compared with at start and after the
first ten, and zombies counted.

    python3 contrib/bench/soak.py [--reloads 1000] [--upgrades 50]
    python3 contrib/bench/soak.py --nofile 1024 --vanish-every 50

With --upgrades it also self-upgrades the primary that many times and checks
its fd count stays flat. With --nofile N the primary runs under `ulimit -n
N` (soft and hard). With --vanish-every K the worker's command (a copy of
the example worker) is deleted every K reloads, as a deploy that removes the
release directory first: a reload then must fail with the old workers
serving, a worker told to stop by itself (SIGTERM: it drains and exits) must
leave its slot retried with the crash backoff, not in a busy loop, and once
the command is back the slot must fill by itself. Targets 127.0.0.1 only;
stops what it started.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def footprint(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = open(f"/proc/{pid}/status").read()
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    return fds, threads, rss


def zombies(ppid):
    n = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        if rest[0] == "Z" and rest[1] == str(ppid):
            n += 1
    return n


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^(hotswap_[a-z_]+(?:\{[^}]*\})?) (\S+)$", data.decode(), re.M)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=1000)
    ap.add_argument("--upgrades", type=int, default=0)
    ap.add_argument("--nofile", type=int, default=0, help="run the primary under `ulimit -n N`")
    ap.add_argument("--vanish-every", type=int, default=0,
                    help="delete the worker's command every K reloads, then bring it back")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hotswap", "--example", "http-worker"],
                   cwd=ROOT, check=True)
    hotswap = os.path.join(ROOT, "target/release/hotswap")
    work = tempfile.mkdtemp(prefix="hotswap-soak-")
    ctl = os.path.join(work, "control.sock")
    port, metrics = free_port(), free_port()
    example = os.path.join(ROOT, "target/release/examples/http-worker")
    # The command lives in a release directory of its own, which a deploy
    # may delete (--vanish-every).
    release = os.path.join(work, "release")
    command = os.path.join(release, "http-worker")

    def restore():
        os.makedirs(release, exist_ok=True)
        shutil.copy2(example, command + ".new")
        os.rename(command + ".new", command)

    restore()

    def limit():
        if args.nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))

    log = open(os.path.join(work, "log"), "w")
    p = subprocess.Popen([hotswap, "run", "-l", f"127.0.0.1:{port}", "-w", "2", "--control", ctl,
                          "--metrics", f"127.0.0.1:{metrics}", "--", command],
                         stdout=log, stderr=log, start_new_session=True, preexec_fn=limit)
    stop = threading.Event()
    failures = [0, 0]

    def load():
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    ok = b"200 OK" in c.recv(4096)
            except OSError:
                ok = False
            failures[0 if ok else 1] += 1
            time.sleep(0.002)

    def ctl_run(*cmd, ok=True):
        r = subprocess.run([hotswap, *cmd, "--control", ctl], capture_output=True, text=True)
        if ok and r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")
        return r

    def ready_pids():
        r = ctl_run("status", "--json", ok=False)
        if r.returncode != 0:
            return []  # not up yet
        return [w["pid"] for w in json.loads(r.stdout)["workers"] if w["state"] == "ready"]

    def wait_ready(n, within):
        deadline = time.time() + within
        while len(ready_pids()) < n:
            if time.time() > deadline:
                sys.exit(f"fewer than {n} ready workers after {within} s; log in {work}/log")
            time.sleep(0.05)

    vanished = {"cycles": 0, "reloads_refused": 0, "back_in": []}

    def vanish():
        """The command is deleted: a reload fails, a worker that stops by
        itself is retried with backoff; the command comes back."""
        shutil.rmtree(release)
        r = ctl_run("reload", ok=False)
        if r.returncode == 0:
            sys.exit("a reload succeeded with the worker's command deleted")
        vanished["reloads_refused"] += 1
        os.kill(ready_pids()[0], signal.SIGTERM)
        time.sleep(1.5)
        restore()
        t = time.time()
        wait_ready(2, 60)
        vanished["back_in"].append(time.time() - t)
        vanished["cycles"] += 1

    try:
        wait_ready(2, 30)
        start = footprint(p.pid)
        t = threading.Thread(target=load)
        t.start()
        t0 = time.time()
        for i in range(args.reloads):
            ctl_run("reload")
            if i == 9:
                time.sleep(0.3)
                first = footprint(p.pid)
            if args.vanish_every and (i + 1) % args.vanish_every == 0:
                vanish()
        time.sleep(0.5)
        last = footprint(p.pid)
        took = time.time() - t0
        limit_text = f", ulimit -n {args.nofile}" if args.nofile else ""
        print(f"{args.reloads} reloads in {took:.1f} s ({took / args.reloads * 1000:.1f} ms each, 2 workers{limit_text})")
        print(f"at start:           fds {start[0]}, threads {start[1]}, RSS {start[2]} KiB")
        print(f"after 10 reloads:   fds {first[0]}, threads {first[1]}, RSS {first[2]} KiB")
        print(f"after {args.reloads} reloads: fds {last[0]}, threads {last[1]}, RSS {last[2]} KiB")
        print(f"zombie children: {zombies(p.pid)}")
        if args.vanish_every:
            m = scrape(metrics)
            back = sorted(vanished["back_in"])
            failed_starts = int(m.get("hotswap_worker_start_failures_total", 0))
            crashes = int(m.get('hotswap_worker_restarts_total{reason="crash"}', 0))
            print(f"command deleted {vanished['cycles']} times: {vanished['reloads_refused']} reloads refused, "
                  f"{failed_starts} failed starts in all ({crashes} crash restarts), "
                  f"slot back {back[0]:.2f} to {back[-1]:.2f} s after the command was")
        if args.upgrades:
            ctl_run("upgrade")
            before = footprint(p.pid)[0]
            t0 = time.time()
            for _ in range(args.upgrades - 1):
                ctl_run("upgrade")
            took = time.time() - t0
            print(f"{args.upgrades} upgrades: fds {before} -> {footprint(p.pid)[0]} "
                  f"({took / max(1, args.upgrades - 1) * 1000:.1f} ms each)")
        stop.set()
        t.join()
        print(f"requests during the run: {failures[0]} ok, {failures[1]} failed")
        if failures[1]:
            sys.exit(1)
    finally:
        stop.set()
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)


if __name__ == "__main__":
    main()
