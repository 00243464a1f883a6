// hotswap's preload for the app's own cluster primary (loaded with `--require`
// from NODE_OPTIONS, only in that one long-lived child; see docs/node-primary.md).
//
// The child runs the app with cluster.isPrimary true. Its `cluster` module is
// backed by hotswap: the workers are hotswap's (started, reloaded, restarted
// and stopped by it), and this file makes them look, to the app, like the
// workers Node's own primary forks:
// - cluster.fork() takes one of hotswap's workers: those running when this
//   child starts (HOTSWAP_NODE_WORKERS, so worker.id and worker.process.pid are
//   known at once), or one that starts later. hotswap's pool size (-w) rules:
//   a fork with no worker to take waits for the next one that starts, with a
//   warning in hotswap's log.
// - A worker no fork took within the first second is announced as if forked
//   ('fork' event); so is a worker that starts later, when no fork waits.
// - A reload's new worker replaces an old one: it is announced right after the
//   old one's 'exit' (with exitedAfterDisconnect true), and an app that forks
//   in its 'exit' listener gets that very worker, so the pool never doubles.
// - Messages and events go through hotswap as NODE_HOTSWAP messages, which
//   Node gives to 'internalMessage' listeners only.
// - worker.send(msg, socket) passes the socket through hotswap (Node's
//   NODE_HANDLE, the fd as SCM_RIGHTS): the worker's process.on('message')
//   gets (msg, socket), as under Node's primary (@socket.io/sticky).
// - server.listen() in this process gets hotswap's socket for that address
//   (a --listen one, or one bound on demand), as a worker's listen does: the
//   primary's server survives every reload.
// - cluster.setupPrimary({serialization: 'advanced'}): what Node's advanced
//   serialization keeps and JSON does not (Buffers, typed arrays, Dates,
//   Maps, Sets, BigInts, undefined) goes to workers tagged (hotswap's worker
//   preload restores it), and Buffers from workers ({type: 'Buffer', data})
//   are restored here.
//
// Dependency-free CommonJS for Node 18, 20 and 22.
'use strict';

const env = process.env;
const kLoaded = Symbol.for('hotswap.primary');

if (env.HOTSWAP_NODE_PRIMARY === '1' && !process[kLoaded] && typeof process.send === 'function') {
  process[kLoaded] = true;
  setup();
}

