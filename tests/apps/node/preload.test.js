// Tests of src/node/preload.js with Node's own test runner:
//   node --test tests/apps/node/preload.test.js
// Each test runs a real Node process (the preload loaded from NODE_OPTIONS, as
// hotswap sets it) and talks to it over raw loopback sockets, so exactly what goes
// over the wire and when the server closes the connection is checked.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { spawn, fork } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');

const PRELOAD = path.resolve(__dirname, '..', '..', '..', 'src', 'node', 'preload.js');
const KEY = path.join(__dirname, 'tls', 'key.pem');
const CERT = path.join(__dirname, 'tls', 'cert.pem');

const cleanEnv = {};
for (const [k, v] of Object.entries(process.env)) {
  if (!k.startsWith('HOTSWAP_') && k !== 'NODE_OPTIONS' && !k.startsWith('NODE_TEST')) cleanEnv[k] = v;
}
const preloadEnv = (extra = {}) => ({
  ...cleanEnv, HOTSWAP_NODE_PRELOAD: '1', NODE_OPTIONS: `--require ${JSON.stringify(PRELOAD)}`, ...extra,
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The server under test. Commands on stdin; JSON events on stdout.
const SERVER = `
const tlsOn = process.env.T_TLS === '1';
const http = require(tlsOn ? 'https' : 'http');
const fs = require('fs');
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const options = tlsOn ? { key: fs.readFileSync(process.env.T_KEY), cert: fs.readFileSync(process.env.T_CERT) } : {};
let closing = false;
const afterClose = (fn) => { const t = setInterval(() => { if (closing) { clearInterval(t); fn(); } }, 10); };
const server = http.createServer(options, (req, res) => {
  out({ request: req.url });
  // /slow and /stream finish only once close() was called.
  if (req.url === '/slow') return afterClose(() => res.end('slow'));
  if (req.url === '/stream') {
    res.writeHead(200, { 'Content-Length': 2 });
    res.write('o');
    return afterClose(() => res.end('k'));
  }
  res.end('ok');
});
server.on('upgrade', (req, socket) => {
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: echo\\r\\n\\r\\n');
  socket.on('data', (d) => socket.write(d));
  socket.on('end', () => socket.end());
});
server.listen(0, '127.0.0.1', () => out({ port: server.address().port, patched: http.Server.prototype.close.name }));
process.stdin.setEncoding('utf8');
process.stdin.on('data', (data) => {
  for (const cmd of data.trim().split('\\n')) {
    if (cmd === 'close') {
      server.close((err) => { out({ closed: true, err: err ? err.code : null }); process.exit(0); });
      closing = true;
      out({ closing: true });
    }
    if (cmd === 'closeAll') server.closeAllConnections();
  }
});
`;

function startServer(env) {
  const child = spawn(process.execPath, ['-e', SERVER], {
    env: { T_KEY: KEY, T_CERT: CERT, ...env }, stdio: ['pipe', 'pipe', 'inherit'],
  });
  const events = [];
  let waiters = [];
  let buf = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const ev = { ...JSON.parse(buf.slice(0, i)), at: Date.now() };
      buf = buf.slice(i + 1);
      events.push(ev);
      waiters = waiters.filter((w) => !(w.pred(ev) && (w.resolve(ev), true)));
    }
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 20000);
  child.on('exit', () => clearTimeout(killer));
  return {
    child,
    cmd: (c) => child.stdin.write(`${c}\n`),
    next: (pred) => new Promise((resolve) => {
      const ev = events.find(pred);
      if (ev) resolve(ev); else waiters.push({ pred, resolve });
    }),
    exited: new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal }))),
  };
}

function connect(port, useTls) {
  return new Promise((resolve, reject) => {
    const sock = useTls
      ? tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: fs.readFileSync(CERT) })
      : net.connect(port, '127.0.0.1');
    sock.setEncoding('utf8');
    sock.closedAt = new Promise((r) => sock.on('close', () => r(Date.now())));
    sock.on('error', () => {}); // surfaces as 'close' / a failed read
    sock.once(useTls ? 'secureConnect' : 'connect', () => resolve(sock));
    sock.once('error', reject);
  });
}

