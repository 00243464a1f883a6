#!/usr/bin/env python3
"""Requests from many loopback source addresses, counted per worker.

    python3 contrib/bench/spread_client.py --port PORT [--first 2] [--last 30]
        [--duration 5] [--mode close|keepalive]

wrk connects from 127.0.0.1 only (it has no option for the source address),
so under `--balance sticky`, which places a connection by the client's
address, every wrk connection lands on one slot. This client runs one thread
per source address 127.0.0.FIRST .. 127.0.0.LAST, each sending `GET /` to
127.0.0.1:PORT in a closed loop for DURATION seconds (a new connection per
request with `--mode close`, one connection reused with `keepalive`), and
counts the `X-Hotswap-Worker` header of every answer, per worker and per
source address. Prints one JSON line:

    {"requests", "duration_s", "rps", "errors", "per_worker": {id: n},
     "per_address": {addr: {id: n}}, "workers_per_address": {"max", "mean"}}

A Python client is far slower than wrk: its req/s is no throughput figure,
only the spread is. Standard library only; targets 127.0.0.1 only.
"""
import argparse
import json
import socket
import threading
import time

HOST = "127.0.0.1"


def one_request(sock, keepalive):
    """One GET on `sock`; returns (worker id, whether the server keeps the
    connection open)."""
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n" + (b"" if keepalive else b"Connection: close\r\n") + b"\r\n"
    sock.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the headers")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 200"):
        raise ConnectionError(f"status {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    open_after = keepalive and headers.get("connection", "").lower() != "close"
    return headers.get("x-hotswap-worker", "none"), open_after


def client(port, address, deadline, keepalive, counts, errors):
    sock = None
    while time.monotonic() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection((HOST, port), timeout=5, source_address=(address, 0))
            worker, still_open = one_request(sock, keepalive)
            counts[worker] = counts.get(worker, 0) + 1
            if not still_open:
                sock.close()
                sock = None
        except OSError as e:
            errors.append(f"{address}: {e}")
            if sock is not None:
                sock.close()
                sock = None
            time.sleep(0.01)
    if sock is not None:
        sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--first", type=int, default=2)
    ap.add_argument("--last", type=int, default=30)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--mode", choices=("close", "keepalive"), default="close")
    a = ap.parse_args()
    if not 1 <= a.first <= a.last <= 254:
        ap.error("the source addresses must lie within 127.0.0.1 .. 127.0.0.254, --first <= --last")
    addresses = [f"127.0.0.{i}" for i in range(a.first, a.last + 1)]
    per_address = {addr: {} for addr in addresses}
    errors = []
    t0 = time.monotonic()
    deadline = t0 + a.duration
    threads = [threading.Thread(target=client, args=(a.port, addr, deadline, a.mode == "keepalive",
                                                      per_address[addr], errors)) for addr in addresses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    per_worker = {}
    for counts in per_address.values():
        for w, n in counts.items():
            per_worker[w] = per_worker.get(w, 0) + n
    requests = sum(per_worker.values())
    spread = [len(c) for c in per_address.values()]
    print(json.dumps(dict(
        requests=requests, duration_s=round(took, 3), rps=requests / took if took else 0,
        errors=len(errors), error_samples=errors[:5], per_worker=per_worker, per_address=per_address,
        workers_per_address=dict(max=max(spread), mean=round(sum(spread) / len(spread), 2)))))


if __name__ == "__main__":
    main()
