// ZeroMQ DEALER clients for tests/it/node_primary.rs: each sends a request,
// waits for its answer (15 s, or it counts as lost), and sends the next,
// until stdin closes; then one JSON line:
// {"sent":S,"answered":A,"lost":L,"duplicates":D,"pids":[...]}.
//
//   node zmq-client.js --endpoint tcp://127.0.0.1:PORT --clients K
'use strict';
const zmq = require('zeromq');

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const endpoint = opt('--endpoint');
const count = Number(opt('--clients', '4'));
let stop = false;
process.stdin.on('data', () => {});
process.stdin.on('end', () => { stop = true; });
process.stdin.on('close', () => { stop = true; });

const totals = { sent: 0, answered: 0, lost: 0, duplicates: 0, pids: new Set() };

async function client(i) {
  const sock = new zmq.Dealer({ receiveTimeout: 15000, linger: 0 });
  sock.connect(endpoint);
  for (let n = 0; !stop; n++) {
    const want = `${i}:${n}`;
    await sock.send(want);
    totals.sent += 1;
    for (;;) {
      let answer;
      try {
        [answer] = await sock.receive();
      } catch (e) {
        totals.lost += 1;
        console.error(`client ${i}: request ${want}: ${e.message}`);
        break;
      }
      const text = answer.toString();
      const [body, pid] = text.split(' pid=');
      if (body !== want) { totals.duplicates += 1; continue; } // an earlier one's second answer
      totals.answered += 1;
      totals.pids.add(Number(pid));
      if (totals.answered % 100 === 0) console.log(JSON.stringify({ answered: totals.answered }));
      break;
    }
  }
  sock.close();
}

Promise.all(Array.from({ length: count }, (_, i) => client(i))).then(() => {
  console.log(JSON.stringify({ ...totals, pids: [...totals.pids] }));
  process.exit(0);
});
