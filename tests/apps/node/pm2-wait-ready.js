// A PM2 app written for `wait_ready: true`: its server listens at once, but
// it answers 503 until its database is connected (1.5 s here), and only
// then says process.send('ready').
const http = require('http');

let ready = false;
const body = `generation=${process.env.HOTSWAP_GENERATION} worker=${process.env.HOTSWAP_WORKER_ID}\n`;
const server = http.createServer((req, res) => {
  if (!ready) {
    res.writeHead(503, { 'Content-Type': 'text/plain' });
    return res.end('starting\n');
  }
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});

server.listen(process.env.PORT || 3000, () => {
  setTimeout(() => {
    ready = true;
    process.send('ready');
  }, Number(process.env.CONNECT_MS || 1500));
});