function setup() {
  const cluster = require('cluster');
  const { EventEmitter } = require('events');
  const initial = (env.HOTSWAP_NODE_WORKERS || '').split(',').filter(Boolean).map((s) => {
    const [id, pid] = s.split(':').map(Number);
    return { id, pid };
  });
  for (const k of ['HOTSWAP_NODE_PRIMARY', 'HOTSWAP_NODE_WORKERS', 'NODE_CHANNEL_FD',
    'NODE_CHANNEL_SERIALIZATION_MODE', 'HOTSWAP_IPC_FD']) delete env[k];
  removeSelfFromNodeOptions();

  const SETTLE_MS = 1000;
  // id -> { id, pid, replaces, worker (once taken or announced), buffered events }
  const known = new Map();
  const waiting = []; // Workers forked before a hotswap worker was there for them
  // Workers gone, for their messages read after their exit (hotswap reads a
  // worker's channel and reaps its exit separately): the last 256.
  const dead = new Map();
  let settled = false;
  let exiting = null; // the id whose 'exit' is being emitted
  let warned = false;

  function toHotswap(msg) {
    if (process.connected) process.send(Object.assign({ cmd: 'NODE_HOTSWAP' }, msg));
  }

  class Worker extends EventEmitter {
    constructor() {
      super();
      this.id = undefined;
      this.exitedAfterDisconnect = undefined;
      this.state = 'none';
      const proc = new EventEmitter();
      proc.pid = undefined;
      proc.connected = true;
      proc.exitCode = null;
      proc.signalCode = null;
      proc.kill = (signal) => { this.kill(signal); return true; };
      proc.send = (...args) => this.send(...args);
      this.process = proc;
    }
    send(message, handle, options, callback) {
      if (typeof handle === 'function') { callback = handle; handle = undefined; options = undefined; }
      else if (typeof options === 'function') { callback = options; options = undefined; }
      const ok = this.id !== undefined && this.isConnected() && process.connected;
      const data = advanced() ? { cmd: 'NODE_HOTSWAP_MSG', v: encode(message) } : message;
      if (ok && handle) {
        // Node's own handle passing, to hotswap, which passes it on.
        const msg = { cmd: 'NODE_HOTSWAP', act: 'send', id: this.id, data };
        return process.send(msg, handle, options || {}, typeof callback === 'function' ? callback : undefined);
      }
      if (ok) toHotswap({ act: 'send', id: this.id, data });
      if (typeof callback === 'function') {
        process.nextTick(callback, ok ? null : new Error('worker is not connected'));
      }
      return ok;
    }
    disconnect() {
      this.exitedAfterDisconnect = true;
      if (this.id !== undefined) toHotswap({ act: 'retire', id: this.id });
      return this;
    }
    kill() {
      return this.disconnect();
    }
    destroy() {
      return this.disconnect();
    }
    isConnected() {
      return this.process.connected;
    }
    isDead() {
      return this.process.exitCode !== null || this.process.signalCode !== null;
    }
  }

  // Takes the hotswap worker `rec` for `worker`; replays what it already did.
  function attach(worker, rec) {
    rec.worker = worker;
    worker.id = rec.id;
    worker.process.pid = rec.pid;
    cluster.workers[rec.id] = worker;
    process.nextTick(() => {
      cluster.emit('fork', worker);
      const events = rec.events.splice(0);
      rec.events = null;
      events.forEach(deliver);
    });
  }

  function announce(rec) {
    if (!rec.worker) attach(new Worker(), rec);
  }

  // A worker that replaces one the app still knows waits for that one's exit.
  function held(rec) {
    const old = rec.replaces != null && known.get(rec.replaces);
    return !!(old && old.worker && !old.gone && old.id !== exiting);
  }

  function free() {
    let pick = null;
    for (const rec of known.values()) {
      if (rec.worker || rec.gone) continue;
      if (exiting !== null && rec.replaces === exiting) return rec;
      if (!pick && !held(rec)) pick = rec;
    }
    return pick;
  }

  function fork(envOverrides) {
    if (envOverrides !== undefined && typeof envOverrides !== 'object') {
      throw new TypeError('cluster.fork(env): env must be an object');
    }
    const worker = new Worker();
    const rec = free();
    if (rec) attach(worker, rec);
    else {
      waiting.push(worker);
      if (!warned) {
        warned = true;
        toHotswap({
          act: 'warn',
          text: `the app's primary called cluster.fork() with all ${known.size} of hotswap's workers taken: ` +
            'the new Worker gets the next worker hotswap starts (its pool size is -w; said once)',
        });
      }
    }
    return worker;
  }

  function deliver(ev) {
    const rec = known.get(ev.id);
    if (!rec) return;
    if (!rec.worker || rec.events) { (rec.events = rec.events || []).push(ev); return; }
    const w = rec.worker;
    switch (ev.act) {
      case 'online':
        w.state = 'online';
        w.emit('online');
        cluster.emit('online', w);
        break;
      case 'listening':
        w.state = 'listening';
        w.emit('listening', ev.address);
        cluster.emit('listening', w, ev.address);
        break;
      case 'message': {
        const data = advanced() ? revive(ev.data) : ev.data;
        w.emit('message', data, undefined);
        cluster.emit('message', w, data, undefined);
        break;
      }
      case 'disconnect':
        if (!w.process.connected) break;
        w.process.connected = false;
        w.state = 'disconnected';
        delete cluster.workers[w.id];
        w.emit('disconnect');
        cluster.emit('disconnect', w);
        break;
      case 'exit': {
        if (w.process.connected) deliver({ act: 'disconnect', id: ev.id });
        known.delete(ev.id);
        rec.gone = true;
        dead.set(ev.id, w);
        if (dead.size > 256) dead.delete(dead.keys().next().value);
        w.state = 'dead';
        w.exitedAfterDisconnect = !!(w.exitedAfterDisconnect || ev.afterDisconnect);
        w.process.exitCode = ev.code;
        w.process.signalCode = ev.signal;
        delete cluster.workers[w.id];
        exiting = ev.id;
        try {
          w.process.emit('exit', ev.code, ev.signal);
          w.emit('exit', ev.code, ev.signal);
          cluster.emit('exit', w, ev.code, ev.signal);
        } finally {
          exiting = null;
        }
        // Its replacement, if the app did not fork for it.
        for (const r of known.values()) if (r.replaces === ev.id && !r.worker) announce(r);
        break;
      }
      default:
        break;
    }
  }

  function started(msg) {
    const rec = { id: msg.id, pid: msg.pid, replaces: msg.replaces, worker: null, events: [], gone: false };
    known.set(rec.id, rec);
    if (waiting.length) attach(waiting.shift(), rec);
    else if (settled && !held(rec)) announce(rec);
  }

  process.on('internalMessage', (msg, handle) => {
    if (!msg || msg.cmd !== 'NODE_HOTSWAP') return;
    if (msg.act === 'started') return started(msg);
    if (msg.act === 'listen') return listened(msg, handle);
    const rec = known.get(msg.id);
    if (!rec) {
      const w = msg.act === 'message' && dead.get(msg.id);
      if (w) {
        const data = advanced() ? revive(msg.data) : msg.data;
        w.emit('message', data, undefined);
        cluster.emit('message', w, data, undefined);
      }
      return;
    }
    if (!rec.worker) {
      // Not taken yet: kept for when it is. An unclaimed worker that exits is
      // forgotten (its replacement is announced in its place).
      if (msg.act === 'exit') {
        known.delete(msg.id);
        rec.gone = true;
        for (const r of known.values()) if (r.replaces === msg.id && !r.worker && settled) announce(r);
      } else rec.events.push(msg);
      return;
    }
    deliver(msg);
  });
  // hotswap gone (stop, or it died): so is the primary.
  process.on('disconnect', () => process.exit(0));

  for (const w of initial) {
    known.set(w.id, { id: w.id, pid: w.pid, replaces: null, worker: null, events: [], gone: false });
  }
  setTimeout(() => {
    settled = true;
    for (const rec of known.values()) if (!rec.worker && !rec.gone && !held(rec)) announce(rec);
  }, SETTLE_MS);

  cluster.workers = {};
  cluster.settings = cluster.settings || {};
  cluster.fork = fork;
  cluster.setupPrimary = cluster.setupMaster = function setupPrimary(settings) {
    Object.assign(cluster.settings, settings || {});
    process.nextTick(() => cluster.emit('setup', cluster.settings));
  };
  cluster.disconnect = function disconnect(cb) {
    for (const w of Object.values(cluster.workers)) w.disconnect();
    if (typeof cb === 'function') {
      const check = () => (Object.keys(cluster.workers).length ? setTimeout(check, 50) : cb());
      check();
    }
  };
  patchListen();
  try { require('module').syncBuiltinESMExports(); } catch {}

  function advanced() {
    return cluster.settings.serialization === 'advanced';
  }

  // server.listen() asks hotswap for the socket (the fields of Node's
  // queryServer); the answer comes with it as a handle, or with an errno.
  const listens = new Map(); // seq -> (errno, handle) => void
  let listenSeq = 0;
  function listened(msg, handle) {
    const done = listens.get(msg.ack);
    listens.delete(msg.ack);
    if (done) done(msg.errno, handle);
  }
  function patchListen() {
    const net = require('net');
    const proto = net.Server.prototype;
    const listen = proto.listen;
    proto.listen = function hotswapListen(...args) {
      let options;
      let cb;
      try { [options, cb] = net._normalizeArgs(args); } catch { return listen.apply(this, args); }
      // Handles, fds and exclusive listens are the app's own, as in Node.
      if (!options || typeof options !== 'object' || options.handle || options._handle ||
        options.fd !== undefined || options.exclusive || !process.connected) return listen.apply(this, args);
      let port = options.port;
      const path = options.path;
      if (path === undefined) {
        if (port === undefined || port === null || port === '') port = 0;
        port = Number(port);
        if (!Number.isInteger(port) || port < 0 || port > 65535) return listen.apply(this, args);
      } else if (typeof path !== 'string') return listen.apply(this, args);
      const server = this;
      if (typeof cb === 'function') server.once('listening', cb);
      const ask = (address, addressType) => {
        const seq = ++listenSeq;
        listens.set(seq, (errno, handle) => {
          if (handle) return listen.call(server, handle);
          const util = require('util');
          const code = errno ? util.getSystemErrorName(errno) : 'EINVAL';
          const where = path !== undefined ? path : `${address || '::'}:${port}`;
          const e = new Error(`listen ${code}: hotswap could not give the socket for ${where}`);
          Object.assign(e, { code, errno, syscall: 'listen', address: path !== undefined ? path : address, port });
          server.emit('error', e);
        });
        toHotswap({
          act: 'queryServer', seq, index: 0, data: null, backlog: options.backlog || 511,
          address, addressType, port: path !== undefined ? -1 : port,
        });
      };
      const host = options.host;
      if (path !== undefined) ask(path, -1);
      else if (host === undefined || host === null || host === '') ask(null, 4);
      else if (net.isIP(host)) ask(host, net.isIP(host));
      else {
        require('dns').lookup(host, (err, address, family) => {
          if (err) server.emit('error', err);
          else ask(address, family);
        });
      }
      return server;
    };
  }
}

