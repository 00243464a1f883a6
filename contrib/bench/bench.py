#!/usr/bin/env python3
"""Side-by-side benchmark driver for hotswap (run through ./run.sh).

Runs the same tiny Node.js app (contrib/workers/node/worker.js, 2 workers,
EXAMPLE_STARTUP_MS=300) under each contender, drives it with wrk on
127.0.0.1 only, measures the supervisor process itself from /proc, times
reloads, and writes results.json; report.py turns that into results.md and
latency.svg. Python standard library only.

Contenders: baseline (launcher.py, no supervisor), hotswap (steady and with
`hotswap reload` every 2 s), Node cluster (SCHED_RR and SCHED_NONE), PM2
cluster mode (steady and with `pm2 reload` every 2 s), Server::Starter (steady
and with SIGHUP every 2 s; skipped when start_server is missing).

Every process it starts carries BENCH_RUN_ID in its environment, so run.sh can
find and end exactly those (PM2's daemon detaches from us).

Tunables (environment): BENCH_DURATION (10 s per wrk run), BENCH_FAIR_DURATION
(5), BENCH_TS_DURATION (8), BENCH_RELOAD_EVERY (2), BENCH_THREADS (2),
BENCH_CONNECTIONS (50), BENCH_WORKERS (2), BENCH_STARTUP_MS (300),
BENCH_ONLY (comma-separated contender keys, for debugging).

A second part runs one unchanged Node.js cluster app (apps/cluster-app.js, the
app of the clustering guides: no fd 3, no process.send, no signal handler)
under hotswap (cluster emulation), Node's cluster module (RR and NONE) and
PM2 (`pm2 start app.js -i 2`, PM2's defaults), steady and, for hotswap and
PM2, with a reload every 2 s. Its contender keys start with `u-`.

A third part, only when asked for (BENCH_BALANCE=1, or BENCH_ONLY naming its
keys or `balance`), compares hotswap's `--balance` modes: `shared` and
`slots` (and `sticky`) with 2 and 8 workers of worker.js, keys
`b-MODE-N`: throughput (wrk, BENCH_BALANCE_DURATION s), requests per worker
(wrk with fairness.lua) and, because wrk connects from 127.0.0.1 only, the
spread of clients from 127.0.0.2 .. 127.0.0.30 (spread_client.py,
BENCH_SPREAD_DURATION s). A run of this part alone keeps the rest of an
existing results.json and replaces only its balance rows.
"""
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
HOTSWAP = os.environ.get("BENCH_HOTSWAP_BIN") or os.path.join(ROOT, "target", "release", "hotswap")
HOTSWAP_COMMIT = os.environ.get("BENCH_HOTSWAP_COMMIT")  # set when a committed revision was built apart
WORKER_JS = os.path.join(ROOT, "contrib", "workers", "node", "worker.js")
ADAPTERS = os.path.join(HERE, "adapters")
PM2 = os.path.join(HERE, "node_modules", ".bin", "pm2")
OUT = os.path.join(HERE, "out")
HOST = "127.0.0.1"  # the only address this benchmark ever targets

DURATION = float(os.environ.get("BENCH_DURATION", 10))
FAIR_DURATION = float(os.environ.get("BENCH_FAIR_DURATION", 5))
TS_DURATION = float(os.environ.get("BENCH_TS_DURATION", 8))
RELOAD_EVERY = float(os.environ.get("BENCH_RELOAD_EVERY", 2))
THREADS = int(os.environ.get("BENCH_THREADS", 2))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", 50))
WORKERS = int(os.environ.get("BENCH_WORKERS", 2))
STARTUP_MS = int(os.environ.get("BENCH_STARTUP_MS", 300))
TS_CONCURRENCY = int(os.environ.get("BENCH_TS_CONCURRENCY", 8))
PAIRS = int(os.environ.get("BENCH_PAIRS", 3))  # interleaved baseline/hotswap rounds per mode
PAIR_DURATION = float(os.environ.get("BENCH_PAIR_DURATION", 5))
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
BALANCE_MODES = ("shared", "slots", "sticky")
BALANCE_WORKERS = (2, 8)
BALANCE_KEYS = [f"b-{m}-{n}" for n in BALANCE_WORKERS for m in BALANCE_MODES]
if "balance" in ONLY:
    ONLY = [k for k in ONLY if k != "balance"] + BALANCE_KEYS
BALANCE = os.environ.get("BENCH_BALANCE") == "1" or any(k in BALANCE_KEYS for k in ONLY)
BALANCE_DURATION = float(os.environ.get("BENCH_BALANCE_DURATION", 5))
SPREAD_DURATION = float(os.environ.get("BENCH_SPREAD_DURATION", 5))
RUN_ID = os.environ.get("BENCH_RUN_ID") or uuid.uuid4().hex
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODES = [("keepalive", []), ("close", ["-H", "Connection: close"])]

TMP = os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="hotswap-bench-")
OWN_TMP = "BENCH_TMP" not in os.environ
os.makedirs(OUT, exist_ok=True)
PM2_HOME = os.path.join(TMP, "pm2")

BASE_ENV = dict(os.environ)
BASE_ENV.update(
    BENCH_RUN_ID=RUN_ID,
    EXAMPLE_STARTUP_MS=str(STARTUP_MS),
    PM2_HOME=PM2_HOME,
    PM2_DISABLE_VERSION_CHECK="true",  # PM2 must not call home
    HOTSWAP_LOG="info",
)
for k in ("HOTSWAP_CONTROL", "NODE_CHANNEL_FD", "LISTEN_FDS", "LISTEN_PID", "NODE_OPTIONS"):
    BASE_ENV.pop(k, None)


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- /proc

