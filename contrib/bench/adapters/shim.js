'use strict';
// Runs the UNCHANGED hotswap example worker (contrib/workers/node/worker.js)
// under Node's cluster module or PM2 cluster mode, so that every contender in
// the benchmark serves the very same request handler and drains the very same
// way. Only the plumbing differs; this file adapts it:
//
//   * the listener: worker.js calls server.listen({ fd: 3 }) (hotswap hands it
//     the shared socket at fd 3). Here that call becomes
//     listen({ host: '127.0.0.1', port: BENCH_PORT }), which inside a cluster
//     worker (plain cluster or PM2) asks the cluster primary for the socket:
//     SCHED_RR (primary accepts, hands connections round-robin) or SCHED_NONE
//     (the workers accept on one shared socket).
//   * LISTEN_PID / LISTEN_FDS, which worker.js checks, are set to match.
//   * ready: worker.js sends {"type":"listening"}; PM2's wait_ready waits for
//     the bare string 'ready' (process.send('ready')), so under PM2 that is
//     what goes out instead.
//   * drain: PM2 stops/reloads a worker with SIGINT (its kill_signal; or the
//     'shutdown' message with shutdown_with_message). Both are turned into the
//     {"type":"shutdown"} message worker.js drains on: stop accepting (close
//     this process's listener only, not server.close(), so idle keep-alive
//     sockets stay open), answer each connection's next request with
//     `Connection: close`, close idle connections after 1 s, exit.
//
// Env: BENCH_PORT (required), BENCH_ADAPTER = cluster | pm2.
const path = require('node:path');
const net = require('node:net');
const cluster = require('node:cluster');

const PORT = Number(process.env.BENCH_PORT);
const ADAPTER = process.env.BENCH_ADAPTER || 'cluster';
if (!PORT) {
  console.error('shim.js: BENCH_PORT is not set');
  process.exit(1);
}

process.env.LISTEN_PID = String(process.pid);
process.env.LISTEN_FDS = '1';
if (ADAPTER === 'pm2') {
  process.env.HOTSWAP_WORKER_ID = String(process.env.pm_id ?? process.env.NODE_APP_INSTANCE ?? '0');
  process.env.HOTSWAP_GENERATION = String(Number(process.env.restart_time || 0) + 1);
} else {
  process.env.HOTSWAP_WORKER_ID = String(cluster.worker ? cluster.worker.id : 0);
  process.env.HOTSWAP_GENERATION = process.env.HOTSWAP_GENERATION || '1';
}

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const o = args[0];
  if (o && typeof o === 'object' && o.fd === 3) {
    args[0] = { host: '127.0.0.1', port: PORT };
  }
  return listen.apply(this, args);
};

if (ADAPTER === 'pm2') {
  const send = process.send.bind(process);
  process.send = (msg, ...rest) => {
    if (msg && msg.type === 'listening') msg = 'ready';
    return send(msg, ...rest);
  };
}

const shutdown = () => process.emit('message', { type: 'shutdown' });
process.on('SIGINT', shutdown);
process.on('message', (msg) => { if (msg === 'shutdown') shutdown(); });

require(path.join(__dirname, '..', '..', 'workers', 'node', 'worker.js'));
