// A Node worker written for hotswap's own protocol: it says
// {"type":"listening"} once its server listens, unless the file named by
// $ANNOUNCE_FILE says `no` when it starts (a release that hangs before its
// announcement).
const fs = require('fs');
const http = require('http');

const announce = fs.readFileSync(process.env.ANNOUNCE_FILE, 'utf8').trim() !== 'no';
const body = `generation=${process.env.HOTSWAP_GENERATION} worker=${process.env.HOTSWAP_WORKER_ID}\n`;
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
});
server.listen(process.env.PORT || 3000, () => {
  if (announce) process.send({ type: 'listening' });
});
process.on('message', (m) => {
  if (m && m.type === 'shutdown') server.close();
});
