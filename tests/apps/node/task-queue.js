// A primary that hands out work and gathers logs, as the clustering guides
// write one: workers send each log line to the primary (`{cmd: 'log'}`),
// which writes them all in one place; the primary keeps a task queue and
// gives each task to a worker (`worker.send`), the worker answers
// (`process.send`), a task whose worker died is queued again.
// The primary prints `tasks given=G answered=A pending=P logs=L` every 500 ms.
const cluster = require('cluster');
const http = require('http');
const os = require('os');

if (cluster.isPrimary) {
  let logs = 0;
  let given = 0;
  let next = 1;
  const answered = new Set();
  const queue = [];
  const inFlight = new Map(); // task -> worker id

  function dispatch() {
    const idle = Object.values(cluster.workers).filter((w) => w.state === 'listening');
    while (queue.length && idle.length) {
      const w = idle[(given) % idle.length];
      const task = queue.shift();
      inFlight.set(task, w.id);
      given += 1;
      w.send({ cmd: 'task', task });
    }
  }

  cluster.on('message', (worker, msg) => {
    if (msg.cmd === 'log') logs += 1;
    if (msg.cmd === 'done') {
      if (answered.has(msg.task)) console.log(`task ${msg.task} answered twice`);
      answered.add(msg.task);
      inFlight.delete(msg.task);
    }
  });
  cluster.on('exit', (worker) => {
    for (const [task, id] of inFlight) {
      if (id === worker.id) { inFlight.delete(task); queue.push(task); }
    }
  });
  setInterval(() => {
    for (let i = 0; i < 20; i++) queue.push(next++);
    dispatch();
  }, 50);
  setInterval(() => {
    console.log(`tasks given=${given} answered=${answered.size} pending=${queue.length + inFlight.size} created=${next - 1} logs=${logs}`);
  }, 500);

  for (let i = 0; i < os.availableParallelism(); i++) cluster.fork();
} else {
  process.on('message', (msg) => {
    if (msg.cmd === 'task') process.send({ cmd: 'done', task: msg.task, by: process.pid });
  });
  http.createServer((req, res) => {
    process.send({ cmd: 'log', line: `${req.method} ${req.url} by ${process.pid}` });
    res.end(`hello pid=${process.pid}\n`);
  }).listen(process.env.PORT || 3000);
}
