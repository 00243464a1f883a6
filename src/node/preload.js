// hotswap's preload for Node.js workers (loaded with `--require` from NODE_OPTIONS).
//
// hotswap runs unchanged Node apps as cluster workers and stops one with Node's own
// cluster `disconnect`, which calls server.close() on every server and then
// process.disconnect(). Two things in stock Node turn that into failed requests or
// a crash; this file fixes them and nothing else:
//
// 1. (For http servers only where rescue does not cover the worker: drainSkipped
//    below; https servers always, rescue cannot read TLS.)
//    Since Node 19, server.close() calls closeIdleConnections(): a keep-alive
//    connection idle at that instant is destroyed, and a request the client has
//    already written on it is lost. Here close() still closes the listener at once,
//    but each open connection answers one more request, with `Connection: close`;
//    a connection that stays idle is destroyed after a short grace. 'close' (and so
//    the cluster disconnect) completes once no connection is left.
// 2. process.send() without a callback after the channel closed emits 'error' on
//    process, which kills the app (ERR_IPC_CHANNEL_CLOSED); so does
//    process.disconnect() on a closed channel, which cluster itself calls when the
//    drain ends after the channel was closed. Both become silent no-ops.
//
// 3. With HOTSWAP_WAIT_READY=1 (a worker of an app that says 'ready' itself, PM2's
//    wait_ready, or under --ready ipc), a server's socket from the primary starts
//    accepting only once the app says process.send('ready') or
//    {type: 'listening'}: until then connections wait in the shared queue, where
//    the old workers take them, and the app sees no request before it is ready.
//    listen() still succeeds at once and emits 'listening'.
//
// Dependency-free CommonJS for Node 18, 20 and 22.
'use strict';

const env = process.env;
const kLoaded = Symbol.for('hotswap.preload');

if ((env.HOTSWAP_IPC_FD !== undefined || env.HOTSWAP_NODE_PRELOAD === '1') && !process[kLoaded]) {
  process[kLoaded] = true;
  removeSelfFromNodeOptions();
  const skipped = drainSkipped();
  // https always: rescue cannot read TLS, it leaves those connections to the worker.
  patchHttpServers(skipped === null);
  report('node:http.Server drain', skipped);
  report('node:https.Server drain', null);
  delete env.HOTSWAP_RESCUE;
  delete env.HOTSWAP_DRAIN_PATCH;
  const waitReady = env.HOTSWAP_WAIT_READY === '1';
  delete env.HOTSWAP_WAIT_READY;
  const ready = waitReady ? deferAcceptsUntilReady() : () => {};
  patchIpc(ready);
  receiveTagged();
}

// 4. The app's own primary (run by hotswap, docs/node-primary.md), under
//    cluster.setupPrimary({serialization: 'advanced'}), sends what JSON would
//    lose (Buffers, Dates, Maps...) tagged, inside a NODE_HOTSWAP_MSG message,
//    which Node gives to 'internalMessage' only: restored here and emitted as
//    the 'message' (with its handle, a socket passed along) Node's advanced
//    serialization would have given.
function receiveTagged() {
  if (typeof process.send !== 'function') return;
  const TAG = '\u0000hotswap';
  const decode = (v) => {
    if (v === null || typeof v !== 'object') return v;
    if (Array.isArray(v)) return v.map(decode);
    const tag = v[TAG];
    if (tag === undefined) {
      const out = {};
      for (const k of Object.keys(v)) out[k] = decode(v[k]);
      return out;
    }
    switch (tag) {
      case 'u': return undefined;
      case 'n': return BigInt(v.v);
      case 'b': return Buffer.from(v.v, 'base64');
      case 't': {
        const copy = new Uint8Array(Buffer.from(v.v, 'base64')).buffer;
        if (v.k === 'DataView') return new DataView(copy);
        const T = globalThis[v.k];
        return typeof T === 'function' && T.BYTES_PER_ELEMENT ? new T(copy) : Buffer.from(copy);
      }
      case 'd': return new Date(v.v);
      case 'm': return new Map(v.v.map(([k, x]) => [decode(k), decode(x)]));
      case 's': return new Set(v.v.map(decode));
      default: return v;
    }
  };
  process.on('internalMessage', (msg, handle) => {
    if (msg && msg.cmd === 'NODE_HOTSWAP_MSG') process.emit('message', decode(msg.v), handle);
  });
}

// Item 1 is left out where hotswap's rescue covers this worker (HOTSWAP_RESCUE=on):
// the primary then holds the connections close() destroys and answers a request
// caught on one (measured 0 failed without item 1, docs/rescue.md). It applies with
// --rescue off, without a TCP listener, where copies are refused, and always with
// HOTSWAP_DRAIN_PATCH=on (--drain-patch on); never with off. Returns why it is
// left out, or null.
function drainSkipped() {
  const mode = env.HOTSWAP_DRAIN_PATCH || 'auto';
  if (mode === 'on') return null;
  if (mode === 'off') return '--drain-patch off';
  if (env.HOTSWAP_RESCUE === 'on') return 'rescue covers this worker';
  return null;
}

