"""Benchmark a fan-out's delivery while members stop reading.

Run it from the repository root as ``python bench/fanout.py`` (about 20
seconds per backend). The Redis backend needs ``redis-server`` on the PATH
(started here on a free port of 127.0.0.1, stopped by its PID) and
redis-py. This is a benchmark, not a test: it prints numbers and never
fails on them.

What it measures: one syncws server whose handler subscribes every
connection to one room of a :class:`~syncws.fanout.LocalFanout` or a
:class:`~syncws.fanout.RedisFanout`; ``--members`` syncws clients in the
room, of which ``--stalled`` stop reading (a 4 KiB receive buffer and a
receive queue of one message). First ``--fill`` messages of 512 KiB fill
the stalled members' buffers, so that every one of them has a send that
can't finish; their mailboxes may hold all that follows
(``max_pending_bytes`` is 1 GiB, ``timeout`` 60 s: none is dropped during the
run). Then ``--messages`` small messages, one every ``--interval`` seconds,
each carrying the time it was published; every reading member notes when
it arrives.

``--size`` pads each of these messages with text to that many bytes of
UTF-8 (``--accented``: with "é", two bytes each, rather than ASCII).

Each backend runs twice: with no member stalled, for reference, then with
``--stalled``. Reported per run: the delivery latency (publish to ``recv()`` in the
reading member) over every message and reading member: median, 99th
percentile and maximum; the server process's CPU time per delivery while
the small messages went out (the fan-out's work, the server's, and the
stalled members', which is nothing); the most threads the process had; and
the fan-out's own count of members with a sender thread of their own
(``slow_members``).
The reading members run in a process of their own (the stalled ones, which
do nothing, in the server's), so the latencies are the fan-out's and the
server's, plus the readers' ``recv()``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import syncws  # noqa: E402
from syncws.fanout import Fanout, LocalFanout, RedisFanout  # noqa: E402

HOST = "127.0.0.1"


class Reader:
    """A member that reads all the time, noting the latency of each tick."""

    def __init__(self, websocket: syncws.WebSocketClientProtocol) -> None:
        self.websocket = websocket
        self.latencies: List[float] = []
        self.filled = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for message in self.websocket:
                if isinstance(message, str) and message.startswith("tick "):
                    # CLOCK_MONOTONIC: the same clock in every process.
                    self.latencies.append(time.monotonic() - float(message.split()[1]))
                else:
                    self.filled += 1
        except syncws.ConnectionClosed:
            pass


def readers_process(port: int, count: int, fill: int, messages: int, pipe: Any) -> None:
    """The reading members, in a process of their own: their work isn't the server's."""
    readers = [
        Reader(syncws.connect(f"ws://{HOST}:{port}/", compression=None, max_queue=None)) for _ in range(count)
    ]
    pipe.send("connected")
    while any(r.filled < fill for r in readers):
        time.sleep(0.05)
    pipe.send("filled")
    deadline = time.monotonic() + 30
    while any(len(r.latencies) < messages for r in readers) and time.monotonic() < deadline:
        time.sleep(0.05)
    pipe.send([x for r in readers for x in r.latencies])
    for reader in readers:
        reader.websocket.close()


def stalled_member(port: int) -> Tuple[syncws.WebSocketClientProtocol, socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, port))
    return syncws.connect(f"ws://{HOST}:{port}/", sock=sock, compression=None, max_queue=1), sock


def run(fanout: Fanout, args: argparse.Namespace) -> None:
    def handler(websocket: syncws.WebSocketServerProtocol) -> None:
        fanout.subscribe("room", websocket)
        try:
            for _ in websocket:
                pass
        finally:
            fanout.unsubscribe_all(websocket)

    server = syncws.serve(handler, HOST, 0, compression=None)
    stalled: List[Tuple[Any, socket.socket]] = []
    context = multiprocessing.get_context("spawn")
    pipe, child_end = context.Pipe()
    reading = args.members - args.stalled
    child = context.Process(target=readers_process, args=(server.port, reading, args.fill, args.messages, child_end))
    child.start()
    peak_threads = threading.active_count()
    try:
        assert pipe.recv() == "connected"
        stalled = [stalled_member(server.port) for _ in range(args.stalled)]
        while len(fanout.members("room")) < args.members:
            time.sleep(0.01)
        for _ in range(args.fill):
            fanout.publish("room", b"f" * (512 * 1024))
        assert pipe.recv() == "filled"  # the stalled members' sends are blocked by now
        time.sleep(0.5)
        padding = ("é" * (args.size // 2) if args.accented else "x" * args.size)
        cpu = time.process_time()
        for _ in range(args.messages):
            fanout.publish("room", f"tick {time.monotonic()} {padding}")
            peak_threads = max(peak_threads, threading.active_count())
            time.sleep(args.interval)
        slow = fanout.stats.slow_members
        latencies = sorted(pipe.recv())  # once every reader has them all
        cpu = time.process_time() - cpu
        expected = args.messages * reading
        ms = [1000 * latencies[int(q * (len(latencies) - 1))] for q in (0.5, 0.99, 1.0)]
        print(
            f"{type(fanout).__name__:12} {reading} reading, {args.stalled} stalled: "
            f"{len(latencies)}/{expected} delivered; latency median {ms[0]:.1f} ms, "
            f"99th {ms[1]:.1f} ms, max {ms[2]:.1f} ms; server CPU {1e6 * cpu / max(1, len(latencies)):.1f} µs "
            f"a delivery; server's peak threads {peak_threads}, members with a sender of their own {slow}",
            flush=True,
        )
    finally:
        child.join(30)
        for websocket, sock in stalled:
            sock.shutdown(socket.SHUT_RDWR)
            try:
                while True:
                    websocket.recv(10)
            except (syncws.ConnectionClosed, TimeoutError):
                pass
        server.close()
        server.wait_closed(10)
        fanout.close()


def run_both(make: Any, args: argparse.Namespace) -> None:
    """Without stalled members, then with them."""
    for stalled in sorted({0, args.stalled}):
        run(make(), argparse.Namespace(**dict(vars(args), stalled=stalled)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--stalled", type=int, default=50)
    parser.add_argument("--fill", type=int, default=16, help="512 KiB messages that fill the stalled members")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--size", type=int, default=0, help="bytes of text added to each small message")
    parser.add_argument("--accented", action="store_true", help="pad with 'é' (2 bytes in UTF-8), not ASCII")
    parser.add_argument("--backend", choices=["local", "redis", "both"], default="both")
    args = parser.parse_args()
    limits: Any = dict(timeout=60, max_pending_bytes=2**30, max_pending=2**20)
    if args.backend in ("local", "both"):
        run_both(lambda: LocalFanout(**limits), args)
    if args.backend in ("redis", "both"):
        if shutil.which("redis-server") is None:
            print("RedisFanout: skipped, redis-server is not installed")
            return
        from services import Redis

        redis_server = Redis(Path(tempfile.mkdtemp(prefix="syncws-bench-")))
        redis_server.start()
        try:
            run_both(lambda: RedisFanout(redis_server.url, **limits), args)
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()
