#!/usr/bin/env python3
"""An app written for systemd, not for hotswap: it takes its socket from
LISTEN_FDS (checking LISTEN_PID), says READY=1 on NOTIFY_SOCKET, and drains
on SIGTERM. It runs under hotswap unchanged with `--ready notify`:

    hotswap run -l 127.0.0.1:8080 --ready notify -- python3 app.py

Responses are HTTP/1.0 (one request per connection), so draining is: stop
accepting (close our copy of the shared listener), finish what is in
flight, exit.
"""
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def systemd_socket():
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
        sys.exit("app: no socket from systemd (LISTEN_PID/LISTEN_FDS)")
    return socket.socket(fileno=3)


def sd_notify(state):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.sendall(state.encode())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = f"generation={os.environ.get('HOTSWAP_GENERATION', '0')} worker={os.environ.get('HOTSWAP_WORKER_ID', '0')} pid={os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = False  # finish in-flight requests before exiting
    block_on_close = True


def main():
    sock = systemd_socket()
    server = Server(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock

    def stop(*_):
        # shutdown() must run on another thread than serve_forever().
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    sd_notify("READY=1\nSTATUS=serving\n")
    server.serve_forever(poll_interval=0.05)
    sd_notify("STOPPING=1\n")
    server.server_close()  # close() our copy of the listener; joins the request threads


if __name__ == "__main__":
    main()
