// The Socket.IO guide's cluster example ("Using multiple nodes", Node.js
// cluster): the primary accepts every connection and hands it to a worker
// with @socket.io/sticky (least-connection), and @socket.io/cluster-adapter
// relays broadcasts between the workers through the primary. Unchanged but
// for what the example leaves to the app (`/* ... */`): a `/` page, and
// events that make one worker broadcast to every client.
const cluster = require('cluster');
const http = require('http');
const { Server } = require('socket.io');
const numCPUs = require('os').availableParallelism();
const { setupMaster, setupWorker } = require('@socket.io/sticky');
const { createAdapter, setupPrimary } = require('@socket.io/cluster-adapter');

const PORT = process.env.PORT || 3000;

if (cluster.isPrimary) {
  console.log(`Master ${process.pid} is running`);

  const httpServer = http.createServer();

  // setup sticky sessions
  setupMaster(httpServer, {
    loadBalancingMethod: 'least-connection',
  });

  // setup connections between the workers
  setupPrimary();

  // needed for packets containing buffers (you can ignore it if you only send plaintext objects)
  cluster.setupPrimary({
    serialization: 'advanced',
  });

  httpServer.listen(PORT);

  for (let i = 0; i < numCPUs; i++) {
    cluster.fork();
  }

  cluster.on('exit', (worker) => {
    console.log(`Worker ${worker.process.pid} died`);
    cluster.fork();
  });
} else {
  console.log(`Worker ${process.pid} started`);

  const httpServer = http.createServer((req, res) => {
    if (!req.url.startsWith('/socket.io/')) res.end(`socket.io cluster worker pid=${process.pid}\n`);
  });
  const io = new Server(httpServer);

  // use the cluster adapter
  io.adapter(createAdapter());

  // setup connection with the primary process
  setupWorker(io);

  io.on('connection', (socket) => {
    socket.on('echo', (msg, ack) => ack({ msg, pid: process.pid }));
    // One client asks; this worker broadcasts to every client of every worker.
    socket.on('shout', (n, ack) => {
      io.emit('news', { n, from: process.pid });
      ack({ pid: process.pid });
    });
  });
}