def cpu_ticks(pid):
    """utime + stime of one process, in clock ticks (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])  # fields 14 and 15
    except (OSError, IndexError, ValueError):
        return None


def mem_kb(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out


def children_of(pid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if int(rest[1]) == pid:
                kids.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return kids


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def machine_busy_ticks():
    """user+nice+system of all CPUs (/proc/stat), and steal, in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], (v[7] if len(v) > 7 else 0)


def our_ticks():
    """CPU of every process of this run (BENCH_RUN_ID in its environment, or
    this driver), children already reaped included (cutime+cstime): what the
    benchmark itself burns, wrk and the workers included."""
    marker = f"BENCH_RUN_ID={RUN_ID}".encode()
    me = os.getpid()
    total = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        try:
            if pid != me:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if marker not in f.read().split(b"\0"):
                        continue
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total[pid] = sum(int(x) for x in rest[11:15])
        except (OSError, IndexError, ValueError):
            continue
    return total


class Interference:
    """How much CPU processes that are not part of this benchmark used during
    an interval, as a share of the machine (1.0 = all cores busy)."""

    def __init__(self):
        self.t = time.time()
        self.busy, self.steal = machine_busy_ticks()
        self.ours = our_ticks()

    def share(self):
        wall = time.time() - self.t
        busy, steal = machine_busy_ticks()
        ours = our_ticks()
        # A process gone since the start counts as 0 at the end: its CPU moved
        # into its parent's cutime/cstime, which is ours too.
        ours_delta = sum(ours.values()) - sum(self.ours.values())
        cap = wall * (os.cpu_count() or 1) * CLK_TCK
        foreign = max(0.0, (busy - self.busy) - ours_delta)
        return dict(foreign=round(foreign / cap, 3) if cap else 0.0,
                    steal=round((steal - self.steal) / cap, 3) if cap else 0.0)


QUIET_SHARE = float(os.environ.get("BENCH_QUIET_SHARE", 0.10))
BUDGET = float(os.environ.get("BENCH_BUDGET", 650))  # seconds the driver aims to stay within
T_DRIVER = time.time()
WAITED = [0.0]


def wait_for_quiet(remaining_estimate):
    """Before a measured run: wait while other processes on the machine use
    more than QUIET_SHARE of it, as long as the time budget allows."""
    while True:
        it = Interference()
        time.sleep(1.0)
        sh = it.share()["foreign"]
        slack = BUDGET - (time.time() - T_DRIVER) - remaining_estimate
        if sh <= QUIET_SHARE or slack < 5:
            return sh
        log(f"  machine busy with other work ({sh:.0%} of it); waiting (slack {slack:.0f} s)")
        WAITED[0] += 1.0


# --------------------------------------------------------------------------- helpers

def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_ok(port):
    try:
        c = http.client.HTTPConnection(HOST, port, timeout=1)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        c.close()
        return r.status == 200
    except OSError:
        return False


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def run_cmd(argv, timeout=30, env=None):
    t0 = time.time()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, env=env or BASE_ENV, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, t0, time.time()


STARTED = []  # every Popen we made, for cleanup


def spawn(argv, logname, env=None):
    logf = open(os.path.join(OUT, logname), "w")
    p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env or BASE_ENV, start_new_session=True, close_fds=True)
    p._bench_log = logf
    STARTED.append(p)
    return p


def count_listening(paths, marker="listening on fd 3"):
    n = 0
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                n += f.read().count(marker)
        except OSError:
            pass
    return n


# --------------------------------------------------------------------------- contenders

class Contender:
    key = name = ""
    suite = "adapted"  # "adapted": worker.js through adapters; "unchanged": apps/cluster-app.js as it is
    listening_marker = "listening on fd 3"
    can_reload = False
    fairness = False
    timeseries = False
    spread = False  # also measured with spread_client.py from many source addresses
    supervisor_label = ""
    workers = WORKERS
    duration = None  # of the steady wrk runs; None: DURATION

    def __init__(self):
        self.port = free_port()
        self.proc = None

    def logpaths(self):
        return [os.path.join(OUT, f"{self.key}.log")]

    def wait_ready(self):
        wait_until(lambda: http_ok(self.port), 20, f"{self.name} to answer HTTP")
        wait_until(lambda: count_listening(self.logpaths(), self.listening_marker) >= self.workers, 20,
                   f"{self.name}: {self.workers} workers listening")
        time.sleep(0.3)

    def supervisor_pids(self):
        return {self.supervisor_label: self.proc.pid}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Baseline(Contender):
    key, name, supervisor_label = "baseline", "baseline (no supervisor)", "launcher.py (no supervision)"
    fairness = True

    def start(self):
        self.proc = spawn([sys.executable, os.path.join(ADAPTERS, "launcher.py"), "--listen",
                           f"{HOST}:{self.port}", "-n", str(WORKERS), "--", "node", WORKER_JS],
                          f"{self.key}.log")