// Tells the primary whether the drain patch took or why it was left out
// ({"type":"hotswap:preload"}: `hotswap status` shows it). With a callback: a
// closed channel is never an error here.
function report(patch, skipped) {
  debug(skipped === null ? `patched ${patch}` : `left out ${patch}: ${skipped}`);
  if (typeof process.send !== 'function' || !process.connected) return;
  const msg = { type: 'hotswap:preload', patch, ok: skipped === null };
  if (skipped !== null) msg.skipped = skipped;
  try { process.send(msg, undefined, {}, () => {}); } catch { /* never break the app */ }
}

// Item 3 above: holds back the listen() of every handle the primary gives (a
// cluster worker's server gets its socket from queryServer and then calls
// server._listen2, which calls handle.listen) until the app says it is ready.
// Returns what to call when it does.
function deferAcceptsUntilReady() {
  const net = require('net');
  const proto = net.Server.prototype;
  const listen2 = proto._listen2;
  let said = false;
  const held = [];
  if (typeof listen2 !== 'function') return () => {};
  proto._listen2 = function hotswapListen2(...args) {
    const handle = this._handle;
    if (!said && handle && typeof handle.listen === 'function') {
      const listen = handle.listen;
      handle.listen = function hotswapHeldListen(backlog) {
        handle.listen = listen;
        held.push(() => {
          const err = listen.call(handle, backlog);
          if (err) debug(`listen after 'ready' failed: ${err}`);
        });
        debug('a server listens; it accepts once the app says it is ready');
        return 0;
      };
    }
    return listen2.apply(this, args);
  };
  return () => {
    if (said) return;
    said = true;
    debug(`the app says it is ready: ${held.length} server(s) start accepting`);
    held.splice(0).forEach((start) => start());
  };
}

function debug(msg) {
  // HOTSWAP_LOG is a tracing filter ("debug", "hotswap=debug", ...).
  if (/\b(debug|trace)\b/i.test(env.HOTSWAP_LOG || '')) {
    process.stderr.write(`[hotswap preload ${process.pid}] ${msg}\n`);
  }
}

// Children the app spawns inherit process.env: they are not hotswap workers and must
// not get this file. Keep everything else the user put in NODE_OPTIONS, verbatim.
function removeSelfFromNodeOptions() {
  const fs = require('fs');
  const path = require('path');
  const real = (p) => { try { return fs.realpathSync(p); } catch { return path.resolve(p); } };
  const self = real(__filename);
  const isSelf = (p) => p !== undefined && real(p) === self;

  const tokens = splitNodeOptions(env.NODE_OPTIONS || '');
  const kept = [];
  for (let i = 0; i < tokens.length; i++) {
    const v = tokens[i].value;
    if ((v === '--require' || v === '-r') && isSelf(tokens[i + 1] && tokens[i + 1].value)) i++;
    else if (!(v.startsWith('--require=') && isSelf(v.slice(10)))) kept.push(tokens[i].raw);
  }
  if (kept.length === tokens.length) return;
  if (kept.length) env.NODE_OPTIONS = kept.join(' ');
  else delete env.NODE_OPTIONS;
  debug(`NODE_OPTIONS for children: ${JSON.stringify(env.NODE_OPTIONS || '')}`);
}

// Node's own NODE_OPTIONS splitting: spaces separate, "double quotes" group, and a
// backslash inside quotes escapes the next character. `raw` keeps the quoting.
function splitNodeOptions(s) {
  const tokens = [];
  let value = null;
  let raw = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === ' ' && !quoted) {
      if (value !== null) tokens.push({ value, raw });
      value = null;
      continue;
    }
    if (value === null) { value = ''; raw = ''; }
    raw += c;
    if (c === '\\' && quoted && i + 1 < s.length) { value += s[++i]; raw += s[i]; }
    else if (c === '"') quoted = !quoted;
    else value += c;
  }
  if (value !== null) tokens.push({ value, raw });
  return tokens;
}

