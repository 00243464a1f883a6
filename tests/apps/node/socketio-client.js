// Socket.IO 4 clients over HTTP long-polling, each from its own loopback
// source address, for tests/it/socketio.rs. Prints one JSON summary on
// stdout.
//
//   node socketio-client.js --url http://127.0.0.1:PORT --clients K
//        [--messages M] [--first-address 2] [--reconnect] [--hold]
//        [--timeout MS]
//
// Client i connects from 127.0.0.(first-address + i) with
// `transports: ['polling']` and an http.Agent without keep-alive, so every
// request of the handshake (open, CONNECT packet, polls) is a new TCP
// connection that the kernel places on its own: they all have to reach the
// one worker that holds the session. It then sends M `echo` messages, each
// waiting for its acknowledgement, and disconnects.
//
// Without --reconnect, a client that fails (a `connect_error`, a
// disconnect, an unanswered message) stops and the failure is reported
// ("Session ID unknown" is what a request that reached the wrong worker
// gets). With --reconnect, Socket.IO reconnects (a new handshake) and the
// client goes on until M messages are echoed or --timeout passes; what it
// went through is counted. With --hold, once its M messages are echoed a
// client keeps sending one message every 100 ms until stdin closes, then
// must get one more message echoed.
'use strict';

const http = require('http');
const { io } = require('socket.io-client');

function parseArgs(argv) {
  const o = { url: null, clients: 10, messages: 5, firstAddress: 2, reconnect: false, hold: false, timeout: 40000 };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--url') o.url = value();
    else if (a === '--clients') o.clients = Number(value());
    else if (a === '--messages') o.messages = Number(value());
    else if (a === '--first-address') o.firstAddress = Number(value());
    else if (a === '--timeout') o.timeout = Number(value());
    else if (a === '--reconnect') o.reconnect = true;
    else if (a === '--hold') o.hold = true;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.url) throw new Error('--url is required');
  if (!(o.firstAddress >= 1 && o.firstAddress + o.clients - 1 <= 254)) {
    throw new Error('the source addresses must stay within 127.0.0.1 .. 127.0.0.254');
  }
  return o;
}

