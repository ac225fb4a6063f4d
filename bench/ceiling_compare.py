"""Benchmark syncws against its design's ceiling and websockets.sync, one run.

Run it from the repository root as ``python bench/ceiling_compare.py``
(about two minutes; ``--quick``: about thirty seconds). It benchmarks the
syncws of this checkout. This is a benchmark, not a test: it prints numbers
and never fails on them.

The ceiling (``bench/ceiling.py``) is syncws's design without the WebSocket
protocol: a reader thread, a bounded queue and a write lock per connection,
over raw TCP with a 5-byte header (type, length). It delivers what a
WebSocket ``recv()`` delivers (whole messages, text decoded) but has no
handshake, masking, UTF-8 validation, pings or closing timeouts. syncws ÷
ceiling says how much of what the design allows syncws achieves; syncws ÷
websockets.sync compares it with the other threaded WebSocket library.

Rows, each library talking to itself (client and server the same library),
with compression off everywhere (``compression=None``; permessage-deflate is
``bench/compression.py``'s subject):

(a) 16 B round trips: a text message sent and its echo received, one at a
    time: round trips per second;
(b) pipelined 1 KiB one way: the client streams text messages of 1 KiB and
    the server only counts them, then answers the count: messages per
    second, from the first send to the answer;
(c) connect + close: open a connection (TCP, and for WebSocket the opening
    handshake and the server's handler thread), then close it (closing
    handshake): connections per second, one after the other;
(d) echo 1 MiB and (e) echo 16 MiB: binary messages echoed one at a time:
    MB/s of payload (10**6 bytes sent, and received back, per second).

Each server runs in a process of its own, so client and server don't share
a GIL; the clients run in this process. Every row is measured ``--rounds``
times; within a round each library takes its turn, in an order that rotates
from round to round, so a burst of load hits all of them alike. Printed:
the median rate of each library, and the median over rounds of the
per-round ratios (with their range): a ratio compares two measurements taken
seconds apart, which is what survives a loaded machine. Above 1, syncws is
faster. On 2 shared cores, trust ratios, not absolute rates, and not the
second decimal. Library defaults are kept (queue sizes, keepalive, UTF-8
validation) except ``max_size``, raised to 32 MiB, and proxies, off.

The servers are ``bench/servers.py``'s, which ``bench/server_load.py``
(the server-only scenario) shares.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Tuple

# Benchmark this checkout's syncws, whatever is installed.
BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCH)

import syncws  # noqa: E402

import ceiling  # noqa: E402
from roundtrip import Client, round_trips  # noqa: E402
from servers import ECHO, HOST, LIBRARIES, MAX_SIZE, SINK, SINK_END, start_server, stop_server  # noqa: E402

try:
    import websockets
    import websockets.sync.client
    import websockets.sync.server
except ImportError:
    sys.exit("bench/ceiling_compare.py compares syncws with websockets, which is not installed: pip install websockets")

#: A measurement that takes longer than this has hung: say so and stop.
HUNG = 120.0

SMALL = "x" * 16
MEDIUM = ("0123456789abcdef" * 64)[:1024]
LARGE = os.urandom(2**20)
HUGE = os.urandom(16 * 2**20)


# -- clients ----------------------------------------------------------------------------


def _open(library: str, port: int) -> Any:
    if library == "syncws":
        return syncws.connect(f"ws://{HOST}:{port}/", compression=None, max_size=MAX_SIZE, proxy=None)
    if library == "ceiling":
        return ceiling.connect(HOST, port, max_size=MAX_SIZE)
    return websockets.sync.client.connect(
        f"ws://{HOST}:{port}/", compression=None, max_size=MAX_SIZE, proxy=None, legacy=True
    )


def connect(library: str, port: int, mode: str) -> Client:
    """Open a connection and tell the server what to do with it."""
    ws = _open(library, port)
    ws.send(mode)
    return Client(ws.send, ws.recv, ws.close)


# -- what is measured ----------------------------------------------------------------------


def one_way(client: Client, message: str, count: int) -> float:
    """Stream ``count`` messages, then wait for the server's count; return seconds."""
    send = client.send
    for _ in range(min(count, 200)):  # warm-up
        send(message)
    send(SINK_END)
    client.recv()
    start = time.perf_counter()
    for _ in range(count):
        send(message)
    send(SINK_END)
    received = int(client.recv())
    elapsed = time.perf_counter() - start
    if received != count:
        raise AssertionError(f"the server counted {received} messages of {count}")
    return elapsed


def connect_close(library: str, port: int, count: int) -> float:
    """Open and close ``count`` connections one after the other; return seconds."""
    for _ in range(min(count, 20)):  # warm-up
        _open(library, port).close()
    start = time.perf_counter()
    for _ in range(count):
        _open(library, port).close()
    return time.perf_counter() - start