// One request on a raw connection; resolves with the parsed response.
function request(sock, urlPath = '/', extra = '') {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d) => {
      buf += d;
      const i = buf.indexOf('\r\n\r\n');
      if (i < 0) return;
      const head = buf.slice(0, i);
      const len = Number((/\r\ncontent-length: *(\d+)/i.exec(head) || [0, 0])[1]);
      if (buf.length < i + 4 + len) return;
      done();
      const connection = (/\r\nconnection: *([^\r]*)/i.exec(head) || [null, null])[1];
      resolve({ status: Number(head.split(' ')[1]), connection, body: buf.slice(i + 4, i + 4 + len) });
    };
    const onClose = () => { done(); reject(new Error(`connection closed before a response (got ${JSON.stringify(buf)})`)); };
    const done = () => { sock.off('data', onData); sock.off('close', onClose); };
    sock.on('data', onData);
    sock.on('close', onClose);
    sock.write(`GET ${urlPath} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`);
  });
}

for (const useTls of [false, true]) {
  const scheme = useTls ? 'https' : 'http';
  test(`${scheme}: close() stops accepting at once, and a request sent on an idle keep-alive connection afterwards is answered with Connection: close`, async () => {
    const srv = startServer(preloadEnv({ T_TLS: useTls ? '1' : '0' }));
    const { port, patched } = await srv.next((e) => e.port);
    assert.strictEqual(patched, 'hotswapClose');
    const sock = await connect(port, useTls);
    const first = await request(sock);
    assert.deepStrictEqual([first.status, first.connection], [200, 'keep-alive']);

    srv.cmd('close');
    await srv.next((e) => e.closing);
    await sleep(200); // the connection is idle all this time: stock Node 19+ destroys it at once
    await assert.rejects(connect(port, useTls), { code: 'ECONNREFUSED' });
    const second = await request(sock);
    assert.deepStrictEqual([second.status, second.connection, second.body], [200, 'close', 'ok']);
    const closedAt = await sock.closedAt;
    const closed = await srv.next((e) => e.closed);
    assert.strictEqual(closed.err, null);
    assert.ok(closed.at >= closedAt - 50, 'close callback only after the last connection closed');
    assert.strictEqual((await srv.exited).code, 0);
  });
}

test('an idle connection is closed after the grace (HOTSWAP_DRAIN_GRACE_MS), then close() completes', async () => {
  const srv = startServer(preloadEnv({ HOTSWAP_DRAIN_GRACE_MS: '400' }));
  const { port } = await srv.next((e) => e.port);
  const sock = await connect(port);
  await request(sock);
  srv.cmd('close');
  const { at: t0 } = await srv.next((e) => e.closing);
  const elapsed = (await sock.closedAt) - t0;
  assert.ok(elapsed >= 300 && elapsed < 3000, `closed after ${elapsed} ms, want about 400`);
  await srv.next((e) => e.closed);
});

test('a response under way at close() carries Connection: close', async () => {
  const srv = startServer(preloadEnv());
  const { port } = await srv.next((e) => e.port);
  const sock = await connect(port);
  const pending = request(sock, '/slow');
  await srv.next((e) => e.request === '/slow');
  srv.cmd('close');
  const res = await pending;
  assert.deepStrictEqual([res.status, res.connection, res.body], [200, 'close', 'slow']);
  await sock.closedAt;
  await srv.next((e) => e.closed);
});

test('a response whose headers went out before close(): the connection answers one more request, with Connection: close', async () => {
  const srv = startServer(preloadEnv());
  const { port } = await srv.next((e) => e.port);
  const sock = await connect(port);
  const pending = request(sock, '/stream');
  await srv.next((e) => e.request === '/stream');
  srv.cmd('close');
  const res = await pending;
  assert.deepStrictEqual([res.status, res.connection, res.body], [200, 'keep-alive', 'ok']);
  await sleep(200);
  const next = await request(sock);
  assert.deepStrictEqual([next.status, next.connection], [200, 'close']);
  await srv.next((e) => e.closed);
});

test('closeAllConnections() still closes every connection at once', async () => {
  const srv = startServer(preloadEnv({ HOTSWAP_DRAIN_GRACE_MS: '10000' }));
  const { port } = await srv.next((e) => e.port);
  const sock = await connect(port);
  await request(sock);
  const t0 = Date.now();
  srv.cmd('close\ncloseAll');
  const elapsed = (await sock.closedAt) - t0;
  assert.ok(elapsed < 2000, `closed after ${elapsed} ms`);
  await srv.next((e) => e.closed);
});

