// Per-message cost between a cluster app's workers and its primary: each
// worker sends N messages to the primary (process.send, in chunks of 1000
// so the channel never holds more than that), then one 'done'; the primary
// prints the messages per second it received. Run it under plain node
// (Node's own cluster) and under hotswap (the app's primary run by
// hotswap, messages relayed through it): contrib/bench/primary_messages.sh.
const cluster = require('cluster');
const N = Number(process.env.MESSAGES || 100000);
const W = Number(process.env.FORKS || 1);

if (cluster.isPrimary) {
  let got = 0;
  let done = 0;
  let start = 0;
  cluster.on('message', (worker, msg) => {
    if (msg.cmd === 'go') { if (!start) start = process.hrtime.bigint(); return; }
    if (msg.cmd === 'done') {
      done += 1;
      if (done === W) {
        const s = Number(process.hrtime.bigint() - start) / 1e9;
        console.log(`RESULT messages=${got} seconds=${s.toFixed(3)} per_second=${Math.round(got / s)} us_per_message=${(s * 1e6 / got).toFixed(2)}`);
        process.exit(0);
      }
      return;
    }
    got += 1;
  });
  for (let i = 0; i < W; i++) cluster.fork();
} else {
  // hotswap wants a listening worker to call it ready.
  require('http').createServer((q, r) => r.end('x')).listen(process.env.PORT || 0, () => {
    setTimeout(() => {
      process.send({ cmd: 'go' });
      let sent = 0;
      const chunk = () => {
        for (let i = 0; i < 1000 && sent < N; i++, sent++) process.send({ cmd: 'm', n: sent });
        if (sent < N) setImmediate(chunk); else process.send({ cmd: 'done' });
      };
      chunk();
    }, 1500);
  });
}
