"""Benchmark permessage-deflate: syncws against websockets, and the threshold.

Run it as ``PYTHONPATH=. python bench/compression.py``; it takes about 30
seconds. This is a benchmark, not a test: it prints numbers and only warns.

For message sizes from 16 B to 1 MiB, of JSON-ish text (a rotating pool of
different messages, as an API would send) and of random bytes, a client
streams messages to a server on 127.0.0.1 over one connection, then waits
for the server's acknowledgement of the last one. Reported per message:

* msg/s: messages per second, send + receive + (de)compression, end to end;
* wire: bytes the client wrote to the socket per message, frame headers
  included (syncws: ``ws.stats.bytes_out``; websockets: a counting socket).

Configurations:

* ``off``: syncws, ``compression=None``;
* ``t=0``: syncws, every message compressed (``DeflateSettings(threshold=0)``);
* ``default``: syncws, ``compression="deflate"`` (threshold
  :data:`~syncws.extensions.permessage_deflate.DEFAULT_THRESHOLD`);
* ``wsk``: websockets (sync client and server), its default compression,
  which compresses every message.

End-to-end rates between two processes on one machine vary by +-30% from
run to run (scheduling, other load); compare orders of magnitude there.

Then, for the threshold, the codec alone (deterministic bytes, stable
times): JSON messages of small sizes, every one compressed, with and without
context takeover; bytes saved per message against the CPU that compressing
and inflating costs, as the link speed below which compression pays.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import subprocess
import threading
import time
import zlib
from typing import Any, Callable, Dict, List, Tuple

try:
    import websockets
    from websockets.sync.client import connect as wsk_connect
    from websockets.sync.server import serve as wsk_serve
except ImportError:
    sys.exit("bench/compression.py compares syncws with websockets, which is not installed: pip install websockets")

import syncws
from syncws.extensions.permessage_deflate import (
    DEFAULT_THRESHOLD,
    ClientDeflateFactory,
    DeflateSettings,
    ServerDeflateFactory,
)

SIZES = [16, 64, 128, 256, 1024, 16 * 1024, 1024 * 1024]
#: Bytes streamed per measurement (bounded below and above in messages):
#: enough for a stable rate, small enough for the whole run to stay < 60 s.
BYTES_PER_RUN = 6 * 1024 * 1024
MIN_MESSAGES, MAX_MESSAGES = 4, 2000
#: Seconds per timed run, after a calibration run.
TARGET_SECONDS = 0.08
#: Timed runs of each measurement; the best rate is kept (noise only slows).
REPEAT = 3
END = "__end__"
MAX_SIZE = 4 * 1024 * 1024

SYNCWS_CONFIGS: Dict[str, Any] = {
    "off": None,
    "t=0": DeflateSettings(threshold=0),
    "default": "deflate",
}


# -- data --------------------------------------------------------------------------


def json_text(size: int, seed: int) -> str:
    """JSON-ish text of exactly ``size`` characters: records of an API response."""
    rnd = random.Random(seed)
    names = ["alice", "bob", "carol", "dave", "eve", "mallory", "trent", "peggy"]
    parts: List[str] = []
    length = 0
    while length < size:
        record = json.dumps(
            {"id": rnd.randrange(10**6), "user": rnd.choice(names), "active": rnd.random() < 0.5,
             "score": round(rnd.random() * 100, 2), "ts": 1700000000 + rnd.randrange(10**6)}
        )
        parts.append(record)
        length += len(record) + 1
    return ",".join(parts)[:size]


def pool(kind: str, size: int) -> List[Any]:
    """Different messages to cycle through (identical ones would flatter deflate)."""
    # More distinct messages than a 32 KiB window holds: repeats within the
    # window would compress to a few bytes and flatter deflate.
    count = max(4, min(4096, 256 * 1024 // size))
    if kind == "json":
        return [json_text(size, seed) for seed in range(count)]
    return [os.urandom(size) for _ in range(count)]


def message_count(size: int) -> int:
    """Messages for the first (calibration) run."""
    return max(MIN_MESSAGES, min(MAX_MESSAGES, BYTES_PER_RUN // size))


def scaled(n: int, seconds: float) -> int:
    """Messages for a run of about TARGET_SECONDS, given that ``n`` took ``seconds``."""
    return max(MIN_MESSAGES, min(MAX_MESSAGES * 10, int(n * TARGET_SECONDS / max(seconds, 1e-6))))


# -- servers (in a child process): receive until END, then acknowledge ----------------


def sink(ws: Any) -> None:
    for message in ws:
        if message == END:
            ws.send("ok")


def serve_forever() -> None:
    """``--serve``: run both servers, print their ports, stop when stdin closes.

    The servers live in their own process, as they would on another
    machine: client and server don't share a GIL, so the rates measure the
    libraries rather than thread switching.
    """
    syncws_server = syncws.serve(sink, "127.0.0.1", 0, max_size=MAX_SIZE, ping_interval=None)
    wsk_server = wsk_serve(sink, "127.0.0.1", 0, max_size=MAX_SIZE, ping_interval=None)
    threading.Thread(target=wsk_server.serve_forever, daemon=True).start()
    print(syncws_server.port, wsk_server.socket.getsockname()[1], flush=True)
    sys.stdin.read()  # until the parent closes the pipe (or dies)
    syncws_server.close()
    wsk_server.shutdown()


def start_servers() -> Tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    syncws_port, wsk_port = proc.stdout.readline().split()
    return proc, f"ws://127.0.0.1:{syncws_port}", f"ws://127.0.0.1:{wsk_port}"


class CountingSocket(socket.socket):
    """A socket that counts the bytes written with sendall (websockets' only write)."""

    bytes_out = 0

    def sendall(self, data: Any, *args: Any) -> None:  # type: ignore[override]
        self.bytes_out += len(data)
        super().sendall(data, *args)


# -- end-to-end measurements -----------------------------------------------------------


def stream(ws: Any, messages: List[Any], n: int) -> float:
    """Send ``n`` messages from the pool, then END; seconds until the ack."""
    send = ws.send
    start = time.perf_counter()
    for i in range(n):
        send(messages[i % len(messages)])
    send(END)
    assert ws.recv() == "ok"
    return time.perf_counter() - start


def best_rate(ws: Any, messages: List[Any], n: int, written: Callable[[], int]) -> Tuple[float, float]:
    """Calibrate, then keep the best of REPEAT runs: ``(msg/s, wire bytes/msg)``."""
    n = scaled(n, stream(ws, messages, n))  # also warms up, and fills the window
    best = float("inf")
    wire = 0.0
    for _ in range(REPEAT):
        before = written()
        best = min(best, stream(ws, messages, n))
        wire = (written() - before) / n
    # END costs a few bytes per run, whatever the configuration: remove it.
    before = written()
    stream(ws, messages, 0)
    wire -= (written() - before) / n
    return n / best, wire


def measure_syncws(uri: str, compression: Any, messages: List[Any], n: int) -> Tuple[float, float]:
    """``(messages per second, wire bytes per message)`` for syncws."""
    with syncws.connect(uri, compression=compression, max_size=MAX_SIZE, proxy=None, ping_interval=None) as ws:
        return best_rate(ws, messages, n, lambda: ws.stats.bytes_out)


def measure_websockets(uri: str, messages: List[Any], n: int) -> Tuple[float, float]:
    """The same for websockets with its default compression."""
    host, port = uri[len("ws://"):].split(":")
    sock = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect((host, int(port)))
    with wsk_connect(uri, sock=sock, max_size=MAX_SIZE, ping_interval=None, proxy=None) as ws:
        return best_rate(ws, messages, n, lambda: sock.bytes_out)


# -- the threshold: the codec alone ------------------------------------------------------


def codec_cost(size: int, takeover: bool) -> Tuple[float, float]:
    """Compress and inflate a stream of JSON messages with a pair of codecs,
    as negotiated by default between syncws peers (12-bit windows).

    Returns ``(bytes saved per message, microseconds per message)``, both
    ends' CPU together; the saving counts the frame header, whose length
    depends on the payload's.
    """
    settings = DeflateSettings(threshold=0, client_no_context_takeover=not takeover)
    client_factory = ClientDeflateFactory(settings)
    accepted = ServerDeflateFactory().accept([client_factory.offer()[1]])
    assert accepted is not None
    response, receiver = accepted
    sender = client_factory.accept(response)
    messages = [message.encode() for message in pool("json", size)]
    n = max(200, min(len(messages) * 4, 2_000_000 // size))
    for message in messages[:50]:  # warm up: fill the window
        receiver.decompress(sender.compress(message, True), True)
    best = float("inf")
    saved = 0
    for _ in range(5):
        saved = 0
        start = time.perf_counter()
        for i in range(n):
            message = messages[i % len(messages)]
            payload = sender.compress(message, True)
            receiver.decompress(payload, True)
            saved += header_size(len(message)) + len(message) - header_size(len(payload)) - len(payload)
        best = min(best, time.perf_counter() - start)
    return saved / n, best / n * 1e6


def header_size(length: int) -> int:
    """A client frame's header: 2 bytes, the extended length, 4 of mask."""
    return 6 + (0 if length < 126 else 2 if length < 1 << 16 else 8)


def threshold_report() -> None:
    """Where does compressing a JSON message stop paying for itself?

    Deflate trades CPU for bytes. It pays when sending the bytes it saves
    would take longer than compressing and inflating them: on a link slower
    than saved bytes / added time. That "break-even link" is printed in
    Mbit/s; compression pays on slower links, costs on faster ones.
    """
    print()
    print("threshold: JSON messages, codec only (compress + inflate, both ends' CPU), 12-bit windows")
    print(f"{'size':>7} | {'context takeover':^30} | {'no context takeover':^30}")
    print(f"{'':>7} | {'saved B':>8} {'cost µs':>8} {'break-even':>12} | "
          f"{'saved B':>8} {'cost µs':>8} {'break-even':>12}")
    rows = []
    for size in [16, 32, 64, 96, 128, 192, 256, 512, 1024, 4096]:
        cells = []
        row = [size]
        for takeover in (True, False):
            saved, cost = codec_cost(size, takeover)
            mbps = saved * 8 / cost  # bits per µs = Mbit/s
            row.append(mbps)
            link = f"{mbps:7.0f} Mbit/s" if saved > 0 else "      never"
            cells.append(f"{saved:8.1f} {cost:8.1f} {link:>12}")
        rows.append(row)
        print(f"{human(size):>7} | {cells[0]} | {cells[1]}", flush=True)
    # Compression is worth it on links up to the break-even speed. A server
    # on a 100 Mbit/s uplink is the bar used here.
    bar = 100
    pays = [size for size, with_takeover, _ in rows if with_takeover >= bar]
    pays_bare = [size for size, _, without in rows if without >= bar]
    print()
    print(f"break-even above {bar} Mbit/s from {min(pays) if pays else None} B with context takeover, "
          f"from {min(pays_bare) if pays_bare else None} B without; DEFAULT_THRESHOLD = {DEFAULT_THRESHOLD} B")


# -- main -------------------------------------------------------------------------------


def human(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1 << 10:
        return f"{size >> 10} KiB"
    return f"{size} B"


def main() -> None:
    began = time.perf_counter()
    print(f"syncws {getattr(syncws, '__version__', '?')} vs websockets {websockets.__version__}, "
          f"Python {sys.version.split()[0]}, zlib {zlib.ZLIB_RUNTIME_VERSION}; "
          f"DEFAULT_THRESHOLD = {DEFAULT_THRESHOLD} B")
    print("msg/s: messages per second, client -> server in another process (higher is better);")
    print("wire: bytes the client wrote per message, frame header included")
    proc, syncws_uri, wsk_uri = start_servers()
    try:
        for kind in ("json", "random"):
            print()
            print(f"{kind} {'text' if kind == 'json' else 'bytes'}")
            print(f"{'size':>7} | {'off':^15} | {'t=0':^15} | {'default':^15} | {'websockets':^15} | "
                  f"{'default/wsk':>11} {'t=0/off':>8} {'wire t=0':>8}")
            print(f"{'':>7} | {'msg/s':>7} {'wire':>7} | {'msg/s':>7} {'wire':>7} | {'msg/s':>7} {'wire':>7} | "
                  f"{'msg/s':>7} {'wire':>7} | {'speed':>11} {'speed':>8} {'/ off':>8}")
            for size in SIZES:
                messages = pool(kind, size)
                n = message_count(size)
                row = {name: measure_syncws(syncws_uri, compression, messages, n)
                       for name, compression in SYNCWS_CONFIGS.items()}
                row["wsk"] = measure_websockets(wsk_uri, messages, n)
                cells = " | ".join(f"{rate:7.0f} {wire:7.0f}" for rate, wire in row.values())
                print(
                    f"{human(size):>7} | {cells} | {row['default'][0] / row['wsk'][0]:11.2f} "
                    f"{row['t=0'][0] / row['off'][0]:8.2f} {row['t=0'][1] / row['off'][1]:8.2f}",
                    flush=True,
                )
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
    threshold_report()
    print(f"\n(ran in {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve_forever()
    else:
        main()
