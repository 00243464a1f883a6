// One app, several ways to listen, chosen by APP_LISTEN (hotswap keeps
// LISTEN_* for itself): `zero` (listen(0)), `localhost` (PORT on
// 'localhost'), `ipv6` (APP_PORT on '::1'), anything else (APP_PORT, every
// address). Answers with its pid and the port it got.
const http = require('http');

const server = http.createServer((req, res) => {
  res.end(`pid=${process.pid} port=${server.address().port}\n`);
});
const mode = process.env.APP_LISTEN;
if (mode === 'zero') server.listen(0);
else if (mode === 'localhost') server.listen(Number(process.env.PORT), 'localhost');
else if (mode === 'ipv6') server.listen(Number(process.env.APP_PORT), '::1');
else server.listen(Number(process.env.APP_PORT));