class Hotswap(Contender):
    key, name, supervisor_label = "hotswap", "hotswap", "hotswap primary"
    can_reload = fairness = timeseries = True

    def __init__(self):
        super().__init__()
        self.control = os.path.join(TMP, "hotswap.sock")

    def start(self):
        self.proc = spawn([HOTSWAP, "run", "-l", f"{HOST}:{self.port}", "-w", str(WORKERS),
                           "--control", self.control, "--", "node", WORKER_JS], f"{self.key}.log")

    def supervisor_pids(self):
        pids = {"hotswap primary": self.proc.pid}
        for kid in children_of(self.proc.pid):
            if cmdline(kid).endswith("guardian"):
                pids["hotswap guardian"] = kid
        return pids

    def reload(self):
        rc, out, t0, t1 = run_cmd([HOTSWAP, "reload", "--control", self.control])
        per_worker = [int(m) for m in re.findall(r"replaced .* in (\d+) ms", out)]
        return dict(start=t0, end=t1, ms=(t1 - t0) * 1000, ok=rc == 0, per_worker_ms=per_worker,
                    output=out.strip())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                run_cmd([HOTSWAP, "stop", "--control", self.control], timeout=15)
                self.proc.wait(10)
            except (subprocess.TimeoutExpired, OSError):
                super().stop()


class Cluster(Contender):
    supervisor_label = "node cluster primary"
    fairness = True

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.key = f"cluster-{policy}"
        self.name = "Node cluster " + ("SCHED_RR" if policy == "rr" else "SCHED_NONE")

    def start(self):
        self.proc = spawn(["node", os.path.join(ADAPTERS, "cluster.js"), self.policy, str(self.port),
                           str(WORKERS)], f"{self.key}.log")


class Pm2(Contender):
    key, name, supervisor_label = "pm2", "PM2 cluster mode", "PM2 daemon (God)"
    can_reload = timeseries = True

    def env(self):
        e = dict(BASE_ENV)
        e.update(BENCH_PORT=str(self.port), BENCH_WORKERS=str(WORKERS))
        return e

    def logpaths(self):
        d = os.path.join(PM2_HOME, "logs")
        return [os.path.join(d, f) for f in os.listdir(d) if "-out" in f] if os.path.isdir(d) else []

    def start(self):
        os.makedirs(PM2_HOME, exist_ok=True)
        # An existing `touch` file keeps the PM2 CLI from its first-run version
        # check (an HTTPS request to a PM2 server): only 127.0.0.1 is contacted.
        with open(os.path.join(PM2_HOME, "touch"), "w") as f:
            f.write(str(int(time.time() * 1000)))
        rc, out, _, _ = run_cmd([PM2, "start", os.path.join(ADAPTERS, "ecosystem.config.js")],
                                timeout=60, env=self.env())
        with open(os.path.join(OUT, "pm2-start.log"), "w") as f:
            f.write(out)
        if rc != 0:
            raise RuntimeError(f"pm2 start failed ({rc}): {out[-500:]}")

    def god_pid(self):
        with open(os.path.join(PM2_HOME, "pm2.pid")) as f:
            return int(f.read().strip())

    def supervisor_pids(self):
        return {self.supervisor_label: self.god_pid()}

    def reload(self):
        rc, out, t0, t1 = run_cmd([PM2, "reload", "bench"], timeout=60, env=self.env())
        return dict(start=t0, end=t1, ms=(t1 - t0) * 1000, ok=rc == 0 and "✓" in out,
                    output=re.sub(r"\x1b\[[0-9;]*m", "", out).strip()[-400:])

    def stop(self):
        if os.path.exists(os.path.join(PM2_HOME, "pm2.pid")):
            try:
                run_cmd([PM2, "kill"], timeout=60, env=self.env())
            except subprocess.TimeoutExpired:
                pass
        # Keep PM2's own log and its workers' output with the run's logs.
        if os.path.isdir(PM2_HOME):
            dst = os.path.join(OUT, "pm2")
            os.makedirs(dst, exist_ok=True)
            for src in [os.path.join(PM2_HOME, "pm2.log")] + self.logpaths() + [
                    p.replace("-out", "-error") for p in self.logpaths()]:
                if os.path.isfile(src):
                    shutil.copy(src, dst)


class ServerStarter(Contender):
    key, name, supervisor_label = "server-starter", "Server::Starter", "start_server"
    can_reload = True

    def __init__(self):
        super().__init__()
        self.status = os.path.join(TMP, "start_server.status")

    def start(self):
        self.proc = spawn(["start_server", f"--port={HOST}:{self.port}", "--interval=1",
                           f"--status-file={self.status}", "--",
                           sys.executable, os.path.join(ADAPTERS, "launcher.py"), "--server-starter",
                           "-n", str(WORKERS), "--", "node", WORKER_JS], f"{self.key}.log")

    def generations(self):
        try:
            with open(self.status) as f:
                return [int(line.split(":")[0]) for line in f if ":" in line]
        except OSError:
            return []

    def reload(self):
        """SIGHUP is asynchronous: time from the signal until the status file
        lists only the new generation (start_server started the new worker,
        waited --interval=1 s, sent TERM to the old one and reaped it)."""
        before = max(self.generations() or [0])
        t0 = time.time()
        self.proc.send_signal(signal.SIGHUP)
        deadline = t0 + 15
        ok = False
        while time.time() < deadline:
            gens = self.generations()
            if gens and min(gens) > before:
                ok = True
                break
            time.sleep(0.005)
        t1 = time.time()
        return dict(start=t0, end=t1, ms=(t1 - t0) * 1000, ok=ok)


# ------------------------------------------------------- the unchanged cluster app
# The same file, apps/cluster-app.js, with no line changed and no adapter,
# under each supervisor that can run a Node cluster app as it is.

