// One app, several ways to listen, chosen by APP_LISTEN (hotswap keeps
// LISTEN_* for itself): `zero` (listen(0)), `localhost` (PORT on
// 'localhost'), `ipv6` (APP_PORT on '::1'), `exclusive` (PORT, shared, plus
// a server of its own with `exclusive: true` on port 0), anything else
// (APP_PORT, every address). Answers with its pid and the port it got (and
// the port of its own server). `zero-twice`: a second server also on
// listen(0), answering `server=b`. `many`: PORT, then APP_EXTRA more servers
// on listen(0), all closed soon after each has listened or failed; answers with
// how many listened (`extra_ok=`) and failed (`extra_failed=`, `errors=`).
const http = require('http');

let own = null;
let extra = null;
// The port is read once: a server that is closing (a reload's drain) has no
// address any more, and its last requests must still be answered.
let port = null;
let ownPort = null;
const server = http.createServer((req, res) => {
  const mine = own ? ` own=${ownPort}` : '';
  const more = extra ? ` extra_ok=${extra.ok} extra_failed=${extra.failed} errors=${[...extra.codes].join(',')}` : '';
  res.end(`server=a pid=${process.pid} port=${port}${mine}${more}\n`);
});
server.on('listening', () => { port = server.address().port; });
const mode = process.env.APP_LISTEN;
if (mode === 'zero') server.listen(0);
else if (mode === 'zero-twice') {
  let bPort = null;
  const b = http.createServer((req, res) => res.end(`server=b pid=${process.pid} port=${bPort}\n`));
  b.on('listening', () => { bPort = b.address().port; });
  server.listen(0);
  b.listen(0);
} else if (mode === 'many') {
  extra = { ok: 0, failed: 0, codes: new Set() };
  const n = Number(process.env.APP_EXTRA);
  const servers = [];
  let settled = 0;
  const done = () => {
    if (++settled < n) return;
    server.listen(Number(process.env.PORT), () => {
      setTimeout(() => { for (const s of servers) if (s.listening) s.close(); }, 100);
    });
  };
  for (let i = 0; i < n; i++) {
    const s = http.createServer((req, res) => res.end('extra\n'));
    servers.push(s);
    s.on('error', (e) => { extra.failed++; extra.codes.add(e.code); done(); });
    s.listen(0, () => { extra.ok++; done(); });
  }
}
else if (mode === 'localhost') server.listen(Number(process.env.PORT), 'localhost');
else if (mode === 'exclusive') {
  own = http.createServer((req, res) => res.end(`own pid=${process.pid}\n`));
  own.on('listening', () => { ownPort = own.address().port; });
  own.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => server.listen(Number(process.env.PORT)));
} else if (mode === 'ipv6') server.listen(Number(process.env.APP_PORT), '::1');
else server.listen(Number(process.env.APP_PORT));
