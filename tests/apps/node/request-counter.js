// The request counter of Node's cluster docs ("cluster.workers" example,
// https://nodejs.org/api/cluster.html): workers tell the primary of every
// request they serve, the primary prints the count every second. One
// change: the primary counts with cluster.on('message'), which also hears
// workers forked after the first loop (the docs' loop over cluster.workers
// attaches its handler to the first ones only).
const cluster = require('node:cluster');
const http = require('node:http');
const numCPUs = require('node:os').availableParallelism();
const process = require('node:process');

if (cluster.isPrimary) {
  // Keep track of http requests
  let numReqs = 0;
  setInterval(() => {
    console.log(`numReqs = ${numReqs}`);
  }, 1000);

  // Count requests
  function messageHandler(msg) {
    if (msg.cmd && msg.cmd === 'notifyRequest') {
      numReqs += 1;
    }
  }

  // Start workers and listen for messages containing notifyRequest
  for (let i = 0; i < numCPUs; i++) {
    cluster.fork();
  }

  cluster.on('message', (worker, msg) => messageHandler(msg));
} else {
  // Workers can share any TCP connection
  // In this case it is an HTTP server
  http.Server((req, res) => {
    res.writeHead(200);
    res.end(`hello world pid=${process.pid}\n`);

    // Notify primary about the request
    process.send({ cmd: 'notifyRequest' });
  }).listen(process.env.PORT || 8000);
}
