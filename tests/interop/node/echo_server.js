// Echo server for syncws interop tests: Node's ws with permessage-deflate.
//
// Usage: node echo_server.js [threshold]
//   Listens on 127.0.0.1, port 0, and prints one JSON line {"port": N} once
//   listening. Every message is echoed back with its type (text or binary).
//   `threshold` overrides ws's default compression threshold (1024 bytes);
//   without it the server uses `perMessageDeflate: true`.
//   The first line of each connection's log on stderr says what was
//   negotiated. The process runs until killed.
'use strict';

const { WebSocketServer } = require('ws');

const threshold = process.argv[2];
const perMessageDeflate =
  threshold === undefined ? true : { threshold: Number(threshold) };

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  perMessageDeflate,
  maxPayload: 64 * 1024 * 1024,
});

wss.on('listening', () => {
  process.stdout.write(JSON.stringify({ port: wss.address().port }) + '\n');
});

wss.on('connection', (ws) => {
  process.stderr.write(`connection: extensions=${JSON.stringify(ws.extensions)}\n`);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  ws.on('error', (err) => {
    process.stderr.write(`connection error: ${err.message}\n`);
  });
});
