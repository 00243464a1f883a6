#!/usr/bin/env python3
"""Long run: N reloads in a row (default 1000) under light load, then the
primary's open fds, threads and RSS compared with after the first ten, and
zombies counted.

    python3 contrib/bench/soak.py [--reloads 1000] [--upgrades 50]

With --upgrades it also self-upgrades the primary that many times and checks
its fd count stays flat. Targets 127.0.0.1 only; stops what it started.
"""
import argparse
import os
import re
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=1000)
    ap.add_argument("--upgrades", type=int, default=0)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "hotswap", "--example", "http-worker"],
                   cwd=ROOT, check=True)
    hotswap = os.path.join(ROOT, "target/release/hotswap")
    work = tempfile.mkdtemp(prefix="hotswap-soak-")
    ctl = os.path.join(work, "control.sock")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(os.path.join(work, "log"), "w")
    p = subprocess.Popen([hotswap, "run", "-l", f"127.0.0.1:{port}", "-w", "2", "--control", ctl, "--",
                          os.path.join(ROOT, "target/release/examples/http-worker")],
                         stdout=log, stderr=log, start_new_session=True)
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

    def ctl_run(*cmd):
        r = subprocess.run([hotswap, *cmd, "--control", ctl], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")

    try:
        time.sleep(1)
        t = threading.Thread(target=load)
        t.start()
        t0 = time.time()
        for i in range(args.reloads):
            ctl_run("reload")
            if i == 9:
                time.sleep(0.3)
                first = footprint(p.pid)
        time.sleep(0.5)
        last = footprint(p.pid)
        took = time.time() - t0
        print(f"{args.reloads} reloads in {took:.1f} s ({took / args.reloads * 1000:.1f} ms each, 2 workers)")
        print(f"after 10 reloads:   fds {first[0]}, threads {first[1]}, RSS {first[2]} KiB")
        print(f"after {args.reloads} reloads: fds {last[0]}, threads {last[1]}, RSS {last[2]} KiB")
        print(f"zombie children: {zombies(p.pid)}")
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
    finally:
        stop.set()
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)


if __name__ == "__main__":
    main()