test('an upgraded connection (WebSocket-like) is left to the app, as in stock Node', async () => {
  const srv = startServer(preloadEnv({ HOTSWAP_DRAIN_GRACE_MS: '200' }));
  const { port } = await srv.next((e) => e.port);
  const sock = await connect(port);
  const res = await new Promise((resolve) => {
    sock.once('data', resolve);
    sock.write('GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n');
  });
  assert.match(res, /^HTTP\/1.1 101/);
  srv.cmd('close');
  await srv.next((e) => e.closing);
  await sleep(600);
  const echo = await new Promise((resolve) => { sock.once('data', resolve); sock.write('ping'); });
  assert.strictEqual(echo, 'ping');
  sock.end();
  await srv.next((e) => e.closed);
});

test('outside a hotswap worker the preload does nothing', async () => {
  const srv = startServer({ ...cleanEnv, NODE_OPTIONS: `--require ${JSON.stringify(PRELOAD)}` });
  const { patched } = await srv.next((e) => e.port);
  assert.notStrictEqual(patched, 'hotswapClose');
  srv.cmd('close');
  await srv.next((e) => e.closed);
});

test('the preload removes itself from NODE_OPTIONS, keeps the rest, and children do not load it', async () => {
  // A path with a space, to exercise NODE_OPTIONS quoting.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hotswap preload '));
  const copy = path.join(dir, 'preload.js');
  fs.copyFileSync(PRELOAD, copy);
  const probe = `
    const { execFileSync } = require('child_process');
    const loaded = () => Boolean(process[Symbol.for('hotswap.preload')]);
    const child = execFileSync(process.execPath, ['-e',
      'process.stdout.write(JSON.stringify([Boolean(process[Symbol.for("hotswap.preload")]), process.env.NODE_OPTIONS ?? null]))',
    ]).toString();
    process.stdout.write(JSON.stringify({ loaded: loaded(), options: process.env.NODE_OPTIONS ?? null, child: JSON.parse(child) }));`;
  const q = JSON.stringify(copy);
  const cases = [
    [`--require ${q}`, null],
    [`--max-old-space-size=100 -r ${q} --no-warnings`, '--max-old-space-size=100 --no-warnings'],
    [`--title="a b" --require=${q}`, '--title="a b"'],
  ];
  try {
    for (const [options, kept] of cases) {
      const out = await new Promise((resolve, reject) => {
        const p = spawn(process.execPath, ['-e', probe], {
          env: { ...cleanEnv, HOTSWAP_NODE_PRELOAD: '1', NODE_OPTIONS: options }, stdio: ['ignore', 'pipe', 'inherit'],
        });
        let s = '';
        p.stdout.on('data', (d) => { s += d; });
        p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(s)) : reject(new Error(`exit ${code}`))));
      });
      assert.deepStrictEqual(out, { loaded: true, options: kept, child: [false, kept] }, options);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// The app of the IPC tests: after the channel closed it keeps calling
// process.send() (as PM2 metrics do) and process.disconnect().
const IPC_APP = `
process.on('message', () => {
  process.disconnect();
  process.send({ type: 'metric', value: 1 });
  process.send('after', (err) => console.log('callback: ' + (err && err.code)));
  process.disconnect();
  setTimeout(() => { process.send({ type: 'metric', value: 2 }); console.log('still alive'); }, 100);
});
`;

function runIpcApp(env) {
  return new Promise((resolve) => {
    const file = path.join(os.tmpdir(), `hotswap-ipc-app-${process.pid}.js`);
    fs.writeFileSync(file, IPC_APP);
    const p = fork(file, [], { env, silent: true });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.send('go');
    const killer = setTimeout(() => p.kill('SIGKILL'), 10000);
    p.on('exit', (code) => { clearTimeout(killer); fs.rmSync(file, { force: true }); resolve({ code, out }); });
  });
}

test('process.send() and process.disconnect() after the channel closed do not crash the app', async () => {
  const { code, out } = await runIpcApp(preloadEnv());
  assert.strictEqual(code, 0, out);
  assert.match(out, /callback: ERR_IPC_CHANNEL_CLOSED/);
  assert.match(out, /still alive/);
});

test('(reference) without the preload the same app crashes', async () => {
  const { code, out } = await runIpcApp(cleanEnv);
  assert.strictEqual(code, 1);
  assert.match(out, /ERR_IPC_DISCONNECTED|ERR_IPC_CHANNEL_CLOSED/);
});
