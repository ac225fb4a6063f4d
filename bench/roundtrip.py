"""Benchmark messages over loopback: syncws against websockets.sync and websocket-client.

Run it from the repository root as ``python bench/roundtrip.py``; it takes
under a minute and benchmarks the syncws of this checkout. This is a
benchmark, not a test: it prints numbers and never fails on them.

What it measures, with echo servers on 127.0.0.1:

(a) latency: 16-byte text messages sent and echoed back one at a time
    (``send`` then ``recv``), N = 5000: round trips per second;
(b) pipelining: 20 000 text messages of 1 KiB sent by one thread while the
    main thread receives their echoes: messages per second;
(c) bulk: 1 MiB binary messages echoed one at a time, N = 100: MB/s of
    payload (10**6 bytes sent, and received back, per second).

Compression is off for (a), (b) and (c); one more row repeats (b) with
each library's default permessage-deflate, on compressible text.

Each server runs in a process of its own, as a real peer would, so client
and server don't share a GIL; the clients run in this process. Every
client × server pair that tells something apart is measured:

* ``syncws → syncws`` against ``websockets → websockets``: the libraries
  end to end;
* ``syncws → websockets`` and ``websockets → syncws``: one side swapped, so
  a difference belongs to that side's library;
* ``websocket-client → …``: a third client, which has no background thread
  (it reads in the caller's thread) and no compression, in (a) and (c)
  only: at (b) its pure-Python UTF-8 validation caps it near 3 000
  messages/s, which says nothing about the servers and would take a
  quarter of the run.

Reading the table: *ratio* is syncws's rate divided by the rate of the same
row with websockets in syncws's place (for ``websocket-client → syncws``,
divided by ``websocket-client → websockets``). Above 1, syncws is faster.
Each number is the best of ``--rounds`` rounds, rounds alternating between
the pairs, so a burst of load on the machine doesn't favour one of them;
noise only ever makes a round slower. Expect a few percent of run-to-run
variation, more on a busy machine: trust ratios far from 1, not the second
decimal. Library defaults are kept (queue sizes, keepalive, UTF-8
validation) except ``max_size``, raised to 2 MiB so 1 MiB messages fit, and
proxies, turned off.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

# Benchmark this checkout's syncws, whatever is installed.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import syncws  # noqa: E402

try:
    import websockets
    import websockets.sync.client
    import websockets.sync.server
except ImportError:
    sys.exit("bench/roundtrip.py compares syncws with websockets, which is not installed: pip install websockets")
try:
    import websocket as websocket_client  # websocket-client
except ImportError:  # optional: its rows are left out
    websocket_client = None

Data = Union[str, bytes]

MAX_SIZE = 2 * 2**20
HOST = "127.0.0.1"

SMALL = "x" * 16
SMALL_N = 5000
MEDIUM = ("0123456789abcdef" * 64)[:1024]
MEDIUM_N = 20000
# Compressible like JSON is: repeated keys, varying values.
MEDIUM_TEXT = "".join(
    f'{{"id": {i}, "name": "user{i}", "active": {str(i % 3 == 0).lower()}}},' for i in range(100)
)[:1024]
LARGE = os.urandom(2**20)
LARGE_N = 100
# Warm-up round trips before each measurement, fewer for big messages.
WARMUP = 200
WARMUP_BYTES = 4 * 2**20
# Messages in flight at most in (b): 128 KiB, far less than loopback buffers.
WINDOW = 128
# A measurement that takes longer than this has hung: say so and stop.
HUNG = 30.0

ECHO_SERVERS = ("syncws", "websockets")


# -- servers, each in a process of its own --------------------------------------------


def _echo(ws: Any) -> None:
    """The handler of both servers: their connections iterate and send alike."""
    try:
        for message in ws:
            ws.send(message)
    except (syncws.ConnectionClosed, websockets.ConnectionClosed):
        pass


def run_server(library: str, compression: Optional[str]) -> None:
    """Serve echo on a free port, print it, and stop when stdin closes."""
    if library == "syncws":
        server: Any = syncws.serve(_echo, HOST, 0, compression=compression, max_size=MAX_SIZE)
        port = server.port
        stop = server.close
    else:
        server = websockets.sync.server.serve(
            _echo, HOST, 0, compression=compression, max_size=MAX_SIZE
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        stop = server.shutdown
    print(port, flush=True)
    sys.stdin.read()  # the parent closes our stdin when it is done, or dies
    stop()


class Servers:
    """The echo servers: one process per library and compression setting."""

    def __init__(self) -> None:
        self.processes: List[subprocess.Popen] = []
        self.uris: Dict[Tuple[str, Optional[str]], str] = {}
        for library in ECHO_SERVERS:
            for compression in (None, "deflate"):
                process = subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--serve", library,
                     "--compression", compression or "none"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                )
                self.processes.append(process)
                assert process.stdout is not None
                port = process.stdout.readline().strip()
                if not port:
                    raise RuntimeError(f"the {library} echo server didn't start")
                self.uris[library, compression] = f"ws://{HOST}:{port}/"

    def close(self) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- clients ----------------------------------------------------------------------------


class Client(NamedTuple):
    """A connection, reduced to what the benchmarks use."""

    send: Callable[[Data], None]
    recv: Callable[[], Data]
    close: Callable[[], None]


def connect_syncws(uri: str, compression: Optional[str]) -> Client:
    ws = syncws.connect(uri, compression=compression, max_size=MAX_SIZE, proxy=None)
    return Client(ws.send, ws.recv, ws.close)


def connect_websockets(uri: str, compression: Optional[str]) -> Client:
    ws = websockets.sync.client.connect(
        uri, compression=compression, max_size=MAX_SIZE, proxy=None, legacy=True
    )
    return Client(ws.send, ws.recv, ws.close)


def connect_websocket_client(uri: str, compression: Optional[str]) -> Client:
    assert compression is None, "websocket-client doesn't do permessage-deflate"
    ws = websocket_client.create_connection(uri, enable_multithread=True)
    send_text, send_binary = ws.send, ws.send_binary

    def send(message: Data) -> None:
        # websocket-client's send() makes a text frame even of bytes.
        if isinstance(message, str):
            send_text(message)
        else:
            send_binary(message)

    return Client(send, ws.recv, ws.close)


CLIENTS: Dict[str, Callable[[str, Optional[str]], Client]] = {
    "syncws": connect_syncws,
    "websockets": connect_websockets,
}
if websocket_client is not None:
    CLIENTS["websocket-client"] = connect_websocket_client


# -- what is measured ----------------------------------------------------------------------


def warm_up(client: Client, message: Data) -> None:
    """Round trips first, so that no measurement pays for first times."""
    for _ in range(max(1, min(WARMUP, WARMUP_BYTES // len(message)))):
        client.send(message)
        client.recv()


def round_trips(client: Client, message: Data, count: int) -> float:
    """Send and receive back ``count`` messages one at a time; return seconds."""
    send, recv = client.send, client.recv
    warm_up(client, message)
    start = time.perf_counter()
    for _ in range(count):
        send(message)
        if recv() != message:
            raise AssertionError("the echo differs from the message")
    return time.perf_counter() - start


def pipelined(client: Client, message: Data, count: int) -> float:
    """Send ``count`` messages from a thread while receiving them here; return seconds.

    The sender stays at most ``WINDOW`` messages ahead of the receiver.
    Without a bound, 20 MB pushed into an echo server can fill every buffer
    on the way, and a library whose reading waits on its writing (a lock
    held across a blocked ``sendall``) then deadlocks: that would measure the
    socket buffers, not the library.
    """
    send, recv = client.send, client.recv
    warm_up(client, message)
    window = threading.BoundedSemaphore(WINDOW)
    acquire, release = window.acquire, window.release

    def send_all() -> None:
        for _ in range(count):
            acquire()
            send(message)

    sender = threading.Thread(target=send_all)
    start = time.perf_counter()
    sender.start()
    for _ in range(count):
        recv()
        release()
    elapsed = time.perf_counter() - start
    sender.join()
    return elapsed


class Benchmark(NamedTuple):
    title: str
    run: Callable[[Client], float]  # returns seconds
    rate: Callable[[float], float]  # seconds -> a rate, higher is better
    show: Callable[[float], str]  # the rate as printed
    compression: Optional[str]
    pairs: List[Tuple[str, str]]


def _pairs(clients: List[str]) -> List[Tuple[str, str]]:
    return [(client, server) for client in clients for server in ECHO_SERVERS]


def _count(rate: float) -> str:
    return f"{rate / 1000:,.1f}k" if rate >= 1000 else f"{rate:,.1f}"


def benchmarks() -> List[Benchmark]:
    every_client = list(CLIENTS)
    return [
        Benchmark(
            f"(a) 16 B round trips, N={SMALL_N}",
            lambda c: round_trips(c, SMALL, SMALL_N),
            lambda s: SMALL_N / s, lambda r: f"{1e6 / r:.1f} µs ({_count(r)}/s)", None, _pairs(every_client),
        ),
        Benchmark(
            f"(b) 1 KiB pipelined, N={MEDIUM_N}",
            lambda c: pipelined(c, MEDIUM, MEDIUM_N),
            lambda s: MEDIUM_N / s, lambda r: f"{_count(r)} msg/s", None, _pairs(["syncws", "websockets"]),
        ),
        Benchmark(
            f"(c) 1 MiB round trips, N={LARGE_N}",
            lambda c: round_trips(c, LARGE, LARGE_N),
            lambda s: LARGE_N * len(LARGE) / s / 1e6, lambda r: f"{r:,.0f} MB/s", None, _pairs(every_client),
        ),
        Benchmark(
            f"(b') 1 KiB pipelined, deflate, N={MEDIUM_N}",
            lambda c: pipelined(c, MEDIUM_TEXT, MEDIUM_N),
            lambda s: MEDIUM_N / s, lambda r: f"{_count(r)} msg/s", "deflate", _pairs(["syncws", "websockets"]),
        ),
    ]


def measure(benchmark: Benchmark, servers: Servers, rounds: int) -> Dict[Tuple[str, str], float]:
    """Best time of each client → server pair over ``rounds`` alternating rounds."""
    best: Dict[Tuple[str, str], float] = {}
    for _ in range(rounds):
        for client_name, server_name in benchmark.pairs:
            client = CLIENTS[client_name](servers.uris[server_name, benchmark.compression], benchmark.compression)
            watchdog = threading.Timer(HUNG, _hung, (benchmark.title, client_name, server_name))
            watchdog.daemon = True
            watchdog.start()
            try:
                seconds = benchmark.run(client)
            finally:
                watchdog.cancel()
                client.close()
            key = (client_name, server_name)
            best[key] = min(best.get(key, seconds), seconds)
    return best


def _hung(title: str, client: str, server: str) -> None:
    """Watchdog: a measurement hung; a blocked recv() can't be interrupted portably."""
    print(f"\n{title}: {client} → {server} hung for {HUNG} s; giving up", file=sys.stderr, flush=True)
    os._exit(1)  # the servers see their stdin close and exit too


