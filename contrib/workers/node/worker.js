#!/usr/bin/env node
// Example hotswap worker in Node.js (core modules only).
//
// It serves a tiny HTTP/1.1 app on the listening socket inherited as fd 3 and
// talks to the hotswap primary with process.send() / process.on('message'):
// hotswap sets NODE_CHANNEL_FD, so Node's built-in IPC channel is the hotswap
// channel (see docs/protocol.md).
//
// How it drains on {"type":"shutdown"} (or when the channel closes):
//
//   * It does NOT call server.close(). Since Node 19, http.Server#close() also
//     calls closeIdleConnections(), which destroys every idle keep-alive
//     connection at once. A client may already have written its next request
//     on such a connection; that request would be lost (the client sees a
//     reset or an empty reply) although the worker was still able to answer.
//   * Instead it calls net.Server.prototype.close on the server: this only
//     closes this process's copy of the listening socket (close(), never
//     shutdown(): the socket is shared with the other workers, which keep
//     accepting from it).
//   * Each open connection then answers exactly one more request, with
//     `Connection: close`, after which Node closes it. A connection that stays
//     idle for 1 s after the drain began is destroyed.
//   * Once the listener is closed and no connection is left, the process exits
//     with process.exit(0) (the IPC channel might otherwise keep it alive).
//
// Env: HOTSWAP_GENERATION, HOTSWAP_WORKER_ID, EXAMPLE_STARTUP_MS (delay before
// listening and reporting ready), EXAMPLE_STARTUP_CPU_MS (then this long of
// busy CPU work, as loading modules or filling caches would be),
// EXAMPLE_RESPONSE_DELAY_MS (delay per response).
// Extra endpoints for IPC tests: GET /broadcast?data=X, GET /send?to=ID&data=X,
// GET /inbox (JSON array of the IPC messages received so far).
'use strict';

const http = require('node:http');
const net = require('node:net');

const GENERATION = process.env.HOTSWAP_GENERATION || '0';
const WORKER_ID = process.env.HOTSWAP_WORKER_ID || '0';
const STARTUP_MS = Number(process.env.EXAMPLE_STARTUP_MS || 0);
const STARTUP_CPU_MS = Number(process.env.EXAMPLE_STARTUP_CPU_MS || 0);
const RESPONSE_DELAY_MS = Number(process.env.EXAMPLE_RESPONSE_DELAY_MS || 0);
const DRAIN_IDLE_MS = 1000;
const KEEPALIVE_TIMEOUT_MS = 10000;

function log(msg) {
  console.log(`[node worker ${WORKER_ID} gen ${GENERATION} pid ${process.pid}] ${msg}`);
}

if (process.env.LISTEN_PID !== String(process.pid) || Number(process.env.LISTEN_FDS || 0) < 1) {
  console.error(`no listening socket passed: LISTEN_PID=${process.env.LISTEN_PID} ` +
    `(own pid ${process.pid}), LISTEN_FDS=${process.env.LISTEN_FDS}; run me under hotswap`);
  process.exit(1);
}
if (typeof process.send !== 'function') {
  console.error('no IPC channel (NODE_CHANNEL_FD unset); run me under hotswap');
  process.exit(1);
}

const inbox = [];          // IPC messages received, for GET /inbox
const conns = new Map();   // socket -> { inflight, idleTimer }
let draining = false;
let listenerClosed = false;
let listening = false;

const server = http.createServer(handle);
server.keepAliveTimeout = KEEPALIVE_TIMEOUT_MS;

server.on('connection', (socket) => {
  const state = { inflight: 0, idleTimer: null };
  conns.set(socket, state);
  if (draining) armIdleTimer(socket, state); // accepted just before close
  socket.on('close', () => {
    clearTimeout(state.idleTimer);
    conns.delete(socket);
    maybeExit();
  });
});

function handle(req, res) {
  const socket = req.socket;
  const state = conns.get(socket) || { inflight: 0, idleTimer: null };
  state.inflight++;
  clearTimeout(state.idleTimer);
  state.idleTimer = null;
  res.on('close', () => {
    state.inflight--;
    // Headers sent before the drain began carried no `Connection: close`:
    // the connection stays open, give it the idle grace period.
    if (draining && !socket.destroyed) armIdleTimer(socket, state);
  });
  req.resume(); // read and discard any request body

  const url = new URL(req.url, 'http://worker');
  // setTimeout(fn, 0) still waits >= 1 ms: answer at once when there is no delay.
  if (RESPONSE_DELAY_MS > 0) setTimeout(() => respond(res, url), RESPONSE_DELAY_MS);
  else respond(res, url);
}

// Every method is answered like GET (Node omits the body for HEAD itself).
function respond(res, url) {
  switch (url.pathname) {
    case '/broadcast':
      ipcSend({ type: 'broadcast', data: url.searchParams.get('data') });
      return send(res, 200, 'text/plain', 'ok\n');
    case '/send':
      ipcSend({ type: 'send', to: Number(url.searchParams.get('to')),
                data: url.searchParams.get('data') });
      return send(res, 200, 'text/plain', 'ok\n');
    case '/inbox':
      return send(res, 200, 'application/json', JSON.stringify(inbox));
    default:
      return send(res, 200, 'text/plain',
        `generation=${GENERATION} worker=${WORKER_ID} pid=${process.pid}\n`);
  }
}

function send(res, status, contentType, body) {
  const buf = Buffer.from(body);
  const headers = {
    'Content-Type': contentType,
    'Content-Length': buf.length,
    'X-Hotswap-Generation': GENERATION,
    'X-Hotswap-Worker': WORKER_ID,
  };
  // Last answer on this connection: Node closes the socket after it.
  if (draining) headers.Connection = 'close';
  res.writeHead(status, headers);
  res.end(buf);
}

// process.send() on a closed channel emits 'error' on process, which would
// crash the worker: the primary may already be gone while we drain.
function ipcSend(msg) {
  if (process.connected) process.send(msg);
}

function armIdleTimer(socket, state) {
  if (state.inflight > 0 || state.idleTimer) return;
  state.idleTimer = setTimeout(() => socket.destroy(), DRAIN_IDLE_MS);
}

function drain(reason) {
  if (draining) return;
  draining = true;
  log(`draining (${reason}), ${conns.size} connection(s) open`);
  if (listening) {
    // Not server.close(): see the comment at the top.
    net.Server.prototype.close.call(server, () => { listenerClosed = true; maybeExit(); });
  } else {
    listenerClosed = true; // still starting up: never listened
  }
  for (const [socket, state] of conns) armIdleTimer(socket, state);
  maybeExit();
}

function maybeExit() {
  if (draining && listenerClosed && conns.size === 0) {
    log('drained, exiting');
    process.exit(0);
  }
}

process.on('message', (msg) => {
  if (msg && msg.type === 'shutdown') return drain('shutdown received');
  log(`received ${JSON.stringify(msg)}`);
  inbox.push(msg);
});
process.on('disconnect', () => drain('IPC channel closed'));
process.on('SIGTERM', () => drain('SIGTERM'));

setTimeout(() => {
  if (draining) return maybeExit();
  let work = 0;
  for (const until = Date.now() + STARTUP_CPU_MS; Date.now() < until; ) work += Math.sqrt(work + 1);
  server.listen({ fd: 3 }, () => {
    log(`listening on fd 3 (generation ${GENERATION}, worker ${WORKER_ID})`);
    ipcSend({ type: 'listening' });
  });
  listening = true; // the handle exists from here on (listen on an fd is synchronous)
}, STARTUP_MS);
