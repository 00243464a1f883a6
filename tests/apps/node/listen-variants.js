// One app, several ways to listen, chosen by APP_LISTEN (hotswap keeps
// LISTEN_* for itself): `zero` (listen(0)), `localhost` (PORT on
// 'localhost'), `ipv6` (APP_PORT on '::1'), `exclusive` (PORT, shared, plus
// a server of its own with `exclusive: true` on port 0), anything else
// (APP_PORT, every address). Answers with its pid and the port it got (and
// the port of its own server).
const http = require('http');

let own = null;
const server = http.createServer((req, res) => {
  const mine = own ? ` own=${own.address().port}` : '';
  res.end(`pid=${process.pid} port=${server.address().port}${mine}\n`);
});
const mode = process.env.APP_LISTEN;
if (mode === 'zero') server.listen(0);
else if (mode === 'localhost') server.listen(Number(process.env.PORT), 'localhost');
else if (mode === 'exclusive') {
  own = http.createServer((req, res) => res.end(`own pid=${process.pid}\n`));
  own.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => server.listen(Number(process.env.PORT)));
} else if (mode === 'ipv6') server.listen(Number(process.env.APP_PORT), '::1');
else server.listen(Number(process.env.APP_PORT));
