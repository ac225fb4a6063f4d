// The Node `ws` server of bench/server_load.py: the event-loop comparison.
//
// Usage: NODE_PATH=tests/interop/node/node_modules node bench/node/server.js [--plain]
//   Listens on 127.0.0.1, port 0, prints the port on one line, and runs until
//   its stdin closes. Compression off. Like the handler of
//   bench/servers.py, the first message of a connection picks what
//   the server does: "sink" counts messages until "end" and answers the
//   count; anything else echoes every following message. With --plain it
//   echoes every message, the first one too, as `python -m syncws serve`
//   does (bench/busy.py).
'use strict';

const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  backlog: 1024,
  perMessageDeflate: false,
  maxPayload: 32 * 1024 * 1024,
});

wss.on('listening', () => {
  process.stdout.write(`${wss.address().port}\n`);
});

const plain = process.argv.includes('--plain');

wss.on('connection', (ws) => {
  let mode = plain ? 'echo' : null;
  let count = 0;
  ws.on('message', (data, isBinary) => {
    if (mode === null) {
      mode = data.toString();
    } else if (mode !== 'sink') {
      ws.send(data, { binary: isBinary });
    } else if (!isBinary && data.toString() === 'end') {
      ws.send(String(count));
      count = 0;
    } else {
      count += 1;
    }
  });
  ws.on('error', () => {});
});

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