def counterpart(client: str, server: str) -> Optional[Tuple[str, str]]:
    """The pair to compare with: websockets wherever syncws is; None for baselines."""
    if "syncws" not in (client, server):
        return None
    swap = {"syncws": "websockets"}
    return swap.get(client, client), swap.get(server, server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per pair; the best is kept (default 3)")
    parser.add_argument("--serve", choices=ECHO_SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--compression", choices=["none", "deflate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, None if args.compression == "none" else args.compression)
        return

    from syncws.masking import HAS_SPEEDUPS

    print(
        f"syncws {syncws.__version__} (C speedups: {'yes' if HAS_SPEEDUPS else 'no'}), "
        f"websockets {websockets.__version__}, "
        f"websocket-client {getattr(websocket_client, '__version__', 'not installed')}"
    )
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"servers in their own processes, {HOST}; best of {args.rounds} rounds"
    )
    print()
    started = time.perf_counter()
    servers = Servers()
    try:
        header = f"{'benchmark':<38} {'client → server':<30} {'result':>18} {'ratio':>6}"
        print(header)
        print("-" * len(header))
        for benchmark in benchmarks():
            best = measure(benchmark, servers, args.rounds)
            rates = {pair: benchmark.rate(seconds) for pair, seconds in best.items()}
            title = benchmark.title
            for pair in benchmark.pairs:
                other = counterpart(*pair)
                ratio = f"{rates[pair] / rates[other]:.2f}" if other in rates else ""
                result = benchmark.show(rates[pair])
                print(f"{title:<38} {pair[0] + ' → ' + pair[1]:<30} {result:>18} {ratio:>6}", flush=True)
                title = ""
            print()
    finally:
        servers.close()
    print("ratio: syncws's rate / the same row with websockets in syncws's place; > 1 means syncws is faster.")
    print(f"total time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
