// A ZeroMQ pool as a Node.js cluster app (the ZeroMQ guide's load-balancing
// broker, zeromq v6): the primary binds a ROUTER for clients and a ROUTER for
// its workers, whose DEALERs say 'ready' and then answer one request at a
// time. The primary hands each request to an idle worker and, when a worker
// exits ('exit'), hands the request it held to another: none is lost when a
// worker goes. Nothing in it knows about hotswap.
const cluster = require('cluster');
const zmq = require('zeromq');

const FRONTEND = `tcp://127.0.0.1:${process.env.ZMQ_PORT || 5570}`;
const BACKEND = `tcp://127.0.0.1:${process.env.ZMQ_BACKEND_PORT || 5571}`;

// zeromq v6 allows one send at a time per socket.
function sender(sock) {
  let chain = Promise.resolve();
  return (frames) => { chain = chain.then(() => sock.send(frames)).catch((e) => console.error(`send: ${e.message}`)); };
}

if (cluster.isPrimary) {
  const frontend = new zmq.Router();
  const backend = new zmq.Router();
  const toClient = sender(frontend);
  const toWorker = sender(backend);
  const idle = []; // worker routing ids, ready for a request
  const waiting = []; // requests not handed out yet: [client, body]
  const busy = new Map(); // worker routing id -> the request it holds
  let answered = 0;

  const dispatch = () => {
    while (idle.length && waiting.length) {
      const w = idle.shift();
      const job = waiting.shift();
      busy.set(w, job);
      toWorker([w, ...job]);
    }
  };

  (async () => {
    await frontend.bind(FRONTEND);
    await backend.bind(BACKEND);
    console.log(`broker ${process.pid} on ${FRONTEND}, workers on ${BACKEND}`);
    (async () => {
      for await (const [client, body] of frontend) {
        waiting.push([client, body]);
        dispatch();
      }
    })();
    for await (const [id, kind, client, answer] of backend) {
      const w = id.toString();
      if (kind.toString() === 'reply') {
        busy.delete(w);
        toClient([client, answer]);
        answered += 1;
      }
      idle.push(w);
      dispatch();
    }
  })();

  cluster.on('exit', (worker, code, signal) => {
    const w = `w${worker.id}`;
    const i = idle.indexOf(w);
    if (i >= 0) idle.splice(i, 1);
    const job = busy.get(w);
    busy.delete(w);
    if (job) waiting.unshift(job);
    console.log(`worker ${worker.id} exited (${signal || code}); ${job ? 'its request goes to another' : 'it held no request'}; answered=${answered}`);
    dispatch();
  });

  for (let i = 0; i < require('os').availableParallelism(); i++) cluster.fork();
} else {
  (async () => {
    const sock = new zmq.Dealer({ routingId: `w${cluster.worker.id}` });
    sock.connect(BACKEND);
    await sock.send(['ready']);
    for await (const [client, body] of sock) {
      await sock.send(['reply', client, `${body} pid=${process.pid}`]);
    }
  })();
}
