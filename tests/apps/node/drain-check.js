#!/usr/bin/env node
// Proves that src/node/preload.js makes unchanged Node apps drain without failing a
// request, with real processes and real keep-alive load. No hotswap needed.
//
//   node tests/apps/node/drain-check.js                  # naive app, 10 swaps, both ways
//   node tests/apps/node/drain-check.js --app express-app.js --mode with
//
// The stand-in for hotswap is Node's own cluster primary with SCHED_NONE: it
// creates the listening socket once and hands that very socket (as a handle over
// the IPC channel, answering each worker's `queryServer`) to every worker, which
// all accept on it, exactly as hotswap does. So there are always two workers
// accepting on the same socket and a swap refuses no connection: every failed
// request is one the stopping worker lost.
//
// Each run: start 2 workers, drive keep-alive load from --loops request loops
// (each its own http.Agent with keepAlive and one socket), then --rounds times:
// fork a fresh worker, wait until it listens, and stop the oldest one the way
// hotswap will: Node's cluster `disconnect` (the worker closes its servers, then
// its end of the channel), then the string message 'shutdown' (PM2 convention;
// after `disconnect`, because an app that closes a server on 'shutdown' before
// cluster does takes it out of cluster's list, and cluster then closes the channel
// mid-drain), the stop signal --stop-after-ms after the channel closed if the
// worker still runs, SIGKILL at --kill-after-ms.
// --trigger message instead sends 'close-server', on which the built-in naive app
// calls server.close() itself (and exits from its close callback).
//
// A run is done twice: without the preload and with it (NODE_OPTIONS=--require,
// as hotswap sets it). Exit code: 0 when the run(s) with the preload failed no
// request and lost no worker to a crash, 1 otherwise.
'use strict';

const cluster = require('cluster');
const http = require('http');

// ---- the naive app (a cluster worker running this very file) ----
if (cluster.isWorker && process.env.DRAIN_CHECK_NAIVE_APP === '1') {
  const server = http.createServer((req, res) => {
    res.end(`naive app pid=${process.pid} v=${process.env.APP_VERSION}\n`);
  }).listen(process.env.PORT);
  process.on('message', (msg) => {
    if (msg === 'close-server') server.close(() => process.exit(0));
  });
  return;
}

const fs = require('fs');
const https = require('https');
const net = require('net');
const path = require('path');

const PRELOAD = path.resolve(__dirname, '..', '..', '..', 'src', 'node', 'preload.js');
const TLS_CA = fs.readFileSync(path.join(__dirname, 'tls', 'cert.pem'));

const opts = {
  app: null, mode: 'both', rounds: 10, loops: 8, trigger: 'disconnect',
  stopSignal: 'SIGTERM', stopAfterMs: 1000, killAfterMs: 10000, metrics: false, verbose: false,
};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const val = () => process.argv[++i];
  if (a === '--app') opts.app = path.resolve(__dirname, val());
  else if (a === '--mode') opts.mode = val();
  else if (a === '--rounds') opts.rounds = Number(val());
  else if (a === '--loops') opts.loops = Number(val());
  else if (a === '--trigger') opts.trigger = val();
  else if (a === '--stop-signal') opts.stopSignal = val();
  else if (a === '--stop-after-ms') opts.stopAfterMs = Number(val());
  else if (a === '--kill-after-ms') opts.killAfterMs = Number(val());
  else if (a === '--metrics') opts.metrics = true;   // also load METRICS_PORT (two-servers.js)
  else if (a === '--verbose') opts.verbose = true;
  else { console.error(`unknown argument ${a}`); process.exit(2); }
}
if (!['both', 'with', 'without'].includes(opts.mode) || !['disconnect', 'message'].includes(opts.trigger)) {
  console.error('--mode both|with|without, --trigger disconnect|message'); process.exit(2);
}
if (opts.app && opts.trigger !== 'disconnect') {
  console.error('--trigger message needs the built-in naive app'); process.exit(2);
}
const TLS = opts.app !== null && /https/.test(path.basename(opts.app));