class Row(NamedTuple):
    title: str
    #: (library, port) -> seconds
    run: Callable[[str, int], float]
    #: how many things a run does, for the rate
    count: float
    unit: str


def _with_client(mode: str, measure: Callable[[Client], float]) -> Callable[[str, int], float]:
    def run(library: str, port: int) -> float:
        client = connect(library, port, mode)
        try:
            return measure(client)
        finally:
            client.close()

    return run


def rows(quick: bool) -> List[Row]:
    n_small, n_medium, n_connect, n_large, n_huge = (
        (2000, 5000, 100, 30, 4) if quick else (5000, 20000, 300, 100, 8)
    )
    return [
        Row(f"(a) 16 B round trips, N={n_small}", _with_client(ECHO, lambda c: round_trips(c, SMALL, n_small)),
            n_small, "/s"),
        Row(f"(b) 1 KiB pipelined one way, N={n_medium}", _with_client(SINK, lambda c: one_way(c, MEDIUM, n_medium)),
            n_medium, "msg/s"),
        Row(f"(c) connect + close, N={n_connect}", lambda library, port: connect_close(library, port, n_connect),
            n_connect, "conn/s"),
        Row(f"(d) echo 1 MiB, N={n_large}", _with_client(ECHO, lambda c: round_trips(c, LARGE, n_large)),
            n_large * len(LARGE) / 1e6, "MB/s"),
        # glibc serves the first few 16 MiB buffers with fresh mmaps (page
        # faults on every page) until its mmap threshold adapts: warm up more.
        Row(f"(e) echo 16 MiB, N={n_huge}", _with_client(ECHO, lambda c: round_trips(c, HUGE, 3) and round_trips(c, HUGE, n_huge)),
            n_huge * len(HUGE) / 1e6, "MB/s"),
    ]


def _hung(title: str, library: str) -> None:
    """Watchdog: a measurement hung; a blocked recv() can't be interrupted portably."""
    print(f"\n{title}: {library} hung for {HUNG} s; giving up", file=sys.stderr, flush=True)
    os._exit(1)  # the servers see their stdin close and exit too


def measure(row: Row, ports: Dict[str, int], rounds: int) -> List[Dict[str, float]]:
    """Rates of every library, round by round, the order rotating each round."""
    results = []
    for r in range(rounds):
        rates: Dict[str, float] = {}
        for i in range(len(LIBRARIES)):
            library = LIBRARIES[(r + i) % len(LIBRARIES)]
            watchdog = threading.Timer(HUNG, _hung, (row.title, library))
            watchdog.daemon = True
            watchdog.start()
            try:
                rates[library] = row.count / row.run(library, ports[library])
            finally:
                watchdog.cancel()
        results.append(rates)
    return results


def ratio(results: List[Dict[str, float]], library: str, other: str) -> Tuple[float, float, float]:
    """Median, min and max over rounds of library's rate ÷ other's."""
    ratios = [rates[library] / rates[other] for rates in results]
    return statistics.median(ratios), min(ratios), max(ratios)


def _rate(value: float) -> str:
    return f"{value / 1000:,.1f}k" if value >= 10000 else f"{value:,.0f}"


def describe_machine() -> str:
    """Python, OS, CPU model and count: the first lines of every report."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} × {model}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds per row (default 5; --quick: 3)")
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds: a rough look")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)

    from syncws.masking import HAS_SPEEDUPS

    print(f"syncws {syncws.__version__} (C speedups: {'yes' if HAS_SPEEDUPS else 'no'}), websockets {websockets.__version__}")
    print(f"{describe_machine()}; servers in their own processes, {HOST}; compression off; {rounds} rounds")
    print()
    started = time.perf_counter()
    servers = [start_server(library) for library in LIBRARIES]
    try:
        ports = {server.library: server.port for server in servers}
        header = (
            f"{'row':<34} {'syncws':>10} {'ceiling':>10} {'websockets':>10} {'unit':>6}"
            f" {'syncws÷ceiling':>18} {'syncws÷websockets':>18}"
        )
        print(header)
        print("-" * len(header))
        for row in rows(args.quick):
            results = measure(row, ports, rounds)
            medians = {lib: statistics.median(rates[lib] for rates in results) for lib in LIBRARIES}
            ratios = []
            for other in ("ceiling", "websockets"):
                median, low, high = ratio(results, "syncws", other)
                ratios.append(f"{median:.2f} ({low:.2f}–{high:.2f})")
            print(
                f"{row.title:<34} {_rate(medians['syncws']):>10} {_rate(medians['ceiling']):>10}"
                f" {_rate(medians['websockets']):>10} {row.unit:>6} {ratios[0]:>18} {ratios[1]:>18}",
                flush=True,
            )
    finally:
        for server in servers:
            stop_server(server)
    print()
    print("rates: medians over rounds; ratios: median of the per-round ratios (min–max); > 1: syncws is faster.")
    print(f"total time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