CLUSTER_APP = os.path.join(HERE, "apps", "cluster-app.js")
UNCHANGED_MARKER = "listening on "


class UnchangedHotswap(Hotswap):
    key, name = "u-hotswap", "hotswap"
    suite, listening_marker = "unchanged", UNCHANGED_MARKER
    fairness = timeseries = False

    def start(self):
        env = dict(BASE_ENV, PORT=str(self.port))
        self.proc = spawn([HOTSWAP, "run", "-l", f"{HOST}:{self.port}", "-w", str(WORKERS),
                           "--control", self.control, "--", "node", CLUSTER_APP], f"{self.key}.log", env)


class UnchangedCluster(Contender):
    suite, listening_marker = "unchanged", UNCHANGED_MARKER
    supervisor_label = "node cluster primary"

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.key = f"u-cluster-{policy}"
        self.name = "Node cluster " + ("SCHED_RR" if policy == "rr" else "SCHED_NONE")

    def start(self):
        env = dict(BASE_ENV, PORT=str(self.port), WORKERS=str(WORKERS), NODE_CLUSTER_SCHED_POLICY=self.policy)
        self.proc = spawn(["node", CLUSTER_APP], f"{self.key}.log", env)


class UnchangedPm2(Pm2):
    """`pm2 start cluster-app.js -i N`: PM2's defaults, as a user who adds no
    ecosystem file gets them (SIGINT, then SIGKILL after 1.6 s)."""
    key, name = "u-pm2", "PM2 cluster mode"
    suite, listening_marker = "unchanged", UNCHANGED_MARKER
    timeseries = False

    def env(self):
        return dict(BASE_ENV, PORT=str(self.port))

    def start(self):
        os.makedirs(PM2_HOME, exist_ok=True)
        with open(os.path.join(PM2_HOME, "touch"), "w") as f:
            f.write(str(int(time.time() * 1000)))
        rc, out, _, _ = run_cmd([PM2, "start", CLUSTER_APP, "-i", str(WORKERS), "--name", "bench"],
                                timeout=60, env=self.env())
        with open(os.path.join(OUT, "u-pm2-start.log"), "w") as f:
            f.write(out)
        if rc != 0:
            raise RuntimeError(f"pm2 start failed ({rc}): {out[-500:]}")


# ------------------------------------------------------------- balance modes
# hotswap's --balance modes side by side: the same worker.js (its
# X-Hotswap-Worker header names the worker that answered), 2 and 8 workers.

class BalanceHotswap(Hotswap):
    suite = "balance"
    fairness = spread = True
    can_reload = timeseries = False

    def __init__(self, mode, workers):
        super().__init__()
        self.mode, self.workers = mode, workers
        self.key = f"b-{mode}-{workers}"
        self.name = f"--balance {mode}, {workers} workers"
        self.duration = BALANCE_DURATION
        self.control = os.path.join(TMP, f"{self.key}.sock")

    def start(self):
        self.proc = spawn([HOTSWAP, "run", "-l", f"{HOST}:{self.port}", "-w", str(self.workers),
                           "--balance", self.mode, "--control", self.control, "--", "node", WORKER_JS],
                          f"{self.key}.log")


def spread_run(contender, mode):
    """spread_client.py from 127.0.0.2 .. 127.0.0.30: requests per worker and
    how many workers each source address reached."""
    Plan.left -= SPREAD_DURATION + 1
    wait_for_quiet(Plan.left)
    it = Interference()
    p = subprocess.run([sys.executable, os.path.join(HERE, "spread_client.py"), "--port", str(contender.port),
                        "--first", "2", "--last", "30", "--duration", str(SPREAD_DURATION), "--mode", mode],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=SPREAD_DURATION + 30,
                       env=BASE_ENV)
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"spread_client.py gave no result: {p.stdout[-800:]}")
    r["interference"] = it.share()
    counts = sorted(r["per_worker"].values())
    r["max_min"] = counts[-1] / counts[0] if len(counts) >= contender.workers and counts[0] else None
    log(f"  {contender.key:15} {mode:9} 29 source addresses: per worker {r['per_worker']}  max/min "
        f"{r['max_min'] if r['max_min'] is None else round(r['max_min'], 2)}  workers per address "
        f"max {r['workers_per_address']['max']} mean {r['workers_per_address']['mean']}  errors {r['errors']}")
    return r


# --------------------------------------------------------------------------- load

