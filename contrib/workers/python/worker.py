#!/usr/bin/env python3
"""Example hotswap worker in Python (3.8+, standard library only).

Run it as `hotswap --listen 127.0.0.1:8080 -- python3 worker.py`. It serves a
tiny HTTP/1.1 app on the listening socket inherited as fd 3 and speaks the
hotswap IPC protocol (one JSON value per line) on the fd in HOTSWAP_IPC_FD; see
docs/protocol.md.

The main thread runs a selector over the listener and the IPC channel; each
connection gets a thread. Draining on {"type":"shutdown"} (or when the primary
closes the channel):

* the main thread close()s its copy of the listener, never shutdown(): the
  socket is shared with the other workers, which keep accepting from it;
* each open connection answers one more request with `Connection: close`, then
  is closed; a connection idle for 1 s after the drain began is closed;
* the process exits 0 once no connection is left.

Env: HOTSWAP_GENERATION, HOTSWAP_WORKER_ID, EXAMPLE_STARTUP_MS (delay before
listening and reporting ready), EXAMPLE_RESPONSE_DELAY_MS (delay per response),
EXAMPLE_HEALTH_STATUS (the status /healthz answers, default 200),
EXAMPLE_EXIT_AFTER_READY_MS (a broken release: that long after it is ready, it
drains and exits 1).
Endpoints: any request answers `generation=G worker=ID pid=PID`;
/broadcast?data=X and /send?to=ID&data=X send IPC messages, /inbox lists the
IPC messages received so far.
"""
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

GENERATION = os.environ.get("HOTSWAP_GENERATION", "0")
WORKER_ID = os.environ.get("HOTSWAP_WORKER_ID", "0")
STARTUP = int(os.environ.get("EXAMPLE_STARTUP_MS", "0")) / 1000
RESPONSE_DELAY = int(os.environ.get("EXAMPLE_RESPONSE_DELAY_MS", "0")) / 1000
HEALTH_STATUS = int(os.environ.get("EXAMPLE_HEALTH_STATUS", "200"))
EXIT_AFTER_READY = os.environ.get("EXAMPLE_EXIT_AFTER_READY_MS")
DRAIN_IDLE = 1.0       # close connections idle this long once draining
KEEPALIVE_IDLE = 10.0  # ... and this long otherwise
TICK = 0.05            # how often blocked threads look at the drain state
MAX_HEAD = 64 * 1024


def log(msg):
    print(f"[python worker {WORKER_ID} gen {GENERATION} pid {os.getpid()}] {msg}", flush=True)


