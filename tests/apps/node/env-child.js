// Answers with the environment that a child process of this app sees: a
// worker's own children must not inherit hotswap's Node variables.
const http = require('http');
const { execFileSync } = require('child_process');

const seen = JSON.parse(execFileSync(process.execPath, ['-e',
  'const e = process.env; console.log(JSON.stringify({NODE_UNIQUE_ID: e.NODE_UNIQUE_ID, NODE_CHANNEL_FD: e.NODE_CHANNEL_FD, NODE_OPTIONS: e.NODE_OPTIONS, NODE_APP_INSTANCE: e.NODE_APP_INSTANCE}))'
]).toString());

http.createServer((req, res) => res.end(JSON.stringify(seen))).listen(process.env.PORT || 3000);