// withHttp false: only https servers drain (rescue covers plain http).
function patchHttpServers(withHttp) {
  const http = require('http');
  const https = require('https');
  const grace = Number.isFinite(Number(env.HOTSWAP_DRAIN_GRACE_MS)) && env.HOTSWAP_DRAIN_GRACE_MS !== ''
    ? Number(env.HOTSWAP_DRAIN_GRACE_MS) : 1000;
  const kConns = Symbol('hotswap.connections');   // on a server: its open sockets
  const kDraining = Symbol('hotswap.draining');   // on a server or a socket
  const kTimer = Symbol('hotswap.graceTimer');    // on a socket

  // Decides what a draining connection still needs: nothing once it is gone;
  // nothing for an upgraded one (WebSocket: no parser left, the app owns it, as in
  // stock Node); if a response is under way, look again when it is done (its
  // `Connection: close` makes Node close the socket after it); if idle, a grace in
  // which a request the client already sent is still answered.
  function settle(socket) {
    if (socket.destroyed || !socket.parser) return;
    const res = socket._httpMessage;
    if (res) {
      res.once('close', () => settle(socket));
    } else if (!socket[kTimer]) {
      socket[kTimer] = setTimeout(() => {
        socket[kTimer] = null;
        if (socket._httpMessage) settle(socket);
        else socket.destroy();
      }, grace).unref();
    }
  }

  function drain(server) {
    if (server[kDraining] || !server[kConns]) return;
    server[kDraining] = true;
    debug(`server closing: draining ${server[kConns].size} connection(s), grace ${grace} ms`);
    for (const socket of server[kConns]) {
      socket[kDraining] = true;
      settle(socket);
    }
  }

  // https.Server is a tls.Server, not an http.Server: patch both prototypes. The
  // http parser sits on the TLS socket, which 'secureConnection' hands over.
  const servers = [[http.Server, 'connection'], [https.Server, 'secureConnection']].slice(withHttp ? 0 : 1);
  for (const [Server, event] of servers) {
    const proto = Server.prototype;
    const { listen, close, closeIdleConnections } = proto;

    // Servers are tracked from listen() on: createServer() builds them through a
    // module-internal constructor that cannot be wrapped.
    proto.listen = function hotswapListen(...args) {
      this[kDraining] = false;
      if (!this[kConns]) {
        const conns = this[kConns] = new Set();
        this.on(event, (socket) => {
          conns.add(socket);
          socket.once('close', () => { clearTimeout(socket[kTimer]); conns.delete(socket); });
          if (this[kDraining]) { socket[kDraining] = true; settle(socket); }
        });
      }
      return listen.apply(this, args);
    };

    // The stock close() still runs whole (it closes the listening handle at once,
    // which in a cluster worker also tells the primary); only its
    // closeIdleConnections() call is neutralised below while draining.
    proto.close = function hotswapClose(...args) {
      drain(this);
      return close.apply(this, args);
    };

    // Called by close() itself (Node 19+) and by frameworks right after close()
    // (Fastify): while draining, idle connections are already handled by settle().
    // closeAllConnections() is left alone: an app that calls it wants them gone.
    if (closeIdleConnections) {
      proto.closeIdleConnections = function hotswapCloseIdleConnections(...args) {
        if (this[kDraining]) return;
        return closeIdleConnections.apply(this, args);
      };
    }
  }

  // Every response goes through writeHead() (res.end() without it calls
  // _implicitHeader(), which calls writeHead()): the last moment to make it the
  // connection's last one. Node then writes `Connection: close` and closes the
  // socket once the response is finished.
  const { writeHead } = http.ServerResponse.prototype;
  http.ServerResponse.prototype.writeHead = function hotswapWriteHead(...args) {
    if (this.req && this.req.socket && this.req.socket[kDraining]) this.shouldKeepAlive = false;
    return writeHead.apply(this, args);
  };
}

function patchIpc(ready) {
  if (typeof process.send !== 'function') return;
  const { send, disconnect } = process;
  let dropped = 0;

  process.send = function hotswapSend(message, handle, options, callback) {
    // Accepting starts before the primary hears it, which then retires an
    // old worker.
    if (message === 'ready' || (message !== null && typeof message === 'object' && message.type === 'listening')) {
      ready();
    }
    if (typeof handle === 'function') { callback = handle; handle = undefined; options = undefined; }
    else if (typeof options === 'function') { callback = options; options = undefined; }
    const hasCallback = typeof callback === 'function';
    // With a callback Node reports a closed channel to it and never crashes.
    if (!process.connected && !hasCallback) {
      if (dropped++ === 0) debug('process.send() after the IPC channel closed: dropped (logged once)');
      return false;
    }
    // The primary may close the channel while we write (EPIPE): without a callback,
    // Node would turn that into an 'error' event on process too. (A cluster worker
    // always has an 'error' listener, which rethrows it on cluster.worker.)
    if (!hasCallback && (options === undefined || (options !== null && typeof options === 'object'))) {
      options = { ...options, swallowErrors: true };
    }
    return send.call(this, message, handle, options, callback);
  };

  // Closing the channel cancels the writes still queued in it (libuv): the
  // messages a draining worker sent last (a request counter's, a log
  // line's) would never reach the app's primary. Wait until they are out
  // (at most 20 s; the stop signal comes at half --shutdown-timeout anyway).
  let closing = false;
  process.disconnect = function hotswapDisconnect(...args) {
    if (!process.connected || closing) return undefined;
    const queued = () => process.channel && process.channel.writeQueueSize > 0;
    if (!queued()) return disconnect.apply(this, args);
    closing = true;
    const until = Date.now() + 20000;
    const retry = () => {
      if (queued() && Date.now() < until) return setTimeout(retry, 5);
      closing = false;
      if (process.connected) disconnect.apply(process, args);
    };
    debug('disconnect waits for the messages still queued on the channel');
    setTimeout(retry, 5);
    return undefined;
  };
}
