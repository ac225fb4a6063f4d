"""Benchmark the fan-out with history against pub/sub: publish and delivery rates, memory, recovery.

Run it from the repository root as ``python bench/streams.py`` (about a
minute). It needs ``redis-server`` on the PATH (started here on a free port
of 127.0.0.1, with ``appendonly yes`` and ``--appendfsync``, ``everysec``
unless told, stopped by its PID) and redis-py.
This is a benchmark, not a test: it prints numbers and never fails on them.

What it measures, for :class:`~syncws.fanout.RedisFanout` (pub/sub) and
:class:`~syncws.streams.RedisStreamFanout` (streams, keeping ``--history`` messages, 1000):

* **publish and delivery rates.** A *server* process runs a syncws server
  whose handler subscribes every connection to one channel; a *clients*
  process holds ``--members`` syncws clients of it, each counting what it
  gets; this process publishes ``--messages`` messages of ``--size`` bytes
  as fast as it can, from one thread, then from ``--threads`` threads.
  Reported: publishes per second (the publishing alone), and deliveries
  per second (from the first publish to the last message reaching the last
  member, times the members), with every delivery checked. The streams
  keep every message of a run here (a history of ``--messages`` if that is
  more than ``--history``), as pub/sub's output buffer in Redis holds a
  run's backlog: publishing as fast as it can, a publisher gets ahead of
  the server's reader, and a reader behind by more than the history skips
  what was trimmed (reported as a gap), which would end the run, not
  measure it (docs/performance.rst says when that happens).
* **memory per channel** (streams only): Redis's ``used_memory`` after
  ``--channels`` channels each got ``history`` messages of ``--size``
  bytes, per channel, and ``MEMORY USAGE`` of one channel's keys.
* **recovery** (streams only): a client that comes back with the id of the
  message ``history`` messages back: how long until it has them all.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import syncws  # noqa: E402
from syncws.fanout import Fanout, RedisFanout  # noqa: E402
from syncws.streams import RedisStreamFanout  # noqa: E402

HOST = "127.0.0.1"
CHANNEL = "bench"


def make(backend: str, url: str, history: int) -> Fanout:
    # Limits raised: this measures rates, not the slow-member policy.
    limits: Any = dict(max_pending=2**20, max_pending_bytes=2**30)
    if backend == "pubsub":
        return RedisFanout(url, **limits)
    return RedisStreamFanout(url, history=history, **limits)


def server_process(backend: str, url: str, history: int, members: int, pipe: Any) -> None:
    """The process whose fan-out delivers: a syncws server, each connection a member.

    Says "ready" once ``members`` subscriptions are confirmed.
    """
    logging.basicConfig(level=logging.WARNING, format="server process: %(name)s: %(message)s")
    fanout = make(backend, url, history)
    subscribed = threading.Semaphore(0)

    def handler(websocket: syncws.WebSocketServerProtocol) -> None:
        fanout.subscribe(CHANNEL, websocket)
        subscribed.release()
        try:
            for _ in websocket:
                pass
        finally:
            fanout.unsubscribe_all(websocket)

    server = syncws.serve(handler, HOST, 0, compression=None)
    pipe.send(server.port)
    for _ in range(members):
        subscribed.acquire()
    pipe.send("ready")
    pipe.recv()  # done
    server.close()
    server.wait_closed(10)
    fanout.close()


def clients_process(port: int, members: int, pipe: Any) -> None:
    """The members, in a process of their own: they report when every one has ``count`` messages.

    Each message starts with its number: every member must get each once,
    and in order when ``ordered`` (one publishing thread).
    """
    clients = [syncws.connect(f"ws://{HOST}:{port}/", compression=None, max_queue=None) for _ in range(members)]
    pipe.send("connected")
    while True:
        job = pipe.recv()
        if job is None:
            break
        count, ordered = job
        for index, client in enumerate(clients):
            numbers: List[int] = []
            try:
                while len(numbers) < count:
                    numbers.append(int(client.recv(60).split(b" ", 1)[0]))
            except (TimeoutError, syncws.ConnectionClosed) as exc:
                raise RuntimeError(f"member {index} got {len(numbers)} of {count} messages: {exc}") from None
            assert (numbers if ordered else sorted(numbers)) == list(range(count)), "repeated or out of order"
        pipe.send(time.monotonic())
    for client in clients:
        client.close()


def rates(backend: str, url: str, args: argparse.Namespace) -> None:
    history = max(args.history, args.messages)  # the whole run: see the module's docstring
    context = multiprocessing.get_context("spawn")
    server_pipe, server_end = context.Pipe()
    server = context.Process(target=server_process, args=(backend, url, history, args.members, server_end))
    server.start()
    server_end.close()  # the child's: a child that dies is then an EOFError here
    port = server_pipe.recv()
    clients_pipe, clients_end = context.Pipe()
    clients = context.Process(target=clients_process, args=(port, args.members, clients_end))
    clients.start()
    clients_end.close()
    publisher = make(backend, url, history)
    try:
        assert clients_pipe.recv() == "connected"
        assert server_pipe.recv() == "ready"
        padding = b"x" * args.size
        for threads in (1, args.threads):
            clients_pipe.send((args.messages, threads == 1))
            numbers = iter(range(args.messages))  # next() is atomic: each number once

            def publish() -> None:
                for number in numbers:
                    publisher.publish(CHANNEL, (b"%d " % number + padding)[: max(args.size, 8)])

            workers = [threading.Thread(target=publish) for _ in range(threads)]
            started = time.monotonic()
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            published = time.monotonic() - started
            delivered = clients_pipe.recv() - started
            print(
                f"{type(publisher).__name__:18} {threads} publishing thread{'s' if threads > 1 else ' '}: "
                f"{args.messages / published:8.0f} publishes/s; "
                f"{args.messages * args.members / delivered:8.0f} deliveries/s to {args.members} members "
                f"({args.messages} messages of {args.size} bytes, every one checked)",
                flush=True,
            )
    finally:
        clients_pipe.send(None)
        clients.join(30)
        server_pipe.send("done")
        server.join(30)
        publisher.close()


def memory(url: str, args: argparse.Namespace) -> None:
    import redis

    client = redis.Redis.from_url(url)
    fanout = RedisStreamFanout(url, history=args.history)
    try:
        client.flushdb()
        before = int(client.info("memory")["used_memory"])
        data = b"x" * args.size
        for channel in range(args.channels):
            for _ in range(args.history):
                fanout.publish(f"c{channel}", data)
        after = int(client.info("memory")["used_memory"])
        one = sum(int(client.memory_usage(key) or 0) for key in ("syncws:s:c0", "syncws:m:c0"))
        print(
            f"RedisStreamFanout  memory: {(after - before) / args.channels / 1024:.0f} KiB per channel in Redis "
            f"({args.channels} channels of {args.history} messages of {args.size} bytes; MEMORY USAGE of one: "
            f"{one / 1024:.0f} KiB, {one / args.history:.0f} bytes per message)",
            flush=True,
        )
    finally:
        fanout.close()
        client.close()


def recovery(url: str, args: argparse.Namespace) -> None:
    fanout = RedisStreamFanout(url, history=args.history)

    def handler(websocket: syncws.WebSocketServerProtocol) -> None:
        since = websocket.path.partition("since=")[2] or None
        fanout.subscribe("recovered", websocket, since=since)
        try:
            for _ in websocket:
                pass
        finally:
            fanout.unsubscribe_all(websocket)

    server = syncws.serve(handler, HOST, 0, compression=None)
    try:
        data = b"x" * args.size
        ids: List[str] = [fanout.publish("recovered", data) for _ in range(args.history)]
        timings = []
        for _ in range(5):
            started = time.monotonic()
            with syncws.connect(f"ws://{HOST}:{server.port}/?since={ids[0]}", compression=None, max_queue=None) as client:
                for _ in range(args.history - 1):
                    client.recv(30)
                timings.append(time.monotonic() - started)
        timings.sort()
        print(
            f"RedisStreamFanout  recovery: {args.history - 1} messages of {args.size} bytes to a client back with an old id "
            f"in {timings[2] * 1000:.0f} ms (median of 5; {(args.history - 1) / timings[2]:.0f} messages/s)",
            flush=True,
        )
    finally:
        server.close()
        server.wait_closed(10)
        fanout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=100, help="bytes a message")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--threads", type=int, default=8, help="publishing threads, the second time")
    parser.add_argument("--channels", type=int, default=20, help="channels, for the memory")
    parser.add_argument("--history", type=int, default=1000, help="the stream fan-out's history")
    parser.add_argument(
        "--appendfsync", choices=("everysec", "always"), default="everysec",
        help="Redis's: 'always' is what a history that outlives a crash needs (docs/deployment.rst)",
    )
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("skipped: redis-server is not installed")
        return
    from services import Redis

    redis_server = Redis(Path(tempfile.mkdtemp(prefix="syncws-bench-")), persist=True, appendfsync=args.appendfsync)
    redis_server.start()
    try:
        for backend in ("pubsub", "streams"):
            rates(backend, redis_server.url, args)
        memory(redis_server.url, args)
        recovery(redis_server.url, args)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()
