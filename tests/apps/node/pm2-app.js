// An app written for PM2: it says 'ready', reports metrics over IPC, and closes
// its server on SIGINT (PM2's stop signal).
const http = require('http');

const PORT = process.env.PORT || 3000;

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end(`pm2 app pid=${process.pid} v=${process.env.APP_VERSION}\n`);
});

server.listen(PORT, () => {
  console.log(`listening on ${PORT}`);
  process.send('ready');
});

setInterval(() => {
  process.send({ type: 'metric', name: 'heap_used', value: process.memoryUsage().heapUsed });
}, 100);

process.on('SIGINT', () => {
  server.close(() => process.exit(0));
});
