// A plain HTTPS server with a self-signed certificate (tls/, CN=localhost).
const https = require('https');
const fs = require('fs');
const path = require('path');

const PORT = process.env.PORT || 3000;

const options = {
  key: fs.readFileSync(path.join(__dirname, 'tls', 'key.pem')),
  cert: fs.readFileSync(path.join(__dirname, 'tls', 'cert.pem')),
};

https.createServer(options, (req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end(`hello over TLS pid=${process.pid} v=${process.env.APP_VERSION}\n`);
}).listen(PORT, () => {
  console.log(`HTTPS server listening on port ${PORT}`);
});