class Worker:
    def __init__(self):
        if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
            sys.exit(f"worker.py: no listening socket passed: LISTEN_PID={os.environ.get('LISTEN_PID')} "
                     f"(own pid {os.getpid()}), LISTEN_FDS={os.environ.get('LISTEN_FDS')}; run me under hotswap")
        if "HOTSWAP_IPC_FD" not in os.environ:
            sys.exit("worker.py: HOTSWAP_IPC_FD is not set; run me under hotswap")
        self.listener = socket.socket(fileno=3)
        # Non-blocking: another worker may take the connection we were woken for.
        self.listener.setblocking(False)
        self.ipc = socket.socket(fileno=int(os.environ["HOTSWAP_IPC_FD"]))
        self.ipc.setblocking(False)
        self.ipc_buf = b""
        self.ipc_lock = threading.Lock()
        self.inbox = []
        self.drain_started = None  # time.monotonic() once draining
        self.drain_reason = None
        self.conns = 0
        self.conns_changed = threading.Condition()

    def send(self, msg):
        data = (json.dumps(msg) + "\n").encode()
        with self.ipc_lock:
            self.ipc.setblocking(True)
            try:
                self.ipc.sendall(data)
            except OSError:
                pass  # the primary is gone; we will see EOF
            finally:
                self.ipc.setblocking(False)

    def start_drain(self, reason):
        if self.drain_started is None:
            self.drain_reason = reason
            self.drain_started = time.monotonic()

    # --- main thread ------------------------------------------------------

    def run(self):
        signal.signal(signal.SIGTERM, lambda *_: self.start_drain("SIGTERM"))
        sel = selectors.DefaultSelector()
        sel.register(self.ipc, selectors.EVENT_READ, self.on_ipc)
        ready_at = time.monotonic() + STARTUP  # simulated start-up work
        listening = False
        while self.drain_started is None:
            if not listening and time.monotonic() >= ready_at:
                sel.register(self.listener, selectors.EVENT_READ, self.on_accept)
                listening = True
                log(f"listening on fd 3 (generation {GENERATION}, worker {WORKER_ID})")
                self.send({"type": "listening"})
                if EXIT_AFTER_READY is not None:
                    timer = threading.Timer(int(EXIT_AFTER_READY) / 1000, self.start_drain, ("a broken release",))
                    timer.daemon = True
                    timer.start()
            for key, _ in sel.select(timeout=TICK):
                key.data()
        log(f"draining ({self.drain_reason}), {self.conns} connection(s) open")
        if listening:
            sel.unregister(self.listener)
        self.listener.close()  # close(), never shutdown(): the socket is shared
        with self.conns_changed:
            self.conns_changed.wait_for(lambda: self.conns == 0)
        code = 1 if self.drain_reason == "a broken release" else 0
        log(f"drained, exiting {code}")
        sys.exit(code)

    def on_ipc(self):
        try:
            data = self.ipc.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            return self.start_drain("IPC channel closed")
        self.ipc_buf += data
        *lines, self.ipc_buf = self.ipc_buf.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                log(f"ignoring bad IPC line: {line[:100]!r}")
                continue
            if isinstance(msg, dict) and msg.get("type") == "shutdown":
                self.start_drain("shutdown received")
            else:
                self.inbox.append(msg)

    def on_accept(self):
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker got it
        with self.conns_changed:
            self.conns += 1
        threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    # --- one thread per connection -----------------------------------------

    def idle_deadline(self, idle_since):
        drain = self.drain_started
        if drain is None:
            return idle_since + KEEPALIVE_IDLE
        return max(idle_since, drain) + DRAIN_IDLE

    def recv(self, conn, idle_since):
        """Next bytes from conn, or b"" on EOF or once idle for too long."""
        while time.monotonic() < self.idle_deadline(idle_since):
            try:
                return conn.recv(65536)
            except socket.timeout:
                continue
        return b""

    def serve(self, conn):
        try:
            conn.settimeout(TICK)
            buf, idle_since = b"", time.monotonic()
            while True:
                while b"\r\n\r\n" not in buf:
                    data = self.recv(conn, idle_since)
                    if not data or len(buf) > MAX_HEAD:
                        return
                    buf, idle_since = buf + data, time.monotonic()
                head, buf = buf.split(b"\r\n\r\n", 1)
                try:
                    method, target, keep_alive, length = parse_head(head)
                except ValueError:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                while len(buf) < length:  # read and discard the body
                    data = self.recv(conn, time.monotonic())
                    if not data:
                        return
                    buf += data
                buf = buf[length:]

                time.sleep(RESPONSE_DELAY)
                status, ctype, body = self.route(target)
                # After the drain began, this is the connection's last answer.
                close = not keep_alive or self.drain_started is not None
                out = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                       f"X-Hotswap-Generation: {GENERATION}\r\nX-Hotswap-Worker: {WORKER_ID}\r\n"
                       f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode()
                conn.settimeout(KEEPALIVE_IDLE)
                conn.sendall(out if method == "HEAD" else out + body)
                conn.settimeout(TICK)
                if close:
                    return
                idle_since = time.monotonic()
        except OSError:
            pass
        finally:
            conn.close()
            with self.conns_changed:
                self.conns -= 1
                self.conns_changed.notify_all()

    def route(self, target):
        """Answers every method like GET; the path matters only for IPC endpoints."""
        url = urlsplit(target)
        params = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if url.path == "/broadcast":
            self.send({"type": "broadcast", "data": params.get("data")})
            return "200 OK", "text/plain", b"ok\n"
        if url.path == "/send":
            to = params.get("to", "")
            self.send({"type": "send", "to": int(to) if to.isdigit() else None, "data": params.get("data")})
            return "200 OK", "text/plain", b"ok\n"
        if url.path == "/inbox":
            return "200 OK", "application/json", json.dumps(self.inbox).encode()
        if url.path == "/healthz":
            return f"{HEALTH_STATUS} Health", "text/plain", f"health {HEALTH_STATUS}\n".encode()
        body = f"generation={GENERATION} worker={WORKER_ID} pid={os.getpid()}\n".encode()
        return "200 OK", "text/plain", body


def parse_head(head):
    """(method, target, keep_alive, content_length) of a request head; ValueError if bad."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    keep_alive, length = version == "HTTP/1.1", 0
    for line in lines[1:]:
        name, value = line.split(":", 1)
        name, value = name.strip().lower(), value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            keep_alive = "keep-alive" in tokens or (keep_alive and "close" not in tokens)
    return method, target, keep_alive, length


if __name__ == "__main__":
    Worker().run()
