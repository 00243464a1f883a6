#!/usr/bin/env python3
"""Run N copies of the unchanged hotswap example worker on ONE shared listening
socket, with no supervisor logic at all (no restarts, no reloads).

Two uses in the benchmark:

* baseline ("no supervisor"): `launcher.py --listen 127.0.0.1:PORT -n 2 -- node worker.js`
  binds the socket itself;
* Server::Starter worker: `start_server --port=127.0.0.1:PORT -- launcher.py
  --server-starter -n 2 -- node worker.js` takes the socket that start_server
  passes in SERVER_STARTER_PORT ("127.0.0.1:PORT=FD"). start_server's
  --signal-on-hup (TERM) then makes this launcher drain its workers.

Each worker gets exactly what hotswap gives it (docs/protocol.md): the listener
at fd 3, LISTEN_FDS=1, LISTEN_PID=<its own pid>, an IPC socketpair at fd 4
(NODE_CHANNEL_FD=4, json serialization, so process.send() works and the
worker's {"type":"listening"} is read and dropped here), HOTSWAP_WORKER_ID and
HOTSWAP_GENERATION. On SIGTERM/SIGINT every worker is sent {"type":"shutdown"}
(the worker drains: stops accepting, answers each connection's next request
with Connection: close) and the launcher exits once they all have.
Python standard library only.
"""
import argparse
import json
import os
import selectors
import signal
import socket
import sys


def parse_args():
    p = argparse.ArgumentParser()
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--listen", metavar="HOST:PORT")
    g.add_argument("--server-starter", action="store_true",
                   help="use the socket passed by start_server in SERVER_STARTER_PORT")
    p.add_argument("-n", "--workers", type=int, default=2)
    p.add_argument("--backlog", type=int, default=1024)
    p.add_argument("command", nargs="+")
    return p.parse_args()


def listener_fd(args):
    if args.server_starter:
        spec = os.environ["SERVER_STARTER_PORT"].split(";")[0]
        fd = int(spec.rsplit("=", 1)[1])
        os.set_inheritable(fd, False)  # only the dup at fd 3 goes to workers
        return fd
    host, port = args.listen.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(args.backlog)
    return s.detach()


def spawn(command, lfd, worker_id, generation):
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # Keep the source fds clear of 3 and 4 so the dup2s below cannot clobber them.
    src_l = lfd if lfd > 4 else os.dup2(lfd, 100, inheritable=False)
    src_c = child_end.fileno()
    if src_c <= 4:
        src_c = os.dup2(src_c, 101, inheritable=False)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(src_l, 3)
            os.dup2(src_c, 4)
            env = dict(os.environ)
            for k in ("SERVER_STARTER_PORT", "SERVER_STARTER_GENERATION"):
                env.pop(k, None)
            env.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="unknown",
                       NODE_CHANNEL_FD="4", NODE_CHANNEL_SERIALIZATION_MODE="json",
                       HOTSWAP_IPC_FD="4", HOTSWAP_WORKER_ID=str(worker_id),
                       HOTSWAP_GENERATION=str(generation))
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.execvpe(command[0], command, env)
        except BaseException as e:  # noqa: BLE001
            sys.stderr.write(f"launcher: cannot exec {command}: {e}\n")
        finally:
            os._exit(127)
    if src_l != lfd:
        os.close(src_l)
    if src_c != child_end.fileno():
        os.close(src_c)
    child_end.close()
    parent_end.setblocking(False)
    return pid, parent_end


def main():
    args = parse_args()
    lfd = listener_fd(args)
    generation = int(os.environ.get("SERVER_STARTER_GENERATION", "1") or 1)
    workers = {}  # pid -> channel
    for i in range(args.workers):
        wid = generation * 100 + i + 1 if args.server_starter else i + 1
        pid, chan = spawn(args.command, lfd, wid, generation)
        workers[pid] = chan

    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for chan in workers.values():
            try:
                chan.send(b'{"type":"shutdown"}\n')
            except OSError:
                pass

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    sel = selectors.DefaultSelector()
    for pid, chan in workers.items():
        sel.register(chan, selectors.EVENT_READ, pid)
    status = 0
    while workers:
        for key, _ in sel.select(timeout=0.2):
            try:
                data = key.fileobj.recv(65536)  # {"type":"listening"} etc.: read and drop
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
        while workers:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                workers.clear()
                break
            if pid == 0:
                break
            chan = workers.pop(pid, None)
            if chan is not None:
                try:
                    sel.unregister(chan)
                except (KeyError, ValueError):
                    pass
                chan.close()
            code = os.waitstatus_to_exitcode(st)
            if not stopping:
                # No supervisor: a dead worker is not replaced (baseline semantics).
                sys.stderr.write(f"launcher: worker {pid} exited ({code}) unexpectedly\n")
                status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