def wrk(port, mode_args, duration, script="summary.lua"):
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{int(duration)}s", "--timeout", "2s",
            "-s", os.path.join(HERE, "lua", script), *mode_args, f"http://{HOST}:{port}/"]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=duration + 30, env=BASE_ENV)
    m = re.search(r"^BENCHJSON (.*)$", p.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no result: {p.stdout[-800:]}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["failed"] = sum(r["errors"].values())
    r["raw"] = p.stdout
    return r


def reloader(contender, t0, duration, out):
    """Reload at t0+1 s, then every RELOAD_EVERY s, while there is time for it
    to finish before the load ends."""
    k = 0
    while True:
        at = t0 + 1.0 + k * RELOAD_EVERY
        if at > t0 + duration - 2.5:
            return
        delay = at - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            out.append(contender.reload())
        except Exception as e:  # noqa: BLE001
            out.append(dict(start=time.time(), end=time.time(), ms=0, ok=False, error=str(e)))
        k += 1


class SupervisorMeter:
    def __init__(self, contender):
        self.pids = contender.supervisor_pids()
        self.t = time.time()
        self.ticks = {n: cpu_ticks(p) for n, p in self.pids.items()}

    def done(self):
        wall = time.time() - self.t
        res = {}
        for n, p in self.pids.items():
            a, b = self.ticks[n], cpu_ticks(p)
            res[n] = dict(cpu_s=(b - a) / CLK_TCK if a is not None and b is not None else None,
                          wall_s=wall)
        return res


def measured_run(contender, mode, mode_args, duration, with_reloads, tag=""):
    meter = SupervisorMeter(contender)
    reloads = []
    th = None
    t0 = time.time()
    if with_reloads:
        th = threading.Thread(target=reloader, args=(contender, t0, duration, reloads), daemon=True)
        th.start()
    r = wrk(contender.port, mode_args, duration)
    if th:
        th.join(60)
    r["supervisor_cpu"] = meter.done()
    r["reloads"] = reloads
    r["mode"] = mode
    r["t0"] = t0
    raw = r.pop("raw")
    with open(os.path.join(OUT, f"wrk-{contender.key}-{mode}{'-reload' if with_reloads else ''}{tag}.txt"), "w") as f:
        f.write(raw)
    fails = r["failed"]
    extra = ""
    if with_reloads:
        ms = [x["ms"] for x in reloads]
        extra = (f", {len(reloads)} reloads ({sum(1 for x in reloads if not x['ok'])} failed), "
                 f"median {statistics.median(ms):.0f} ms" if ms else ", no reload done")
    log(f"  {contender.key:15} {mode:9}{' +reload' if with_reloads else '        '}{tag} "
        f"{r['rps']:9.0f} req/s  p50 {r['latency_us']['p50']/1000:6.2f} ms  "
        f"p99 {r['latency_us']['p99']/1000:7.2f} ms  failed {fails}{extra}")
    return r


def timeseries_run(contender, mode, duration):
    csv = os.path.join(OUT, f"ts-{contender.key}-{mode}.csv")
    reloads = []
    t0 = time.time()
    th = threading.Thread(target=reloader, args=(contender, t0, duration, reloads), daemon=True)
    th.start()
    p = subprocess.run(["node", os.path.join(HERE, "latency-client.js"), "--url", f"http://{HOST}:{contender.port}/",
                        "--concurrency", str(TS_CONCURRENCY), "--duration", str(duration), "--mode", mode,
                        "--out", csv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=duration + 30, env=BASE_ENV)
    th.join(60)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    bins = bin_samples(csv, t0, 0.1)
    failures = failed_samples(csv, t0)
    log(f"  {contender.key:15} {mode:9} time series: {summary['requests']} requests, "
        f"{summary['errors']} failed, {len(reloads)} reloads")
    return dict(mode=mode, t0=t0, duration=duration, summary=summary, bins=bins, failures=failures,
                reloads=[dict(start=x["start"] - t0, end=x["end"] - t0, ms=x["ms"], ok=x["ok"]) for x in reloads])


def failed_samples(csv, t0, limit=50):
    """The failed requests of a time series: start (s from t0), latency, result."""
    out = []
    with open(csv) as f:
        next(f)
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == 3 and not (parts[2].isdigit() and 200 <= int(parts[2]) < 400):
                out.append(dict(t=round(float(parts[0]) / 1000 - t0, 3), latency_ms=float(parts[1]), result=parts[2]))
                if len(out) >= limit:
                    break
    return out


def bin_samples(csv, t0, width):
    bins = {}
    with open(csv) as f:
        next(f)
        for line in f:
            parts = line.strip().split(",")
            if len(parts) != 3:
                continue
            start, lat, res = float(parts[0]) / 1000 - t0, float(parts[1]), parts[2]
            b = bins.setdefault(int(start // width), dict(lat=[], err=0))
            ok = res.isdigit() and 200 <= int(res) < 400
            if ok:
                b["lat"].append(lat)
            else:
                b["err"] += 1
    out = []
    for i in sorted(bins):
        lat = sorted(bins[i]["lat"])
        n = len(lat)
        row = dict(t=round(i * width, 3), n=n, err=bins[i]["err"])
        if n:
            row.update(p50=lat[n // 2], p99=lat[min(n - 1, int(n * 0.99))], max=lat[-1])
        out.append(row)
    return out


def idle_reloads(contender, n=3):
    res = []
    for _ in range(n):
        time.sleep(0.5)
        res.append(contender.reload())
    log(f"  {contender.key:15} idle reloads: " + ", ".join(f"{x['ms']:.0f} ms" for x in res))
    return res


# --------------------------------------------------------------------------- hotswap log

TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+\w+\s+(.*)$")


def parse_hotswap_log(path):
    """Per reload: total time, the new workers' start-up (spawn -> ready:
    node boot + EXAMPLE_STARTUP_MS), the old workers' drain (shutdown sent ->
    exited), and what remains: hotswap's own time."""
    events = []
    with open(path, errors="replace") as f:
        for line in f:
            m = TS_RE.match(line.strip())
            if not m:
                continue
            ts = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
            events.append((ts, m.group(2)))
    reloads, cur = [], None
    started, stopping = {}, {}
    for ts, msg in events:
        if m := re.match(r"reload to generation (\d+): started", msg):
            cur = dict(generation=int(m.group(1)), start=ts, startup_ms=0.0, drain_ms=0.0)
            continue
        if m := re.match(r"\[w(\d+) g(\d+) \d+\] started", msg):
            started[m.group(1)] = ts
        elif m := re.match(r"\[w(\d+) g\d+ \d+\] ready in", msg):
            if cur and m.group(1) in started:
                cur["startup_ms"] += (ts - started[m.group(1)]) * 1000
        elif m := re.match(r"\[w(\d+) g\d+ \d+\] stopping", msg):
            stopping[m.group(1)] = ts
        elif m := re.match(r"\[w(\d+) g\d+ \d+\] exited", msg):
            if cur and m.group(1) in stopping:
                cur["drain_ms"] += (ts - stopping[m.group(1)]) * 1000
        elif m := re.match(r"reload to generation (\d+) finished in (\d+) ms", msg):
            if cur and cur["generation"] == int(m.group(1)):
                cur["total_ms"] = (ts - cur["start"]) * 1000
                cur["own_ms"] = cur["total_ms"] - cur["startup_ms"] - cur["drain_ms"]
                reloads.append(cur)
            cur = None
        elif re.match(r"reload to generation \d+ failed", msg) and cur:
            cur = None
    return reloads


# --------------------------------------------------------------------------- main

def machine_facts():
    def out(argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=20, env=BASE_ENV).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"
    cpu = "n/a"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "n/a")
    except OSError:
        pass
    mem = "n/a"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    pm2v = "n/a"
    try:
        with open(os.path.join(HERE, "node_modules", "pm2", "package.json")) as f:
            pm2v = json.load(f)["version"]
    except OSError:
        pass
    ssv = out(["perl", "-MServer::Starter", "-e", "print $Server::Starter::VERSION"]) \
        if shutil.which("start_server") else "not installed"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "cpu": cpu, "memory": mem, "kernel": platform.release(),
        "os": out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "node": out(["node", "--version"]), "wrk": out(["wrk", "-v"]).splitlines()[0] if shutil.which("wrk") else "n/a",
        "pm2": pm2v, "server_starter": ssv, "python": platform.python_version(),
        "hotswap": out([HOTSWAP, "--version"]),
        "hotswap_commit": HOTSWAP_COMMIT or out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
        "hotswap_built_from": "committed revision (git archive)" if HOTSWAP_COMMIT else "work tree",
        "hotswap_tree_dirty": False if HOTSWAP_COMMIT else
        bool(out(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"])),
        "loadavg_before": open("/proc/loadavg").read().split()[:3],
    }


class Plan:
    """Estimated seconds of measurement still ahead, so that waiting for a
    quiet machine and repeating a disturbed run stay within BUDGET."""
    left = 0.0

    @staticmethod
    def estimate(c, paired=False):
        t = 10 + (2 * PAIRS * (PAIR_DURATION + 1.5) if paired else 2 * ((c.duration or DURATION) + 1.5))
        if c.fairness:
            t += 2 * (FAIR_DURATION + 1)
        if c.can_reload:
            t += 2 * (DURATION + 1.5) + 8
        if c.timeseries:
            t += 2 * (TS_DURATION + 1.5)
        if c.spread:
            t += 2 * (SPREAD_DURATION + 1)
        return t

    @classmethod
    def slack(cls):
        return BUDGET - (time.time() - T_DRIVER) - cls.left


def measured(contender, mode, args, duration, with_reloads):
    est = duration + 1.5
    attempts = []
    while True:
        Plan.left -= est  # this run is under way: what is left is the rest
        wait_for_quiet(Plan.left + est)
        it = Interference()
        r = measured_run(contender, mode, args, duration, with_reloads,
                         tag=f"-try{len(attempts) + 1}" if attempts else "")
        r["interference"] = it.share()
        attempts.append(r)
        f = r["interference"]["foreign"]
        if f <= QUIET_SHARE or len(attempts) >= 2 or Plan.slack() < est + 5:
            break
        log(f"  that run was disturbed: other processes used {f:.0%} of the machine; once more")
        Plan.left += est
    best = min(attempts, key=lambda a: a["interference"]["foreign"])
    best["attempts"] = [dict(a["interference"], rps=round(a["rps"]), failed=a["failed"]) for a in attempts]
    # Failed requests and reloads of a discarded attempt are kept, not hidden.
    best["discarded_attempts_failed"] = sum(a["failed"] for a in attempts if a is not best)
    best["discarded_attempts_reloads"] = [x for a in attempts if a is not best for x in a["reloads"]]
    return best


def paired_steady(a, b):
    """Steady-state runs of the baseline (a) and hotswap (b), interleaved:
    PAIRS rounds per mode, a-b then b-a, so that drifting background load
    hits both alike. A round disturbed by other processes is run once more
    when the time budget allows. Returns ({key: {mode: aggregate}}, rounds)."""
    out = {a.key: {}, b.key: {}}
    rounds = {}
    for mode, args in MODES:
        rounds[mode] = []
        for i in range(PAIRS):
            est = 2 * (PAIR_DURATION + 1.5)
            Plan.left -= est
            for attempt in range(2):
                wait_for_quiet(Plan.left + est)
                order = (a, b) if i % 2 == 0 else (b, a)
                rr = {}
                for c in order:
                    it = Interference()
                    r = measured_run(c, mode, args, PAIR_DURATION, False,
                                     tag=f"-pair{i + 1}" + (f"-try{attempt + 1}" if attempt else ""))
                    r["interference"] = it.share()
                    rr[c.key] = r
                worst = max(r["interference"]["foreign"] for r in rr.values())
                if worst <= QUIET_SHARE or attempt == 1 or Plan.slack() < est + 5:
                    break
                log(f"  round {i + 1} was disturbed: other processes used {worst:.0%} of the machine; once more")
            rounds[mode].append(dict(order=[c.key for c in order], attempts=attempt + 1,
                                     rps={k: r["rps"] for k, r in rr.items()},
                                     ratio=rr[b.key]["rps"] / rr[a.key]["rps"],
                                     foreign={k: r["interference"]["foreign"] for k, r in rr.items()},
                                     runs=rr))
        for c in (a, b):
            runs = [rd["runs"][c.key] for rd in rounds[mode]]
            out[c.key][mode] = aggregate(runs)
        ratios = sorted(rd["ratio"] for rd in rounds[mode])
        log(f"  paired {mode}: hotswap/baseline per round " + ", ".join(f"{x:.3f}" for x in
                                                                       (rd["ratio"] for rd in rounds[mode]))
            + f"; median {statistics.median(ratios):.3f}")
    for mode in rounds:
        for rd in rounds[mode]:
            rd.pop("runs")
    return out, rounds


def aggregate(runs):
    """Several wrk runs of one contender and mode as one: the run with the
    median req/s stands for latency; req/s is that median; failed requests
    and supervisor CPU are summed over all runs."""
    by_rps = sorted(runs, key=lambda r: r["rps"])
    rep = dict(by_rps[len(by_rps) // 2])
    rep["repeats"] = [dict(rps=r["rps"], p50=r["latency_us"]["p50"], p99=r["latency_us"]["p99"], failed=r["failed"],
                           foreign=r["interference"]["foreign"]) for r in runs]
    rep["failed"] = sum(r["failed"] for r in runs)
    rep["errors"] = {k: sum(r["errors"][k] for r in runs) for k in runs[0]["errors"]}
    cpu = {}
    for r in runs:
        for n, v in r["supervisor_cpu"].items():
            d = cpu.setdefault(n, dict(cpu_s=0.0, wall_s=0.0))
            d["cpu_s"] = None if d["cpu_s"] is None or v["cpu_s"] is None else d["cpu_s"] + v["cpu_s"]
            d["wall_s"] += v["wall_s"]
    rep["supervisor_cpu"] = cpu
    rep["interference"] = dict(foreign=max(r["interference"]["foreign"] for r in runs),
                               steal=max(r["interference"]["steal"] for r in runs))
    return rep


def bench(contender, steady=None, started=False):
    res = dict(key=contender.key, name=contender.name, supervisor_label=contender.supervisor_label,
               suite=contender.suite, workers=contender.workers, balance=getattr(contender, "mode", None),
               steady={}, reload={}, fairness={}, timeseries={}, idle_reloads=[])
    if not started:
        log(f"{contender.name}: starting on {HOST}:{contender.port}")
        Plan.left -= 10
        start(contender)
    if steady is not None:
        res["steady"] = steady
    else:
        for mode, args in MODES:
            res["steady"][mode] = measured(contender, mode, args, contender.duration or DURATION, False)
    if contender.fairness:
        for mode, args in MODES:
            if contender.suite == "balance":
                wait_for_quiet(Plan.left)
            Plan.left -= FAIR_DURATION + 1
            it = Interference()
            r = wrk(contender.port, args, FAIR_DURATION, "fairness.lua")
            r["interference"] = it.share()
            r.pop("raw")
            counts = sorted(r["per_worker"].values())
            r["max_min"] = counts[-1] / counts[0] if len(counts) >= contender.workers and counts[0] else None
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            res["fairness"][mode] = r
            log(f"  {contender.key:15} {mode:9} per worker {r['per_worker']}  max/min "
                f"{r['max_min'] if r['max_min'] is None else round(r['max_min'], 2)}")
    if contender.spread:
        res["spread"] = {mode: spread_run(contender, mode) for mode, _ in MODES}
    if contender.can_reload:
        for mode, args in MODES:
            res["reload"][mode] = measured(contender, mode, args, DURATION, True)
    if contender.timeseries:
        for mode, _ in MODES:
            Plan.left -= TS_DURATION + 1.5
            wait_for_quiet(Plan.left)
            it = Interference()
            res["timeseries"][mode] = timeseries_run(contender, mode, TS_DURATION)
            res["timeseries"][mode]["interference"] = it.share()
    if contender.can_reload:
        Plan.left -= 8
        time.sleep(1.5)  # let the last run's connections go
        it = Interference()
        res["idle_reloads"] = idle_reloads(contender)
        res["idle_reloads_interference"] = it.share()
    res["supervisor_mem"] = {n: mem_kb(p) for n, p in contender.supervisor_pids().items()}
    log("  supervisor memory: " + ", ".join(f"{n} VmHWM {m.get('VmHWM', 0)/1024:.1f} MB"
                                           for n, m in res["supervisor_mem"].items()))
    contender.stop()
    if isinstance(contender, Hotswap):
        res["hotswap_log_reloads"] = parse_hotswap_log(contender.logpaths()[0])
    return res


def start(contender):
    contender.start()
    contender.wait_ready()
    wrk(contender.port, [], 2)  # warm-up (JIT), not recorded


def keep_other_parts(results, keys):
    """A run of the balance part alone (BENCH_ONLY=balance) replaces only the
    balance rows of an existing results.json: the other parts' figures, and
    the facts of the run that measured them, stay."""
    path = os.path.join(HERE, "results.json")
    if not keys or any(not k.startswith("b-") for k in keys) or not os.path.exists(path):
        return results
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return results
    log("balance part only: keeping the other parts of results.json")
    old["contenders"] = [c for c in old.get("contenders", []) if c.get("suite") != "balance"] + results["contenders"]
    for k in ("balance_facts", "balance_config"):
        old[k] = results[k]
    old["errors"] = {k: v for k, v in old.get("errors", {}).items() if not k.startswith("b-")}
    old["errors"].update(results["errors"])
    old["balance_driver_seconds"] = results["driver_seconds"]
    old["last_run"] = "balance"
    return old


def main():
    global DURATION, FAIR_DURATION, TS_DURATION
    t_start = time.time()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    facts = machine_facts()
    log(f"run id {RUN_ID}; tmp {TMP}; {facts['cores']} cores, kernel {facts['kernel']}, node {facts['node']}")
    contenders = [Baseline(), Hotswap(), Cluster("rr"), Cluster("none"), Pm2()]
    contenders += [UnchangedHotswap(), UnchangedCluster("rr"), UnchangedCluster("none"), UnchangedPm2()]
    if BALANCE:
        contenders += [BalanceHotswap(m, n) for n in BALANCE_WORKERS for m in BALANCE_MODES]
    skipped = {}
    if shutil.which("start_server"):
        contenders.append(ServerStarter())
    else:
        skipped["server-starter"] = "start_server not installed (libserver-starter-perl)"
    if not os.path.exists(PM2):
        contenders = [c for c in contenders if c.key not in ("pm2", "u-pm2")]
        skipped["pm2"] = "pm2 not installed under contrib/bench/node_modules"
    if ONLY:
        contenders = [c for c in contenders if c.key in ONLY]
    keys = [c.key for c in contenders]
    paired = "baseline" in keys and "hotswap" in keys and PAIRS > 0
    Plan.left = sum(Plan.estimate(c, paired and c.key in ("baseline", "hotswap")) for c in contenders)
    if Plan.left > BUDGET - 10:
        # Less time than planned (a slow build): shorten every run to fit.
        f = max(0.5, (BUDGET - 10) / Plan.left)
        DURATION, FAIR_DURATION, TS_DURATION = (max(4, round(DURATION * f)), max(3, round(FAIR_DURATION * f)),
                                                max(5, round(TS_DURATION * f)))
        Plan.left = sum(Plan.estimate(c, paired and c.key in ("baseline", "hotswap")) for c in contenders)
        log(f"budget {BUDGET:.0f} s is short: runs shortened to {DURATION:.0f} s")
    results = dict(facts=facts, config=dict(duration=DURATION, fair_duration=FAIR_DURATION, ts_duration=TS_DURATION,
                                            reload_every=RELOAD_EVERY, threads=THREADS, connections=CONNECTIONS,
                                            workers=WORKERS, startup_ms=STARTUP_MS, ts_concurrency=TS_CONCURRENCY,
                                            pairs=PAIRS, pair_duration=PAIR_DURATION),
                   contenders=[], skipped=skipped, errors={})
    log(f"estimated measurement time {Plan.left:.0f} s; budget {BUDGET:.0f} s")
    current = None
    steady = {}
    try:
        if paired:
            a = next(c for c in contenders if c.key == "baseline")
            b = next(c for c in contenders if c.key == "hotswap")
            log(f"baseline on {HOST}:{a.port} and hotswap on {HOST}:{b.port}: interleaved steady-state runs")
            current = a
            Plan.left -= 20
            try:
                start(a)
                current = b
                start(b)
                steady, results["paired"] = paired_steady(a, b)
            except Exception as e:  # noqa: BLE001
                log(f"interleaved runs FAILED: {e}; measuring the two one after the other instead")
                results["errors"]["paired"] = str(e)
                a.stop()
                b.stop()
                steady = {}
            current = None
        for c in contenders:
            current = c
            pre = c.key in steady
            left_after = Plan.left - (Plan.estimate(c, True) - 10 - 2 * PAIRS * (PAIR_DURATION + 1.5) if pre
                                      else Plan.estimate(c))
            try:
                results["contenders"].append(bench(c, steady=steady.get(c.key), started=pre))
            except Exception as e:  # noqa: BLE001  one contender failing must not sink the rest
                log(f"{c.name}: FAILED: {e}")
                results["errors"][c.key] = str(e)
                c.stop()
            Plan.left = left_after
            current = None
    finally:
        if current is not None:
            current.stop()
        for p in STARTED:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
        if OWN_TMP:
            shutil.rmtree(TMP, ignore_errors=True)
    results["driver_seconds"] = time.time() - t_start
    results["waited_for_quiet_seconds"] = WAITED[0]
    results["quiet_share"] = QUIET_SHARE
    if os.environ.get("BENCH_T0"):
        results["total_seconds_before_report"] = time.time() - float(os.environ["BENCH_T0"])
    if any(c["suite"] == "balance" for c in results["contenders"]):
        results["balance_facts"] = facts
        results["balance_config"] = dict(duration=BALANCE_DURATION, fair_duration=FAIR_DURATION,
                                         spread_duration=SPREAD_DURATION, threads=THREADS,
                                         connections=CONNECTIONS, startup_ms=STARTUP_MS,
                                         quiet_share=QUIET_SHARE)
    driver_seconds = results["driver_seconds"]
    results = keep_other_parts(results, keys)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    log(f"driver done in {driver_seconds:.0f} s; rendering the report")
    subprocess.run([sys.executable, os.path.join(HERE, "report.py")], check=True)


if __name__ == "__main__":
    main()
