"""hotswap's preload for Python workers (put first on PYTHONPATH by hotswap).

It makes uvicorn (also under gunicorn's UvicornWorker) and hypercorn drain
the way docs/protocol.md asks. uvicorn's patch is left out only with
HOTSWAP_DRAIN_PATCH=off (see _uvicorn_skipped); hypercorn's always applies
(its stop is beyond rescue). Their stock shutdown closes every idle
keep-alive connection at once, while a client may already be sending its
next request on it: that request is lost. Patched, shutdown:

* answers each open connection's next request with `Connection: close`
  (a request in flight gets it too, as before);
* closes a connection only once it stayed idle for GRACE seconds.

It patches nothing until the app imports uvicorn's HTTP protocols or
hypercorn's HTTP/1.1 protocol and TCP server, and nothing else, except one
asyncio bug of Python 3.11 that drops connections accepted just before a
server closes (see _patch_asyncio). Then it imports the sitecustomize module it hides, if there
is one. PYTHON_HOTSWAP_PRELOAD_DEBUG=1 logs what it does
(hotswap passes no HOTSWAP_* variable of its own environment to workers).

Each patch that took, each that did not (a version whose code it does
not know) and each left out is told to hotswap on the worker's IPC channel
as {"type":"hotswap:preload","patch":NAME,"ok":BOOL,"error":TEXT,
"skipped":WHY}: `hotswap status` shows them and the log says which did not
apply.
"""
import importlib.abc
import importlib.util
import json
import os
import stat
import sys

GRACE = 1.0
# Set by the first connection told to shut down: the server is stopping, so
# a connection accepted just before it stopped (not yet in the server's list
# when shutdown went through it) drains too.
_STOPPING = []
_HERE = os.path.dirname(os.path.abspath(__file__))
_TARGETS = (
    "asyncio.base_events",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.http.h11_impl",
    "hypercorn.protocol.h11",
    "hypercorn.asyncio.tcp_server",
)


def _debug(msg):
    if os.environ.get("PYTHON_HOTSWAP_PRELOAD_DEBUG"):
        print("hotswap preload: " + msg, file=sys.stderr, flush=True)


def _channel():
    """The IPC channel's fd and its inode, if this process has it: the fd
    number alone is not enough, as an app that closed it may have reused
    the number for a file of its own."""
    try:
        fd = int(os.environ.get("HOTSWAP_IPC_FD", ""))
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode):
            return None
        import socket

        probe = socket.socket(fileno=os.dup(fd))
        try:
            if probe.family != socket.AF_UNIX or probe.type != socket.SOCK_STREAM:
                return None
        finally:
            probe.close()
    except (ValueError, OSError):
        return None
    return (fd, st.st_ino)


_CHANNEL = _channel()


def _uvicorn_skipped():
    """Why uvicorn's drain patch is left out, or None to apply it.

    Applied under HOTSWAP_DRAIN_PATCH (--drain-patch) auto and on, even
    where rescue covers the worker (HOTSWAP_RESCUE=on): with rescue alone,
    2 workers under the test suite's parallel load lost 1 request in
    12,883 to 54,646 to a reset (docs/rescue.md), so the rule "opt-in where
    rescue alone gives 0" keeps it. off leaves it out."""
    if os.environ.get("HOTSWAP_DRAIN_PATCH", "auto") == "off":
        return "--drain-patch off"
    return None


def _report(patch, ok, error=None, skipped=None):
    """Tells hotswap whether `patch` took (one short line: written whole)."""
    if skipped is not None:
        _debug("left out " + patch + ": " + skipped)
    else:
        _debug(("patched " if ok else "could not patch ") + patch + ("" if ok else ": " + str(error)))
    if _CHANNEL is None:
        return
    fd, inode = _CHANNEL
    msg = {"type": "hotswap:preload", "patch": patch, "ok": ok}
    if error is not None:
        msg["error"] = str(error)[:300]
    if skipped is not None:
        msg["skipped"] = skipped
    try:
        if os.fstat(fd).st_ino == inode:
            os.write(fd, (json.dumps(msg) + "\n").encode())
    except OSError:
        pass


