// Client for syncws interop tests: Node's ws with permessage-deflate.
//
// Usage: node client.js ws://127.0.0.1:PORT [threshold]
//   Connects with `perMessageDeflate: true` (or {threshold} when given) to
//   an echo server, sends a fixed set of messages (text and binary, empty to
//   1 MiB, compressible and random, fragmented, a burst of small ones),
//   checks that each echo equals what was sent, closes with 1000, and
//   prints one JSON line:
//     {"extensions": "<Sec-WebSocket-Extensions of the response>",
//      "sent": [["text"|"binary", length, sha256 hex], ...],
//      "mismatches": ["...", ...], "close": [code, reason]}
//   Exit status 0 when every echo matched, 1 otherwise, 2 on error.
'use strict';

const crypto = require('crypto');
const WebSocket = require('ws');

const url = process.argv[2];
const threshold = process.argv[3];
const perMessageDeflate =
  threshold === undefined ? true : { threshold: Number(threshold) };

// Deterministic compressible text: words from a small vocabulary.
function words(size, seed) {
  const vocabulary = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta',
    '"id":', '"name":', '{', '}', '[', ']', ',', 'true', 'null', 'é', '€', '😀'];
  const parts = [];
  let length = 0;
  let state = seed >>> 0 || 1;
  while (length < size) {
    state = (state * 1103515245 + 12345) >>> 0;
    const word = vocabulary[state % vocabulary.length] + ' ';
    parts.push(word);
    length += Buffer.byteLength(word);
  }
  const out = parts.join('');
  // Cut on a character boundary at or below `size` bytes.
  let buffer = Buffer.from(out);
  buffer = buffer.subarray(0, size);
  return buffer.toString('utf8').replace(/\uFFFD+$/, '');
}

// Each entry: {data: string|Buffer} or {fragments: [string|Buffer, ...]}.
const messages = [];
for (const size of [0, 1, 127, 128, 129, 1024, 65536, 1 << 20]) {
  messages.push({ data: words(size, size + 1) });
  messages.push({ data: Buffer.from(words(size, size + 2)) });
  messages.push({ data: crypto.randomBytes(size) });
}
messages.push({ data: Buffer.alloc(1 << 20) }); // 1 MiB of zeros
messages.push({ fragments: [words(1000, 7), words(10, 8), '', words(70000, 9)] });
messages.push({ fragments: [crypto.randomBytes(100), Buffer.from(words(5000, 10)), Buffer.alloc(0)] });
for (let i = 0; i < 300; i++) {
  messages.push({ data: JSON.stringify({ id: i, name: `user${i % 17}`, active: i % 3 === 0 }) });
}

function asBuffer(data) {
  return Buffer.isBuffer(data) ? data : Buffer.from(data);
}

function describe(message) {
  const binary = message.fragments
    ? Buffer.isBuffer(message.fragments[0])
    : Buffer.isBuffer(message.data);
  const payload = message.fragments
    ? Buffer.concat(message.fragments.map(asBuffer))
    : asBuffer(message.data);
  return {
    binary,
    payload,
    entry: [binary ? 'binary' : 'text', payload.length,
      crypto.createHash('sha256').update(payload).digest('hex')],
  };
}

const expected = messages.map(describe);
const mismatches = [];
let extensions = null;
let received = 0;

const ws = new WebSocket(url, { perMessageDeflate, maxPayload: 64 * 1024 * 1024 });
const watchdog = setTimeout(() => {
  process.stderr.write(`timed out after ${received} of ${messages.length} echoes\n`);
  process.exit(2);
}, 40000);

ws.on('upgrade', (response) => {
  extensions = response.headers['sec-websocket-extensions'] || null;
});

ws.on('open', () => {
  for (const message of messages) {
    if (message.fragments) {
      const last = message.fragments.length - 1;
      message.fragments.forEach((fragment, index) => {
        ws.send(fragment, { binary: Buffer.isBuffer(fragment), fin: index === last });
      });
    } else {
      ws.send(message.data, { binary: Buffer.isBuffer(message.data) });
    }
  }
});

ws.on('message', (data, isBinary) => {
  const want = expected[received];
  if (want === undefined) {
    mismatches.push(`unexpected extra message of ${data.length} bytes`);
  } else if (isBinary !== want.binary) {
    mismatches.push(`message ${received}: binary=${isBinary}, expected ${want.binary}`);
  } else if (!want.payload.equals(data)) {
    mismatches.push(`message ${received}: ${data.length} bytes differ from the ${want.payload.length} sent`);
  }
  received += 1;
  if (received === messages.length) {
    ws.close(1000, 'done');
  }
});

ws.on('close', (code, reason) => {
  clearTimeout(watchdog);
  if (received !== messages.length) {
    mismatches.push(`closed after ${received} of ${messages.length} echoes`);
  }
  process.stdout.write(JSON.stringify({
    extensions,
    sent: expected.map((e) => e.entry),
    mismatches,
    close: [code, reason.toString()],
  }) + '\n');
  process.exit(mismatches.length ? 1 : 0);
});

ws.on('error', (err) => {
  process.stderr.write(`error: ${err.message}\n`);
  process.exit(2);
});
