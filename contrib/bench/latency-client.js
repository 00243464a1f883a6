'use strict';
// Closed-loop HTTP load client that records every request, for a latency
// time series across reloads (wrk only gives totals).
//
//   node latency-client.js --url http://127.0.0.1:PORT/ --concurrency 8
//        --duration 8 --mode keepalive|close --out samples.csv
//
// CONCURRENCY loops each send one request at a time (keep-alive: over a pooled
// connection; close: a new connection per request, `Connection: close`).
// Every request is written to OUT as `start_epoch_ms,latency_ms,result` where
// result is the HTTP status or the error code (ECONNRESET, ...). A summary
// JSON line goes to stdout. Bounded: stops issuing at DURATION and gives any
// request still outstanding 5 s more (then it counts as TIMEOUT).
const http = require('node:http');
const fs = require('node:fs');
const { performance } = require('node:perf_hooks');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const url = new URL(args.url);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
  console.error('latency-client: only loopback targets are allowed');
  process.exit(2);
}
const concurrency = Number(args.concurrency || 8);
const durationMs = Number(args.duration || 8) * 1000;
const keepAlive = (args.mode || 'keepalive') === 'keepalive';
const agent = keepAlive ? new http.Agent({ keepAlive: true, maxSockets: concurrency }) : false;
const headers = keepAlive ? {} : { Connection: 'close' };

const origin = performance.timeOrigin;
const started = performance.now();
const deadline = started + durationMs;
const rows = [];
let errors = 0;
let inflight = 0;

function one(done) {
  const t0 = performance.now();
  let finished = false;
  const finish = (result) => {
    if (finished) return;
    finished = true;
    inflight--;
    const ok = typeof result === 'number' && result >= 200 && result < 400;
    if (!ok) errors++;
    rows.push(`${(origin + t0).toFixed(3)},${(performance.now() - t0).toFixed(3)},${result}`);
    done();
  };
  inflight++;
  const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, agent, headers }, (res) => {
    res.on('data', () => {});
    res.on('end', () => finish(res.statusCode));
    res.on('error', (e) => finish(e.code || 'ERESPONSE'));
  });
  req.setTimeout(5000, () => { req.destroy(); finish('TIMEOUT'); });
  req.on('error', (e) => finish(e.code || 'EREQUEST'));
  req.end();
}

let loopsLeft = concurrency;
function loop() {
  if (performance.now() >= deadline) {
    if (--loopsLeft === 0) end();
    return;
  }
  one(loop);
}
for (let i = 0; i < concurrency; i++) loop();

function end() {
  fs.writeFileSync(args.out, 'start_epoch_ms,latency_ms,result\n' + rows.join('\n') + '\n');
  console.log(JSON.stringify({ requests: rows.length, errors, start_epoch_ms: origin + started,
                               duration_ms: performance.now() - started }));
  if (agent) agent.destroy();
  process.exit(0);
}
setTimeout(() => { console.error(`latency-client: ${inflight} request(s) still open, giving up`); end(); },
           durationMs + 10000).unref();
