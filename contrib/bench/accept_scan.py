#!/usr/bin/env python3
"""What looking at starting workers' accepts costs the primary, on workers
with many file descriptors (issue 20, item 7).

    contrib/bench/accept_scan.py [--workers 8] [--fds 10000] [--seconds 10]

Starts `target/release/hotswap` (or $HOTSWAP) with W workers under
`--ready accepting` that each open N fds (sockets) and hold fd 3 without
ever accepting: the primary looks at them for as long as they start,
which here is the whole run. Prints the primary's CPU use over the run
(utime+stime from /proc/PID/stat) and the latency of `hotswap status`
(which waits for nothing the looks do, now that they run on a thread of
their own).
"""
import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r"""
import os, resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
keep = [socket.socket(fileno=3)]
a, b = socket.socketpair()
keep += [a, b]
for _ in range(int(sys.argv[1]) // 2):
    keep += list(socket.socketpair())
time.sleep(3600)
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--fds", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    binary = os.environ.get("HOTSWAP", os.path.join(ROOT, "target/release/hotswap"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.fds + 64 > hard:
        sys.exit(f"--fds {args.fds} needs a hard fd limit above {args.fds + 64} (it is {hard})")
    tmp = tempfile.mkdtemp(prefix="hotswap-accept-scan-")
    control = os.path.join(tmp, "c.sock")
    primary = subprocess.Popen(
        [binary, "run", "-l", "127.0.0.1:0", "-w", str(args.workers), "--control", control,
         "--ready", "accepting", "--ready-timeout", "1h", "--",
         sys.executable, "-c", WORKER, str(args.fds)],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "w"),
    )
    try:
        # Every worker has opened its fds.
        deadline = time.time() + 60
        while time.time() < deadline:
            if os.path.exists(control):
                break
            time.sleep(0.1)
        time.sleep(max(3.0, args.workers * args.fds / 40000))
        c0, t0 = cpu_seconds(primary.pid), time.time()
        latencies = []
        while time.time() - t0 < args.seconds:
            s = time.time()
            subprocess.run([binary, "status", "--control", control], stdout=subprocess.DEVNULL, check=True)
            latencies.append(time.time() - s)
            time.sleep(0.5)
        c1, t1 = cpu_seconds(primary.pid), time.time()
        print(f"{args.workers} starting workers with {args.fds} fds each, {t1 - t0:.1f} s:")
        print(f"  primary CPU: {100 * (c1 - c0) / (t1 - t0):.1f}% of one core")
        print(f"  hotswap status: median {1000 * statistics.median(latencies):.1f} ms, "
              f"max {1000 * max(latencies):.1f} ms ({len(latencies)} calls, each with its own process)")
    finally:
        subprocess.run([binary, "stop", "--control", control], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        primary.wait(30)


if __name__ == "__main__":
    main()
