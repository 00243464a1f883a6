#!/usr/bin/env python3
"""A stock asyncio HTTP server in the shape users write it: it takes fd 3
(systemd's LISTEN_FDS), hands it to asyncio.start_server (which puts it in
the event loop's epoll set at once), then warms up for $WARMUP seconds
(default 2) with the loop blocked, as loading a model or filling a cache
does, and only then serves. With $FAIL_AFTER_WARMUP=1 it exits 1 at the end
of its warm-up instead (a broken release). It says nothing to hotswap: no
IPC, no sd_notify.

Each answer is `generation=G worker=W`, keep-alive; a connection closed
without a request (a load balancer's TCP check, hotswap's probe) is
ignored. On SIGTERM it stops accepting, answers the next request of each
open connection with `Connection: close`, closes idle ones after 1 s and
exits.
"""
import asyncio
import os
import signal
import socket
import time

BODY = "generation={} worker={}\n".format(
    os.environ.get("HOTSWAP_GENERATION", "0"), os.environ.get("HOTSWAP_WORKER_ID", "0")
).encode()
stopping = False
connections = set()


async def handle(reader, writer):
    connections.add(writer)
    try:
        while True:
            idle_since_stop = None
            while True:
                try:
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.25)
                    break
                except asyncio.TimeoutError:
                    if stopping:
                        idle_since_stop = idle_since_stop or time.monotonic()
                        if time.monotonic() - idle_since_stop >= 1.0:
                            return  # idle for 1 s after the stop
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # closed without a (further) request
            close = stopping
            head = "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n".format(
                len(BODY), "Connection: close\r\n" if close else ""
            )
            writer.write(head.encode() + BODY)
            await writer.drain()
            if close:
                return
    finally:
        connections.discard(writer)
        writer.close()


async def main():
    global stopping
    sock = socket.socket(fileno=3)
    server = await asyncio.start_server(handle, sock=sock)
    # The warm-up: the loop does not run, connections wait in the backlog.
    time.sleep(float(os.environ.get("WARMUP", "2")))
    if os.environ.get("FAIL_AFTER_WARMUP") == "1":
        # Dies at once, as a process the OOM killer ends or that calls
        # os._exit does (sys.exit would let asyncio.run's clean-up run the
        # loop once more, accepting connections it then drops).
        print("warm-up failed: exiting 1", flush=True)
        os._exit(1)
    print("warmed up, serving", flush=True)
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: done.done() or done.set_result(None))
    await done
    stopping = True
    server.close()
    while connections:
        await asyncio.sleep(0.05)


asyncio.run(main())
