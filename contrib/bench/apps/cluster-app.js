'use strict';
// The classic app of every Node.js clustering guide, run UNCHANGED by every
// contender of the benchmark's "unchanged cluster app" part:
//
//   node cluster-app.js                           Node's own cluster primary
//                                                 (NODE_CLUSTER_SCHED_POLICY
//                                                 rr or none picks the policy)
//   pm2 start cluster-app.js -i 2                 PM2 cluster mode
//   hotswap run -w 2 -- node cluster-app.js       hotswap (its workers are
//                                                 cluster workers, so the
//                                                 primary branch never runs)
//
// It knows nothing of hotswap or PM2: no fd 3, no process.send, no signal
// handler. Env: PORT (3000), WORKERS (the primary's fork count, default the
// number of CPUs).
const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

const PORT = Number(process.env.PORT) || 3000;

if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS) || os.availableParallelism();
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} died (${signal || code})`);
  });
} else {
  http
    .createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(`pid=${process.pid}\n`);
    })
    .listen(PORT, () => console.log(`worker ${process.pid} listening on ${PORT}`));
}
