'use strict';
// PM2 ecosystem file: the unchanged hotswap example worker (through shim.js),
// 2 instances in cluster mode, configured as PM2's docs advise for graceful
// start and shutdown:
//   * wait_ready + process.send('ready') (shim.js turns worker.js's
//     {"type":"listening"} into 'ready'), with listen_timeout as the upper
//     bound for the ready message;
//   * kill_timeout long enough for the drain (stop accepting, one more answer
//     per connection with Connection: close, idle sockets closed after 1 s)
//     before PM2 sends SIGKILL. PM2 stops a worker with SIGINT (kill_signal),
//     which shim.js turns into the drain.
// BENCH_PORT and EXAMPLE_STARTUP_MS come from the environment of `pm2 start`.
const path = require('node:path');

module.exports = {
  apps: [{
    name: 'bench',
    script: path.join(__dirname, 'shim.js'),
    exec_mode: 'cluster',
    instances: Number(process.env.BENCH_WORKERS || 2),
    wait_ready: true,
    listen_timeout: 10000,
    kill_timeout: 3000,
    autorestart: true,
    env: {
      BENCH_ADAPTER: 'pm2',
      BENCH_PORT: process.env.BENCH_PORT,
      EXAMPLE_STARTUP_MS: process.env.EXAMPLE_STARTUP_MS || '300',
    },
  }],
};