// Whatever this harness runs under must not leak into the workers.
for (const k of Object.keys(process.env)) if (k.startsWith('HOTSWAP_')) delete process.env[k];
const baseNodeOptions = process.env.NODE_OPTIONS || '';

// The primary binds what the workers ask for; keep it on loopback whatever they ask
// (hotswap binds its own `-l 127.0.0.1:PORT` and ignores the worker's address).
const createServerHandle = net._createServerHandle;
net._createServerHandle = (address, port, addressType, fd, flags) =>
  createServerHandle(fd >= 0 ? address : '127.0.0.1', port, fd >= 0 ? addressType : 4, fd, flags);

cluster.schedulingPolicy = cluster.SCHED_NONE;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    }).on('error', reject);
  });
}

// One request loop: back-to-back GETs on one keep-alive connection (a new one
// whenever the server closed it).
async function requestLoop(port, stats, stop) {
  const mod = TLS ? https : http;
  const agent = new mod.Agent({ keepAlive: true, maxSockets: 1, ...(TLS ? { ca: TLS_CA } : {}) });
  while (!stop.now) {
    const outcome = await new Promise((resolve) => {
      const req = mod.get({ host: '127.0.0.1', port, path: '/', agent, servername: 'localhost', timeout: 10000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { body += d; });
        res.on('end', () => {
          const m = /pid=(\d+)/.exec(body);
          if (res.statusCode !== 200 || !m) resolve({ error: `HTTP ${res.statusCode} ${JSON.stringify(body.slice(0, 80))}` });
          else resolve({ pid: m[1], connClose: res.headers.connection === 'close' });
        });
        res.on('error', (err) => resolve({ error: err.code || err.message }));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err) => resolve({ error: err.code || err.message }));
    });
    stats.total++;
    if (outcome.error) {
      stats.failed++;
      stats.errors[outcome.error] = (stats.errors[outcome.error] || 0) + 1;
    } else {
      stats.pids.add(outcome.pid);
      if (outcome.connClose) stats.connClose++;
    }
  }
  agent.destroy();
}