// Advanced serialization over hotswap's JSON channel: values JSON would
// lose, tagged (hotswap's worker preload has the decoder).
const TAG = '\u0000hotswap';
function encode(v) {
  if (v === undefined) return { [TAG]: 'u' };
  if (v === null || typeof v !== 'object') {
    return typeof v === 'bigint' ? { [TAG]: 'n', v: v.toString() } : v;
  }
  if (Buffer.isBuffer(v)) return { [TAG]: 'b', v: v.toString('base64') };
  if (ArrayBuffer.isView(v)) {
    const bytes = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
    return { [TAG]: 't', k: v.constructor.name, v: bytes };
  }
  if (v instanceof Date) return { [TAG]: 'd', v: v.getTime() };
  if (v instanceof Map) return { [TAG]: 'm', v: [...v].map(([k, x]) => [encode(k), encode(x)]) };
  if (v instanceof Set) return { [TAG]: 's', v: [...v].map(encode) };
  if (Array.isArray(v)) return v.map(encode);
  const out = {};
  for (const k of Object.keys(v)) out[k] = encode(v[k]);
  return out;
}

// Buffers from workers, as JSON carried them ({type: 'Buffer', data}).
function revive(v) {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = revive(v[i]);
    return v;
  }
  const keys = Object.keys(v);
  if (v.type === 'Buffer' && Array.isArray(v.data) && keys.length === 2) return Buffer.from(v.data);
  for (const k of keys) v[k] = revive(v[k]);
  return v;
}

// Children the app spawns inherit process.env: drop this file from NODE_OPTIONS.
function removeSelfFromNodeOptions() {
  const opts = env.NODE_OPTIONS;
  if (!opts) return;
  const quoted = opts.match(/--require "(?:[^"\\]|\\.)*"|\S+/g) || [];
  const self = require('path').basename(__filename);
  const kept = [];
  for (let i = 0; i < quoted.length; i++) {
    if ((quoted[i] === '--require' || quoted[i] === '-r') && (quoted[i + 1] || '').includes(self)) { i++; continue; }
    if (quoted[i].startsWith('--require') && quoted[i].includes(self)) continue;
    kept.push(quoted[i]);
  }
  if (kept.length) env.NODE_OPTIONS = kept.join(' ');
  else delete env.NODE_OPTIONS;
}
