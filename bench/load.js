// Load generator for bench/processes.py: many busy connections from Node's ws.
//
// Usage: NODE_PATH=tests/interop/node/node_modules node bench/load.js URL CONNECTIONS SECONDS [SIZE]
//   Opens CONNECTIONS connections to an echo server (no compression), then
//   keeps one message of SIZE bytes (default 32) in flight on each: every
//   echo received sends the next. Counts the echoes received during SECONDS
//   after a one-second warm-up and prints one JSON line:
//     {"connections": N, "seconds": S, "messages": M, "rate": M / S}
//   Exit status 2 when connections fail.
'use strict';

const WebSocket = require('ws');

const [url, connectionsArg, secondsArg, sizeArg] = process.argv.slice(2);
const connections = Number(connectionsArg);
const seconds = Number(secondsArg);
const payload = 'x'.repeat(Number(sizeArg || 32));

let counting = false;
let messages = 0;
let open = 0;
const sockets = [];

function fail(error) {
  console.error(`load.js: ${error.message || error}`);
  process.exit(2);
}

// Open connections in batches so the server's accept queue isn't flooded.
function openBatch(start) {
  const end = Math.min(start + 50, connections);
  let pending = end - start;
  for (let i = start; i < end; i++) {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('error', fail);
    ws.on('open', () => {
      open++;
      if (--pending === 0) {
        if (end < connections) openBatch(end);
        else start_load();
      }
    });
    ws.on('message', () => {
      if (counting) messages++;
      ws.send(payload);
    });
    sockets.push(ws);
  }
}

function start_load() {
  for (const ws of sockets) ws.send(payload);
  setTimeout(() => {
    counting = true;
    setTimeout(() => {
      counting = false;
      console.log(JSON.stringify({ connections: open, seconds, messages, rate: messages / seconds }));
      for (const ws of sockets) ws.terminate();
      process.exit(0);
    }, seconds * 1000);
  }, 1000);
}

openBatch(0);