async function run(withPreload) {
  const port = await freePort();
  const metricsPort = await freePort();
  const env = { PORT: String(port), METRICS_PORT: String(metricsPort), NODE_OPTIONS: baseNodeOptions };
  if (withPreload) {
    env.HOTSWAP_NODE_PRELOAD = '1';
    env.NODE_OPTIONS = `${baseNodeOptions} --require ${JSON.stringify(PRELOAD)}`.trim();
  }
  if (!opts.app) env.DRAIN_CHECK_NAIVE_APP = '1';
  cluster.setupPrimary({ exec: opts.app || __filename, args: [], silent: true });

  const label = withPreload ? 'with preload' : 'without preload';
  const workers = [];
  const exits = { clean: 0, stopSignal: 0, killed: 0, crashed: 0 };
  const drainMs = [];
  let generation = 0;

  function start() {
    const worker = cluster.fork({ ...env, APP_VERSION: `v${++generation}` });
    const rec = { worker, stderr: '', signalled: false, exited: null };
    const prefix = `[${label} w${worker.id} ${worker.process.pid}] `;
    for (const stream of [worker.process.stdout, worker.process.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (d) => {
        if (stream === worker.process.stderr) rec.stderr += d;
        if (opts.verbose) process.stderr.write(d.replace(/^(?=.)/gm, prefix));
      });
    }
    rec.exited = new Promise((resolve) => worker.on('exit', (code, signal) => resolve({ code, signal })));
    rec.listening = new Promise((resolve, reject) => {
      worker.once('listening', resolve);
      rec.exited.then(() => reject(new Error(`worker exited before listening:\n${rec.stderr}`)));
    });
    workers.push(rec);
    return rec;
  }

  // Stop one worker: once its channel closed, give it stopAfterMs to exit on its
  // own, then the stop signal, then SIGKILL.
  async function retire(rec) {
    const { worker } = rec;
    const t0 = Date.now();
    const channelClosed = new Promise((resolve) => {
      if (!worker.process.connected) resolve(); else worker.process.once('disconnect', resolve);
    });
    // A worker with no connection left closes its channel at once after
    // `disconnect`: the 'shutdown' that follows may then meet EPIPE, which is fine.
    if (opts.trigger === 'message') worker.send('close-server');
    else { worker.disconnect(); worker.send('shutdown', () => {}); }
    const running = () => worker.process.exitCode === null && worker.process.signalCode === null;
    const killTimer = setTimeout(() => worker.process.kill('SIGKILL'), opts.killAfterMs);
    let stopTimer = null;
    channelClosed.then(() => {
      drainMs.push(Date.now() - t0);
      stopTimer = setTimeout(() => {
        if (running()) { rec.signalled = true; worker.process.kill(opts.stopSignal); }
      }, opts.stopAfterMs);
    });
    const { code, signal } = await rec.exited;
    clearTimeout(killTimer);
    clearTimeout(stopTimer);
    if (signal === 'SIGKILL') exits.killed++;
    else if (rec.signalled) exits.stopSignal++;
    else if (code === 0) exits.clean++;
    else if (exits.crashed++ === 0 || opts.verbose) {
      console.error(`${label}: worker ${worker.process.pid} crashed (code ${code}, signal ${signal}):\n` +
        rec.stderr.split('\n').filter((l) => /Error|^\s+at /.test(l)).slice(0, 3).map((l) => `    ${l}`).join('\n'));
    }
  }

  const stats = { total: 0, failed: 0, errors: {}, pids: new Set(), connClose: 0 };
  const stopLoad = { now: false };
  const t0 = Date.now();

  const first = [start(), start()];
  await Promise.all(first.map((r) => r.listening));
  const loops = [];
  for (let i = 0; i < opts.loops; i++) {
    const p = opts.metrics && i % 2 ? metricsPort : port;
    loops.push(requestLoop(p, stats, stopLoad));
  }
  await sleep(300);
  for (let round = 0; round < opts.rounds; round++) {
    const fresh = start();
    await fresh.listening;
    await sleep(50);
    const oldest = workers.find((r) => r !== fresh && !r.retiring);
    oldest.retiring = true;
    await retire(oldest);
    await sleep(100);
  }
  await sleep(300);
  stopLoad.now = true;
  await Promise.all(loops);
  await Promise.all(workers.filter((r) => !r.retiring).map((r) => { r.retiring = true; return retire(r); }));

  const errs = Object.entries(stats.errors).map(([k, v]) => `${k} ${v}`).join(', ');
  const median = drainMs.sort((a, b) => a - b)[Math.floor(drainMs.length / 2)];
  console.log(`${label}: ${stats.failed} failed of ${stats.total} requests${errs ? ` (${errs})` : ''}; ` +
    `${stats.connClose} answers carried Connection: close; ${stats.pids.size} worker pids answered; ` +
    `drain (stop request -> channel closed) median ${median} ms, max ${Math.max(...drainMs)} ms; ` +
    `worker exits: ${exits.clean} by themselves, ${exits.stopSignal} at the stop signal, ` +
    `${exits.crashed} crashed, ${exits.killed} killed; ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return { failed: stats.failed, crashed: exits.crashed + exits.killed, total: stats.total };
}

(async () => {
  // Everything stops by itself; this only guards against a bug in the harness.
  setTimeout(() => { console.error('drain-check: overall timeout'); process.exit(3); }, 300000).unref();
  console.log(`app: ${opts.app ? path.basename(opts.app) : 'naive http.createServer().listen(PORT)'}; ` +
    `node ${process.version}; ${opts.rounds} swaps; ${opts.loops} keep-alive request loops; ` +
    `trigger: ${opts.trigger === 'message' ? 'app calls server.close()' : "cluster disconnect, then 'shutdown'"}`);
  let ok = true;
  if (opts.mode === 'both' || opts.mode === 'without') await run(false);
  if (opts.mode === 'both' || opts.mode === 'with') {
    const r = await run(true);
    ok = r.failed === 0 && r.crashed === 0 && r.total > 0;
  }
  process.exit(ok ? 0 : 1);
})().catch((err) => { console.error(err); process.exit(1); });
