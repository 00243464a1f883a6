// Socket.IO clients (polling, then the WebSocket upgrade: the library's
// defaults, reconnection on) for tests/it/node_primary.rs. Driven by lines
// on stdin, it answers with one JSON line on stdout each:
//
//   node socketio-broadcast-client.js --url http://127.0.0.1:PORT --clients K
//
// - at start, once every client has connected: {"connected":K}
// - `round N`: waits until every client is connected and has a message
//   answered (a reload's retired worker drops its clients, which reconnect
//   through the app's primary),
//   has one client ask its worker to `io.emit` news N, and answers
//   {"round":N,"received":R,"connected":C,"from":PID} once every client got
//   it or 15 s passed;
// - stdin closed: {"done":true,"connectErrors":E,"connectErrorTexts":[...],
//   "disconnects":D,"workers":[pids]}.
// A `connect_error` (a handshake that failed) is counted, never retried
// silently: the test wants none.
'use strict';

const { io } = require('socket.io-client');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const url = opt('--url');
const count = Number(opt('--clients', '10'));
if (!url) throw new Error('--url is required');

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let connectErrors = 0;
let disconnects = 0;
const errors = [];
const workers = new Set();
const reasons = {};
const connectErrorTexts = [];

const clients = [];
function connect() {
  const c = io(url, { forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 500, timeout: 20000 });
  c.news = new Set();
  c.on('connect_error', (e) => {
    connectErrors += 1;
    const d = e && e.description;
    const body = e && e.context && e.context.responseText;
    connectErrorTexts.push(`${e && e.message}${d !== undefined ? ` (${d && d.message || d})` : ''}${body ? ': ' + body : ''}`);
  });
  c.on('disconnect', (reason, d) => {
    disconnects += 1;
    const why = `${reason}${d && d.description ? ': ' + (d.description.message || d.description) : ''}${d && d.context && d.context.responseText ? ' ' + d.context.responseText : ''}`;
    reasons[why] = (reasons[why] || 0) + 1;
  });
  c.on('news', (m) => c.news.add(m.n));
  clients.push(c);
  return c;
}

async function until(check, ms) {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await sleep(20);
  return check();
}
const connected = () => clients.filter((c) => c.connected).length;

async function round(n) {
  await until(() => connected() === count, 20000);
  // Every client has a live session: one on a retired worker learns it
  // only when its connection closes (hotswap's rescue may hold it open a
  // moment), then reconnects; its echo waits for that.
  await Promise.all(clients.map(async (c) => {
    for (let i = 0; i < 30; i++) {
      try { await c.timeout(3000).emitWithAck('echo', -n); return; } catch { await sleep(100); }
    }
  }));
  // The asker may be on a worker that a reload just retired, its client
  // not told yet: then another one asks (counted in `asked`).
  let from = null;
  let asked = 0;
  while (from === null && asked < 5) {
    asked += 1;
    const on = clients.filter((c) => c.connected);
    const asker = on[(n + asked) % on.length];
    if (!asker) { await sleep(200); continue; }
    try {
      from = (await asker.timeout(5000).emitWithAck('shout', n)).pid;
      workers.add(from);
    } catch (e) {
      errors.push(`shout ${n}: ${e.message}`);
      await sleep(200);
    }
  }
  await until(() => clients.every((c) => c.news.has(n)), 15000);
  // Which worker each client's session is on: the news crossed workers.
  const on = new Set();
  await Promise.all(clients.map(async (c) => {
    try { on.add((await c.timeout(10000).emitWithAck('echo', n)).pid); } catch { /* counted below */ }
  }));
  out({
    round: n, received: clients.filter((c) => c.news.has(n)).length, connected: connected(), from,
    workers: on.size, asked, errors: errors.slice(-5), reasons,
  });
}

(async () => {
  // One after the other, so that sticky's least-connection count (told by
  // each worker once a session opens) spreads them over the workers.
  for (let i = 0; i < count; i++) {
    const c = connect();
    await until(() => c.connected, 20000);
  }
  await until(() => connected() === count, 30000);
  out({ connected: connected() });
  const rl = require('readline').createInterface({ input: process.stdin });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    const m = /^round (\d+)$/.exec(line.trim());
    if (m) chain = chain.then(() => round(Number(m[1])));
  });
  rl.on('close', () => chain.then(() => {
    out({ done: true, connectErrors, connectErrorTexts, disconnects, errors: errors.slice(-10), workers: [...workers] });
    clients.forEach((c) => c.close());
    process.exit(0);
  }));
})();
