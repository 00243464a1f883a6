// A Node.js `http` server on the inherited fd 3 that says nothing to
// hotswap: no process.send, no 'ready'. Answers `generation=G worker=W`.
const http = require('http');
const body = `generation=${process.env.HOTSWAP_GENERATION} worker=${process.env.HOTSWAP_WORKER_ID}\n`;
http.createServer((req, res) => res.end(body)).listen({ fd: 3 });