// The text of an error as Socket.IO reports it, with the server's answer
// when there was one (a 400 carries {"code":1,"message":"Session ID unknown"}).
function describe(err) {
  if (!err) return 'unknown';
  let s = err.message || String(err);
  const d = err.description;
  if (d !== undefined) {
    const status = typeof d === 'number' ? d : d && d.message;
    if (status !== undefined) s += ` (${status})`;
  }
  const body = err.context && err.context.responseText;
  if (body) s += `: ${String(body).slice(0, 120)}`;
  return s;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// With --hold, `{"holding":K}` goes out on its own line once every client
// has had its M messages echoed (or failed): the caller's cue to act while
// the sessions are open.
let held = 0;
let holdingOf = 0;
function holding() {
  held += 1;
  if (held === holdingOf) process.stdout.write(JSON.stringify({ holding: held }) + '\n');
}

let stdinClosed = false;
const stdinClosedWaiters = [];

function watchStdin() {
  process.stdin.on('data', () => {});
  const done = () => {
    stdinClosed = true;
    stdinClosedWaiters.splice(0).forEach((f) => f());
  };
  process.stdin.on('end', done);
  process.stdin.on('close', done);
  process.stdin.on('error', done);
}

async function runClient(o, i, deadline) {
  const address = `127.0.0.${o.firstAddress + i}`;
  const r = {
    address,
    connects: 0,
    echoed: 0,
    lost: 0,
    pids: [],
    seenAs: [],
    errors: [],
    disconnects: [],
    ok: false,
    finalEcho: null,
  };
  const agent = new http.Agent({ localAddress: address, keepAlive: false });
  const socket = io(o.url, {
    transports: ['polling'],
    agent,
    forceNew: true,
    reconnection: o.reconnect,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    // Generous: on a 2-core machine busy with other tests a handshake can
    // take seconds; a client that reaches no worker still fails.
    timeout: 20000,
  });
  let failed = null;
  let wake = null;
  const fail = (what) => {
    r.errors.push(what);
    if (!o.reconnect && !failed) failed = what;
    if (wake) wake();
  };
  socket.on('connect', () => {
    r.connects += 1;
    if (wake) wake();
  });
  socket.on('connect_error', (err) => fail(`connect_error: ${describe(err)}`));
  socket.on('disconnect', (reason, desc) => {
    r.disconnects.push(desc ? `${reason}: ${describe(desc)}` : reason);
    if (reason !== 'io client disconnect') fail(`disconnect: ${reason}${desc ? ': ' + describe(desc) : ''}`);
  });

  const note = (pid, seenAs) => {
    if (!r.pids.includes(pid)) r.pids.push(pid);
    if (!r.seenAs.includes(seenAs)) r.seenAs.push(seenAs);
  };
  // One message, acknowledged within 10 s or counted as lost.
  const echo = async (n) => {
    try {
      const a = await socket.timeout(10000).emitWithAck('echo', { client: i, n });
      if (!a || !a.msg || a.msg.n !== n) throw new Error(`wrong answer ${JSON.stringify(a)}`);
      note(a.pid, a.address);
      r.echoed += 1;
      return true;
    } catch (e) {
      r.lost += 1;
      fail(`message ${n}: ${describe(e)}`);
      return false;
    }
  };

  try {
    // Connected (or failed) before the first message, so that a failed
    // handshake is reported as one.
    // Without reconnection, a handshake gets 25 s (the connect timeout
    // above is 20 s).
    const connectBy = o.reconnect ? deadline : Math.min(deadline, Date.now() + 25000);
    while (!socket.connected && !failed && Date.now() < connectBy) {
      await new Promise((res) => {
        wake = res;
        setTimeout(res, 200);
      });
    }
    wake = null;
    if (!socket.connected && !failed) fail('no connection before the deadline');
    let n = 0;
    while (!failed && r.echoed < o.messages && Date.now() < deadline) {
      await echo(n++);
    }
    if (!failed && r.echoed < o.messages) fail(`only ${r.echoed} of ${o.messages} messages echoed before the deadline`);
    if (o.hold) holding();
    if (o.hold && !failed) {
      while (!stdinClosed && !failed) {
        await echo(n++);
        await sleep(100);
      }
      // After the holding period, one more message must get through (on a
      // new session if the old one ended).
      const last = Date.now() + 15000;
      r.finalEcho = false;
      while (!failed && Date.now() < last) {
        if (await echo(n++)) {
          r.finalEcho = true;
          break;
        }
      }
    }
    r.ok = !failed && r.echoed >= o.messages && (!o.hold || r.finalEcho === true);
  } finally {
    socket.disconnect();
    agent.destroy();
  }
  return r;
}

async function main() {
  const o = parseArgs(process.argv);
  if (o.hold) watchStdin();
  holdingOf = o.clients;
  const deadline = Date.now() + o.timeout;
  const results = await Promise.all(Array.from({ length: o.clients }, (_, i) => runClient(o, i, deadline)));
  const summary = {
    clients: results.length,
    // Clients whose first handshake completed without any error before it.
    handshakes: results.filter((r) => r.connects > 0).length,
    ok: results.filter((r) => r.ok).length,
    failed: results.filter((r) => !r.ok).length,
    messages: results.reduce((s, r) => s + r.echoed + r.lost, 0),
    echoed: results.reduce((s, r) => s + r.echoed, 0),
    lost: results.reduce((s, r) => s + r.lost, 0),
    reconnects: results.reduce((s, r) => s + Math.max(0, r.connects - 1), 0),
    sessionUnknown: results.reduce((s, r) => s + r.errors.filter((e) => /Session ID unknown/.test(e)).length, 0),
    // The server saw each client's own source address.
    addressesTookEffect:
      results.some((r) => r.seenAs.length > 0) &&
      results.every((r) => r.seenAs.every((a) => a === r.address || a === `::ffff:${r.address}`)),
    results,
  };
  process.stdout.write(JSON.stringify(summary) + '\n');
}

main().catch((e) => {
  process.stderr.write(`socketio-client: ${e.stack || e}\n`);
  process.exit(2);
});
