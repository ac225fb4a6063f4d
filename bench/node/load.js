// Load generator of bench/server_load.py and bench/busy.py: many connections
// doing round trips.
//
// Usage: NODE_PATH=tests/interop/node/node_modules \
//          node bench/node/load.js PROTOCOL PORT CONNECTIONS SECONDS [--plain] [--idle]
//   PROTOCOL: "ws" (WebSocket, Node's `ws` package, compression off) or "raw"
//   (bench/ceiling.py's framing over TCP: a 5-byte header, 1 type byte and a
//   4-byte big-endian length, then the payload; types 1 text, 2 binary,
//   8 close).
//   --plain: no mode message (step 1): for an echo server that echoes every
//   message, such as `python -m syncws serve`.
//   --idle: the connections stay silent in step 2 (bench/busy.py measures
//   their memory).
//
// 1. Opens CONNECTIONS connections to 127.0.0.1:PORT, at most OPENING at a
//    time (a burst of 1000 SYNs would only measure the listen backlog), and
//    sends each the mode message "echo" (bench/servers.py's handler and
//    bench/node/server.js read it first).
// 2. Once every connection is open (or failed), each one sends a 16-byte text
//    message and, on every echo, the next one: one message in flight per
//    connection, for SECONDS seconds. Echoes are counted per connection.
//    It prints "start" and "stop" lines as the window opens and closes.
// 3. Closes every connection (closing handshake), then prints one JSON line:
//    opened, failed, messages, per-connection min / median / max, stalled
//    (connections with no echo in the whole window), closed, and timings.
//
// A server that can't serve every connection shows as stalled connections
// and a low min, not only as a lower total.
'use strict';

const net = require('net');
const WebSocket = require('ws');

const [protocol, portArg, connectionsArg, secondsArg, ...flags] = process.argv.slice(2);
const port = Number(portArg);
const total = Number(connectionsArg);
const seconds = Number(secondsArg);
const plain = flags.includes('--plain');
const idle = flags.includes('--idle');
if (!['ws', 'raw'].includes(protocol) || !port || !total || !seconds ||
    flags.some((flag) => !['--plain', '--idle'].includes(flag))) {
  process.stderr.write('usage: node load.js ws|raw PORT CONNECTIONS SECONDS [--plain] [--idle]\n');
  process.exit(2);
}

const OPENING = 50; // connections being opened at once
// ms for all of them to open, and to close: a threaded server starts a thread
// or two per connection, which takes longer as their number grows.
const OPEN_TIMEOUT = Math.max(60000, 20 * total);
const CLOSE_TIMEOUT = Math.max(30000, 10 * total);
const MESSAGE = 'x'.repeat(16);
const TEXT = 1;
const CLOSE = 8;

// -- one connection, either protocol: open(), send(text), close(), onMessage ------

function rawHeader(type, length) {
  const header = Buffer.alloc(5);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(length, 1);
  return header;
}

class RawConnection {
  constructor(onOpen, onFail, onMessage, onClose) {
    this.onMessage = onMessage;
    this.buffered = Buffer.alloc(0);
    this.closed = false;
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.setNoDelay(true);
    this.sock = sock;
    sock.on('connect', onOpen);
    sock.on('error', (err) => (this.closed ? null : onFail(err)));
    sock.on('close', () => {
      if (!this.closed) {
        this.closed = true;
        onClose();
      }
    });
    sock.on('data', (chunk) => this.receive(chunk));
  }

  receive(chunk) {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    while (this.buffered.length >= 5) {
      const type = this.buffered.readUInt8(0);
      const length = this.buffered.readUInt32BE(1);
      if (this.buffered.length < 5 + length) break;
      const payload = this.buffered.subarray(5, 5 + length);
      this.buffered = this.buffered.subarray(5 + length);
      if (type === CLOSE) {
        this.sock.end();
      } else {
        this.onMessage(type === TEXT ? payload.toString() : payload);
      }
    }
  }

  send(text) {
    const payload = Buffer.from(text);
    this.sock.write(Buffer.concat([rawHeader(TEXT, payload.length), payload]));
  }

  close() {
    this.sock.write(rawHeader(CLOSE, 0));
  }
}

class WsConnection {
  constructor(onOpen, onFail, onMessage, onClose) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    this.ws = ws;
    let opened = false;
    ws.on('open', () => {
      opened = true;
      ws._socket.setNoDelay(true);
      onOpen();
    });
    ws.on('error', (err) => (opened ? null : onFail(err)));
    ws.on('message', (data) => onMessage(data.toString()));
    ws.on('close', () => (opened ? onClose() : null));
  }

  send(text) {
    this.ws.send(text);
  }

  close() {
    this.ws.close(1000);
  }
}

const Connection = protocol === 'ws' ? WsConnection : RawConnection;

// -- the run ----------------------------------------------------------------------

const connections = []; // {conn, count}
let started = 0;
let settled = 0; // opened + failed
let failed = 0;
const failures = {};
let running = false;
let closed = 0;
const t0 = Date.now();

function openNext() {
  if (started >= total) return;
  started += 1;
  const entry = { conn: null, count: 0, open: false };
  entry.conn = new Connection(
    () => {
      entry.open = true;
      if (!plain) entry.conn.send('echo');
      connections.push(entry);
      settled += 1;
      openNext();
      if (settled === total) startRun();
    },
    (err) => {
      failed += 1;
      failures[err.code || err.message] = (failures[err.code || err.message] || 0) + 1;
      settled += 1;
      openNext();
      if (settled === total) startRun();
    },
    () => {
      if (running && !idle) {
        entry.count += 1;
        entry.conn.send(MESSAGE);
      }
    },
    () => {
      closed += 1;
      if (!running && closed === connections.length) finish();
    },
  );
}

let openedMs = 0;
let stopTimer = null;

function startRun() {
  if (running || stopTimer !== null) return; // the open timeout fired first
  openedMs = Date.now() - t0;
  process.stdout.write('start\n'); // the window opens: bench/server_load.py samples the server
  running = true;
  if (!idle) for (const entry of connections) entry.conn.send(MESSAGE);
  stopTimer = setTimeout(stopRun, seconds * 1000);
}

function stopRun() {
  running = false;
  process.stdout.write('stop\n');
  for (const entry of connections) entry.conn.close();
  if (connections.length === 0) finish();
  setTimeout(finish, CLOSE_TIMEOUT).unref();
}

let finished = false;

function finish() {
  if (finished) return;
  finished = true;
  const counts = connections.map((entry) => entry.count).sort((a, b) => a - b);
  const messages = counts.reduce((a, b) => a + b, 0);
  const result = {
    protocol,
    connections: total,
    opened: connections.length,
    failed,
    failures,
    open_seconds: openedMs / 1000,
    seconds,
    messages,
    per_second: messages / seconds,
    min: counts.length ? counts[0] : 0,
    median: counts.length ? counts[Math.floor(counts.length / 2)] : 0,
    max: counts.length ? counts[counts.length - 1] : 0,
    stalled: counts.filter((c) => c === 0).length,
    closed,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

setTimeout(() => {
  if (!running && stopTimer === null) {
    process.stderr.write(`only ${settled} of ${total} connections settled in ${OPEN_TIMEOUT} ms\n`);
    startRun();
  }
}, OPEN_TIMEOUT).unref();

for (let i = 0; i < Math.min(OPENING, total); i += 1) openNext();
