'use strict';
// Node.js's own cluster module as the supervisor: a primary that forks N
// workers running the unchanged hotswap example worker (through shim.js).
//
//   node cluster.js rr|none PORT N
//
// rr   = cluster.SCHED_RR   (the primary accepts and hands each connection to a
//                            worker, round-robin; Node's default on Linux)
// none = cluster.SCHED_NONE (the workers accept on one shared socket)
//
// SIGTERM/SIGINT: every worker gets {"type":"shutdown"} (worker.js drains);
// the primary exits when the last worker has. No reload here: Node's cluster
// has no rolling reload of its own.
const path = require('node:path');
const cluster = require('node:cluster');

const [policy, port, n] = process.argv.slice(2);
if (!['rr', 'none'].includes(policy) || !Number(port)) {
  console.error('usage: node cluster.js rr|none PORT [N]');
  process.exit(2);
}
cluster.schedulingPolicy = policy === 'rr' ? cluster.SCHED_RR : cluster.SCHED_NONE;
cluster.setupPrimary({ exec: path.join(__dirname, 'shim.js') });

const workers = Number(n || 2);
for (let i = 0; i < workers; i++) {
  cluster.fork({ BENCH_PORT: String(port), BENCH_ADAPTER: 'cluster' });
}

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  for (const w of Object.values(cluster.workers)) {
    try { w.send({ type: 'shutdown' }); } catch { /* already gone */ }
  }
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
cluster.on('exit', (w, code, signal) => {
  if (!stopping) console.error(`cluster primary: worker ${w.id} exited (${code ?? signal}) unexpectedly`);
  if (Object.keys(cluster.workers).length === 0) process.exit(0);
});
