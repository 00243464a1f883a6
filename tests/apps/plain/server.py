#!/usr/bin/env python3
"""Plain HTTP servers on fd 3 that know nothing of hotswap: no IPC message,
no sd_notify. They show `--ready accepting` seeing each way a server can
wait for connections. The first argument picks the server:

  select   socketserver/http.server's serve_forever (poll/select)
  asyncio  asyncio.start_server (epoll)
  threads  a thread-per-connection server whose main thread blocks in accept()
  child    forks; the child (same process group) runs `threads`, the parent waits
  never    holds the socket and never accepts

$ACCEPT_AFTER (seconds) delays the start of accepting; $ACCEPT_STAMP names a
file where the time (Unix seconds) accepting starts is written just before.
For `--ready auto`, the asyncio server can also announce readiness late:
$ANNOUNCE=ipc sends {"type":"listening"} on the IPC channel (and then stops
on {"type":"shutdown"} too), $ANNOUNCE=notify sends READY=1 on
$NOTIFY_SOCKET, each $ANNOUNCE_AFTER seconds after it began to accept
(with $ANNOUNCE_FIRST=1, READY=1 comes before: before $ACCEPT_AFTER).
Every answer says `generation=G worker=W` and closes the connection. On
SIGTERM each stops accepting, finishes the request in hand and exits 0.
"""
import os
import signal
import socket
import sys
import threading
import time

mode = sys.argv[1]
body = "generation={} worker={}\n".format(
    os.environ.get("HOTSWAP_GENERATION", "0"), os.environ.get("HOTSWAP_WORKER_ID", "0")
).encode()
response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)


def listener():
    return socket.socket(fileno=3)


def about_to_accept():
    time.sleep(float(os.environ.get("ACCEPT_AFTER", "0")))
    stamp = os.environ.get("ACCEPT_STAMP")
    if stamp:
        with open(stamp + ".tmp", "w") as f:
            f.write(repr(time.time()))
        os.rename(stamp + ".tmp", stamp)


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True


def serve_one(conn):
    try:
        if read_request(conn):
            conn.sendall(response)
    except OSError:
        pass
    finally:
        conn.close()


def run_select():
    import http.server
    import socketserver

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener()
    # handle_request() returns at least every 0.2 s, so the stop flag a
    # signal handler sets is seen (poll() is retried after a signal).
    server.timeout = 0.2
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    about_to_accept()
    while not stop:
        server.handle_request()
    server.server_close()


def run_asyncio():
    import asyncio

    active = set()

    async def handle(reader, writer):
        active.add(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            active.discard(writer)

    async def main():
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        announce = os.environ.get("ANNOUNCE")
        if announce == "notify" and os.environ.get("ANNOUNCE_FIRST"):
            announce_ready(announce, stopped)  # as gunicorn's master does
            announce = None
        about_to_accept()
        server = await asyncio.start_server(handle, sock=listener())
        if announce:
            delay = float(os.environ.get("ANNOUNCE_AFTER", "0"))
            asyncio.get_running_loop().call_later(delay, lambda: announce_ready(announce, stopped))
        await stopped.wait()
        server.close()
        # Connections accepted just before the close are set up by tasks
        # of the loop's own, then handled by tasks: wait for every task.
        while len(asyncio.all_tasks()) > 1 or active:
            await asyncio.sleep(0.01)

    asyncio.run(main())


def announce_ready(how, stopped):
    import asyncio

    if how == "ipc":
        fd = int(os.environ["HOTSWAP_IPC_FD"])
        os.write(fd, b'{"type":"listening"}\n')

        def on_message():
            data = os.read(fd, 65536)
            if not data or b"shutdown" in data:
                asyncio.get_running_loop().remove_reader(fd)
                stopped.set()

        asyncio.get_running_loop().add_reader(fd, on_message)
    elif how == "notify":
        path = os.environ["NOTIFY_SOCKET"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", "\0" + path[1:] if path.startswith("@") else path)


def run_threads():
    """The main thread waits for SIGTERM; another blocks in accept() and
    serves each connection in a thread of its own. A blocked accept() cannot
    be interrupted without losing the connection it may be returning, so the
    drain wakes it with connections of its own (another worker may take
    them: they close without a request, which a server ignores) until it
    sees the stop flag; every connection it accepted is served."""
    sock = listener()
    sock.setblocking(True)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    about_to_accept()
    stop = threading.Event()
    threads = []

    def accept_loop():
        while not stop.is_set():
            conn, _ = sock.accept()
            t = threading.Thread(target=serve_one, args=(conn,))
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept_loop)
    acceptor.start()
    signal.sigwait([signal.SIGTERM])
    stop.set()
    while acceptor.is_alive():
        try:
            socket.create_connection(sock.getsockname(), timeout=1).close()
        except OSError:
            pass
        acceptor.join(0.05)
    sock.close()
    for t in threads:
        t.join()


def run_child():
    pid = os.fork()
    if pid == 0:
        run_threads()
        os._exit(0)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    while True:
        try:
            os.waitpid(pid, 0)
            return
        except InterruptedError:
            continue


def run_never():
    sock = listener()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


{"select": run_select, "asyncio": run_asyncio, "threads": run_threads, "child": run_child, "never": run_never}[mode]()
