// A primary that broadcasts to every worker (configuration pushes, cache
// invalidations): every 200 ms it sends `{cmd: 'tick', n}` to each worker in
// cluster.workers, and greets each new one on 'fork'. A worker answers
// `GET /` with what it heard: `pid=P ticks=T welcomed=W`. Like many apps,
// it forks a new worker whenever one exits.
const cluster = require('cluster');
const http = require('http');

if (cluster.isPrimary) {
  let n = 0;
  cluster.on('fork', (worker) => worker.send({ cmd: 'welcome' }));
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.id} exited (after disconnect: ${worker.exitedAfterDisconnect}); forking another`);
    cluster.fork();
  });
  setInterval(() => {
    n += 1;
    for (const id in cluster.workers) cluster.workers[id].send({ cmd: 'tick', n });
  }, 200);
  for (let i = 0; i < 2; i++) cluster.fork();
} else {
  let ticks = 0;
  let welcomed = false;
  process.on('message', (msg) => {
    if (msg.cmd === 'tick') ticks += 1;
    if (msg.cmd === 'welcome') welcomed = true;
  });
  http.createServer((req, res) => {
    res.end(`pid=${process.pid} ticks=${ticks} welcomed=${welcomed}\n`);
  }).listen(process.env.PORT || 3000);
}