def _patch_protocol(cls):
    """cls: uvicorn's HttpToolsProtocol or H11Protocol. Both keep the
    request in hand in self.cycle (None, or response_complete when idle),
    close after a response whose cycle.keep_alive is false, parse requests
    in data_received and call on_response_complete after each response."""
    if getattr(cls, "_hotswap_patched", False):
        return
    original_shutdown = cls.shutdown
    original_data_received = cls.data_received
    original_on_response_complete = cls.on_response_complete

    def idle(self):
        return self.cycle is None or self.cycle.response_complete

    def close_if_idle(self):
        self._hotswap_idle_timer = None
        if idle(self) and not self.transport.is_closing():
            _debug("closing a connection idle for %.1f s" % GRACE)
            original_shutdown(self)  # closes an idle connection the stock way

    def wait_for_idle(self):
        # A request may be on its way: wait for it, or for GRACE of silence.
        if getattr(self, "_hotswap_idle_timer", None) is None and not self.transport.is_closing():
            self._hotswap_idle_timer = self.loop.call_later(GRACE, close_if_idle, self)

    def draining(self):
        return bool(_STOPPING) or getattr(self, "_hotswap_draining", False)

    def shutdown(self):
        self._hotswap_draining = True
        _STOPPING.append(True)
        if idle(self):
            wait_for_idle(self)
        elif not self.cycle.response_started:
            self.cycle.keep_alive = False  # its response says Connection: close
        # else: its response went out without Connection: close, so the
        # client may send one more request: that one gets it.

    def data_received(self, data):
        timer = getattr(self, "_hotswap_idle_timer", None)
        if timer is not None:
            timer.cancel()
            self._hotswap_idle_timer = None
        original_data_received(self, data)
        cycle = self.cycle
        if draining(self) and cycle is not None and not cycle.response_started:
            # The next request while draining: answered with Connection: close.
            cycle.keep_alive = False

    def on_response_complete(self):
        original_on_response_complete(self)
        if draining(self) and idle(self):
            wait_for_idle(self)

    cls.shutdown = shutdown
    cls.data_received = data_received
    cls.on_response_complete = on_response_complete
    cls._hotswap_patched = True
    _report(cls.__module__ + "." + cls.__name__, True)


def _patch_h11_cycle(cls):
    """uvicorn's h11 RequestResponseCycle closes after a response whose
    keep_alive is false without saying so in the response (httptools' does
    say it): the client's next request on the connection would be lost."""
    if getattr(cls, "_hotswap_patched", False):
        return
    original_send = cls.send

    async def send(self, message):
        if message.get("type") == "http.response.start" and not self.keep_alive and not self.response_started:
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"connection" and v.lower() == b"close" for k, v in headers):
                message = dict(message, headers=headers + [(b"connection", b"close")])
        await original_send(self, message)

    cls.send = send
    cls._hotswap_patched = True
    _report(cls.__module__ + "." + cls.__name__, True)


def _patch_hypercorn_h11(module):
    """hypercorn's H11Protocol: once the server terminates, it closes each
    connection after its response, which said nothing of closing, so the
    client's next request on it is lost. Patched: every response sent while
    terminating says `Connection: close` (h11 then closes after it), and a
    connection whose response did not is kept for one more request."""
    cls = module.H11Protocol
    h11 = module.h11
    if getattr(cls, "_hotswap_patched", False):
        return
    original_send = cls._send_h11_event
    Updated, Closed = module.Updated, module.Closed

    async def _send_h11_event(self, event):
        if isinstance(event, h11.Response) and self.context.terminated.is_set():
            event = h11.Response(
                status_code=event.status_code,
                headers=list(event.headers) + [(b"connection", b"close")],
                reason=event.reason,
            )
        await original_send(self, event)

    async def _maybe_recycle(self):
        await self._close_stream()
        if self.connection.our_state is h11.DONE and self.connection.their_state is h11.DONE:
            try:
                self.connection.start_next_cycle()
            except h11.LocalProtocolError:
                await self.send(Closed())
            else:
                self.response = None
                self.scope = None
                await self.can_read.set()
                await self.send(Updated(idle=True))
        else:
            await self.can_read.set()
            await self.send(Closed())

    cls._send_h11_event = _send_h11_event
    cls._maybe_recycle = _maybe_recycle
    cls._hotswap_patched = True
    _report("hypercorn.protocol.h11.H11Protocol", True)


