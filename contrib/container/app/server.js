// The example app of the container: a plain Node.js HTTP server, written
// with no knowledge of hotswap (it would run the same under `node server.js`).
// hotswap runs it as a cluster worker: its listen() gets hotswap's shared
// socket, and its drain comes from hotswap's preload.
//
// It reads its settings once, at start, from the mounted ConfigMap
// (APP_CONFIG, default /etc/app/config.json): a change of the ConfigMap
// reaches the app through a rolling reload that `--watch /etc/app` starts,
// with no restart of the pod and no failed request.
'use strict';
const fs = require('fs');
const http = require('http');

const file = process.env.APP_CONFIG || '/etc/app/config.json';
let config = { greeting: 'hello' };
try {
  config = { ...config, ...JSON.parse(fs.readFileSync(file, 'utf8')) };
} catch (e) {
  console.error(`${file}: ${e.message}; using the defaults`);
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') return res.end('ok\n');
  res.setHeader('Content-Type', 'text/plain');
  res.end(`${config.greeting} from generation ${process.env.HOTSWAP_GENERATION} pid ${process.pid}\n`);
});
// hotswap sets PORT to its first listener's port.
server.listen(Number(process.env.PORT) || 8080);
