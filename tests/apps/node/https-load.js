// HTTPS load for the tests: keep-alive and new-connection request loops
// against URL until the file `reloads-done` appears next to the primary's
// log (the test writes it) or MAX_SECONDS pass; then prints a JSON report
// {"ok": N, "failed": N, "errors": [...], "pids": [...]} and exits. After
// its 20th answer it writes DONE_FILE.flowing: the load is flowing.
// Usage: node https-load.js URL MAX_SECONDS [DONE_FILE]
'use strict';
const https = require('https');
const fs = require('fs');

const [url, maxSeconds, doneFile] = process.argv.slice(2);
const deadline = Date.now() + Number(maxSeconds || 20) * 1000;
const keepAlive = new https.Agent({ keepAlive: true, maxSockets: 4, rejectUnauthorized: false });
const fresh = new https.Agent({ keepAlive: false, rejectUnauthorized: false });
const report = { ok: 0, failed: 0, errors: [], pids: new Set() };
const done = () => Date.now() > deadline || (doneFile && fs.existsSync(doneFile));

function once(agent) {
  return new Promise((resolve) => {
    const req = https.get(url, { agent, timeout: 10000 }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        const m = /pid=(\d+)/.exec(body);
        if (res.statusCode === 200 && m) {
          report.ok++;
          report.pids.add(m[1]);
          // The test waits for this before it reloads.
          if (report.ok === 20 && doneFile) fs.writeFileSync(`${doneFile}.flowing`, '');
        }
        else { report.failed++; report.errors.push(`HTTP ${res.statusCode}`); }
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', (e) => { report.failed++; if (report.errors.length < 10) report.errors.push(e.message); resolve(); });
  });
}

async function loop(agent) {
  while (!done()) await once(agent);
}

Promise.all([loop(keepAlive), loop(keepAlive), loop(keepAlive), loop(keepAlive), loop(fresh), loop(fresh)]).then(() => {
  keepAlive.destroy();
  process.stdout.write(JSON.stringify({ ...report, pids: [...report.pids] }) + '\n');
});