def _patch_hypercorn_tcp(module):
    """hypercorn's TCPServer closes an idle connection as soon as the server
    terminates. Patched: only after GRACE more seconds of silence (a request
    arriving meanwhile stops the idle task).

    The wait does not use asyncio.wait_for: before Python 3.12 it swallows a
    cancellation that comes in the same turn of the loop as the event it
    waits for. A request arriving just as the server terminates then fails
    to stop the idle task: its handler waits for that task, which goes on
    to close the connection, and the request is lost unanswered.
    asyncio.wait never swallows a cancellation."""
    cls = module.TCPServer
    if getattr(cls, "_hotswap_patched", False):
        return
    asyncio = module.asyncio

    async def _idle_timeout(self):
        terminated = asyncio.ensure_future(self.context.terminated.wait())
        try:
            await asyncio.wait({terminated}, timeout=self.config.keep_alive_timeout)
        finally:
            terminated.cancel()
        if self.context.terminated.is_set():
            await asyncio.sleep(GRACE)
        await asyncio.shield(self._initiate_server_close())

    cls._idle_timeout = _idle_timeout
    cls._hotswap_patched = True
    _report("hypercorn.asyncio.tcp_server.TCPServer", True)


def _patch_asyncio(module):
    """Python 3.11's asyncio: a connection accepted in the same batch as the
    server's close() fails to set up (Server._attach asserts the server is
    open) and is dropped unanswered, reset. Patched: it is set up and
    served, as in later Pythons (a draining server answers it with
    `Connection: close`)."""
    import inspect

    cls = module.Server
    original = cls._attach
    if getattr(cls, "_hotswap_patched", False) or len(inspect.signature(original).parameters) != 1:
        return

    def _attach(self):
        if self._sockets is None:
            self._active_count += 1
            return
        original(self)

    cls._attach = _attach
    cls._hotswap_patched = True
    _debug("patched asyncio.base_events.Server._attach")  # a Python fix, not a server's: not reported


def _patch(module):
    try:
        if module.__name__ == "asyncio.base_events":
            _patch_asyncio(module)
        elif module.__name__ == "hypercorn.protocol.h11":
            _patch_hypercorn_h11(module)
        elif module.__name__ == "hypercorn.asyncio.tcp_server":
            _patch_hypercorn_tcp(module)
        else:
            name = "HttpToolsProtocol" if module.__name__.endswith("httptools_impl") else "H11Protocol"
            skipped = _uvicorn_skipped()
            if skipped is not None:
                _report(module.__name__ + "." + name, False, skipped=skipped)
                return
            cls = getattr(module, name, None)
            wanted = ("shutdown", "data_received", "on_response_complete")
            missing = [m for m in wanted if not hasattr(cls, m)] if cls is not None else []
            if cls is None or missing:
                what = "no %s" % name if cls is None else "%s has no %s" % (name, ", ".join(missing))
                _report(module.__name__ + "." + name, False, "this uvicorn version's code is not the one patched: " + what)
            else:
                _patch_protocol(cls)
            if module.__name__.endswith("h11_impl"):
                _patch_h11_cycle(module.RequestResponseCycle)
    except Exception as e:  # a version it does not know: never break the app
        _report(module.__name__, False, "%s: %s" % (type(e).__name__, e))


class _Finder(importlib.abc.MetaPathFinder):
    """Patches the target modules right after they are executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                loader = spec.loader
                original_exec = loader.exec_module

                class Loader(importlib.abc.Loader):
                    def create_module(self, spec):
                        return loader.create_module(spec)

                    def exec_module(self, module):
                        original_exec(module)
                        _patch(module)

                spec.loader = Loader()
                return spec
        return None


def _install():
    for name in _TARGETS:
        if name in sys.modules:
            _patch(sys.modules[name])
    sys.meta_path.insert(0, _Finder())


def _chain():
    """Imports the sitecustomize module this one hides, if there is one.
    The preload's directory stays on PYTHONPATH: servers that start their
    workers as new interpreters (hypercorn, uvicorn --workers, through
    multiprocessing) need it there too."""
    me = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
    try:
        spec = importlib.util.find_spec("sitecustomize")
        if spec is not None and spec.origin and os.path.dirname(os.path.abspath(spec.origin)) != _HERE:
            importlib.import_module("sitecustomize")
    except Exception as e:
        _debug("the hidden sitecustomize failed: %r" % (e,))
    finally:
        sys.path[:] = saved
        if me is not None:
            sys.modules.setdefault("sitecustomize", me)


_install()
_chain()
