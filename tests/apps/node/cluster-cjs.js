// The classic app from Node's cluster guide, unchanged in spirit: the primary forks
// one worker per CPU, each worker runs an HTTP server on the same port.
// Under hotswap (NODE_UNIQUE_ID set) Node makes this process a worker, so only the
// `else` branch runs.
const cluster = require('cluster');
const http = require('http');
const numCPUs = require('os').cpus().length;

const PORT = process.env.PORT || 3000;

if (cluster.isMaster) {
  console.log(`Master ${process.pid} is running`);

  for (let i = 0; i < numCPUs; i++) {
    cluster.fork();
  }

  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} died`);
  });
} else {
  http.createServer((req, res) => {
    res.writeHead(200);
    res.end(`hello world pid=${process.pid} v=${process.env.APP_VERSION}\n`);
  }).listen(PORT);

  console.log(`Worker ${process.pid} started`);
}
