// An app server plus a separate metrics server, as many production apps run.
const http = require('http');

const PORT = process.env.PORT || 3000;
const METRICS_PORT = process.env.METRICS_PORT || 9100;

let requests = 0;

const app = http.createServer((req, res) => {
  requests++;
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end(`app pid=${process.pid} v=${process.env.APP_VERSION}\n`);
});

const metrics = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
  res.end(`# pid=${process.pid} v=${process.env.APP_VERSION}\nhttp_requests_total ${requests}\n`);
});

app.listen(PORT, () => console.log(`app listening on ${PORT}`));
metrics.listen(METRICS_PORT, () => console.log(`metrics listening on ${METRICS_PORT}`));
