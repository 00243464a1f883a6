// An HTTP server plus a background job on a timer: the event loop never empties,
// so this process never exits by itself once its server is closed.
const http = require('http');

const PORT = process.env.PORT || 3000;

let ticks = 0;
setInterval(() => {
  ticks++; // e.g. refresh a cache, flush stats
}, 1000);

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end(`timer app pid=${process.pid} v=${process.env.APP_VERSION} ticks=${ticks}\n`);
});

server.listen(PORT, () => {
  console.log(`listening on ${PORT}`);
  // PM2 wait_ready convention.
  process.send && process.send('ready');
});
