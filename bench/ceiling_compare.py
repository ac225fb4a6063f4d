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
    handshake): connections per second, one after the other. The ceiling
    has no opening handshake, so this row is also measured against the
    ceiling with an opening round trip (``opening=True`` in
    ``bench/ceiling.py``: the client sends as many bytes as syncws's HTTP
    request and waits for as many as its 101, unparsed), the least any
    protocol costs whose client waits for an answer to its opening;
(d) echo 1 MiB and (e) echo 16 MiB: binary messages echoed one at a time:
    MB/s of payload (10**6 bytes sent, and received back, per second).

Each server runs in a process of its own, so client and server don't share
a GIL; the clients run in this process. Every row is measured ``--rounds``
times; within a round each library takes its turn, in an order that rotates
from round to round, so a burst of load hits all of them alike. Printed:
the median rate of each library, and the median over rounds of the
per-round ratios (with their range): a ratio compares two measurements taken
seconds apart, which is what survives a loaded machine. Above 1, syncws is
faster. Last column and table: CPU time per operation, client and server
processes together (the server reports its own): unlike wall time it hardly
grows when other programs load the machine, so its ratio is the steadier
measure of what syncws costs beside the ceiling (above 1, syncws spends
more). On 2 shared cores, trust ratios, not absolute rates, and not the
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
from servers import (  # noqa: E402
    CEILING_OPENING, ECHO, HOST, LIBRARIES, MAX_SIZE, SINK, SINK_END, Server, server_cpu, start_server, stop_server,
)

try:
    import websockets
    import websockets.sync.client
    import websockets.sync.server
except ImportError:
    sys.exit("bench/ceiling_compare.py compares syncws with websockets, which is not installed: pip install websockets")

#: A measurement that takes longer than this has hung: say so and stop.
HUNG = 120.0

# -- clients ----------------------------------------------------------------------------


def _open(library: str, port: int) -> Any:
    """A connection of ``library`` to its server: send, recv and close alike."""
    if library == "syncws":
        return syncws.connect(f"ws://{HOST}:{port}/", compression=None, max_size=MAX_SIZE, proxy=None)
    if library in ("ceiling", CEILING_OPENING):
        return ceiling.connect(HOST, port, max_size=MAX_SIZE, opening=library == CEILING_OPENING)
    return websockets.sync.client.connect(
        f"ws://{HOST}:{port}/", compression=None, max_size=MAX_SIZE, proxy=None, legacy=True
    )


# -- what is measured ----------------------------------------------------------------------


class Meter:
    """Wall-clock and CPU time of one measurement, client and server processes.

    CPU time per operation doesn't grow when other programs load the
    machine (wall time does), so it is the steadier measure of what each
    library costs. Both processes count every thread's, those that ended
    included; the server reports its own on request.
    """

    def __init__(self, server: Server) -> None:
        self._server = server
        self.wall = self.client_cpu = self.server_cpu = 0.0

    def _server_cpu(self) -> float:
        return server_cpu(self._server)

    def start(self) -> None:
        """Mark the start of the measured part (after warm-up)."""
        self._server_start = self._server_cpu()
        self._client_start = time.process_time()
        self._wall_start = time.perf_counter()

    def stop(self) -> None:
        """Mark its end."""
        self.wall = time.perf_counter() - self._wall_start
        self.client_cpu = time.process_time() - self._client_start
        self.server_cpu = self._server_cpu() - self._server_start


def echoes(ws: Any, meter: Meter, message: Any, count: int, warm_up: int) -> None:
    """Send ``message`` and receive its echo ``count`` times, one at a time."""
    ws.send(ECHO)
    send, recv = ws.send, ws.recv
    for _ in range(warm_up):
        send(message)
        recv()
    meter.start()
    for _ in range(count):
        send(message)
        if recv() != message:
            raise AssertionError("the echo differs from the message")
    meter.stop()


def one_way(ws: Any, meter: Meter, message: str, count: int) -> None:
    """Stream ``count`` messages, then wait for the server's count of them."""
    ws.send(SINK)
    send = ws.send
    for _ in range(min(count, 200)):  # warm-up
        send(message)
    send(SINK_END)
    ws.recv()
    meter.start()
    for _ in range(count):
        send(message)
    send(SINK_END)
    received = int(ws.recv())
    meter.stop()
    if received != count:
        raise AssertionError(f"the server counted {received} messages of {count}")


def connect_close(library: str, port: int, meter: Meter, count: int) -> None:
    """Open and close ``count`` connections one after the other."""
    for _ in range(min(count, 20)):  # warm-up
        _open(library, port).close()
    meter.start()
    for _ in range(count):
        _open(library, port).close()
    meter.stop()


class Row(NamedTuple):
    title: str
    #: (library, port, meter): runs the measurement, meter.start() to stop()
    run: Callable[[str, int, Meter], None]
    #: how many things a run does, for the rate
    amount: float
    unit: str
    #: servers measured in this row besides LIBRARIES
    extra: Tuple[str, ...] = ()


def _with_connection(measure: Callable[[Any, Meter], None]) -> Callable[[str, int, Meter], None]:
    def run(library: str, port: int, meter: Meter) -> None:
        ws = _open(library, port)
        try:
            measure(ws, meter)
        finally:
            ws.close()

    return run


def rows(quick: bool) -> List[Row]:
    n_small, n_medium, n_connect, n_large, n_huge = (
        (2000, 5000, 100, 30, 4) if quick else (5000, 20000, 300, 100, 10)
    )
    small, medium = "x" * 16, ("0123456789abcdef" * 64)[:1024]
    large, huge = os.urandom(2**20), os.urandom(16 * 2**20)
    return [
        Row(f"(a) 16 B round trips, N={n_small}",
            _with_connection(lambda ws, m: echoes(ws, m, small, n_small, 200)), n_small, "/s"),
        Row(f"(b) 1 KiB pipelined one way, N={n_medium}",
            _with_connection(lambda ws, m: one_way(ws, m, medium, n_medium)), n_medium, "msg/s"),
        Row(f"(c) connect + close, N={n_connect}",
            lambda library, port, m: connect_close(library, port, m, n_connect), n_connect, "conn/s",
            (CEILING_OPENING,)),
        Row(f"(d) echo 1 MiB, N={n_large}",
            _with_connection(lambda ws, m: echoes(ws, m, large, n_large, 5)), n_large * len(large) / 1e6, "MB/s"),
        # glibc serves the first 16 MiB buffers with fresh mmaps (a page
        # fault per page) until its mmap threshold adapts: warm up more.
        Row(f"(e) echo 16 MiB, N={n_huge}",
            _with_connection(lambda ws, m: echoes(ws, m, huge, n_huge, 3)), n_huge * len(huge) / 1e6, "MB/s"),
    ]


def _hung(title: str, library: str) -> None:
    """Watchdog: a measurement hung; a blocked recv() can't be interrupted portably."""
    print(f"\n{title}: {library} hung for {HUNG} s; giving up", file=sys.stderr, flush=True)
    os._exit(1)  # the servers see their stdin close and exit too


class Measurement(NamedTuple):
    rate: float  # row.amount per wall-clock second
    cpu: float  # CPU seconds per row.amount, client + server
    client_cpu: float  # the client's share of cpu


def measure(row: Row, servers: Dict[str, Server], rounds: int) -> List[Dict[str, Measurement]]:
    """Every library's measurement, round by round, the order rotating each round."""
    results = []
    for r in range(rounds):
        round_results: Dict[str, Measurement] = {}
        libraries = LIBRARIES + row.extra
        for i in range(len(libraries)):
            library = libraries[(r + i) % len(libraries)]
            meter = Meter(servers[library])
            watchdog = threading.Timer(HUNG, _hung, (row.title, library))
            watchdog.daemon = True
            watchdog.start()
            try:
                row.run(library, servers[library].port, meter)
            finally:
                watchdog.cancel()
            round_results[library] = Measurement(
                row.amount / meter.wall, (meter.client_cpu + meter.server_cpu) / row.amount,
                meter.client_cpu / row.amount,
            )
        results.append(round_results)
    return results


def ratio(values: List[float]) -> str:
    """Median of per-round ratios, with their range."""
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


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
    parser.add_argument("--rows", default="abcde", help="which rows, by letter (default abcde)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)

    from syncws.masking import HAS_SPEEDUPS

    print(f"syncws {syncws.__version__} (C speedups: {'yes' if HAS_SPEEDUPS else 'no'}), websockets {getattr(websockets, '__version__', '?')}")
    print(f"{describe_machine()}; servers in their own processes, {HOST}; compression off; {rounds} rounds")
    print()
    started = time.perf_counter()
    cpu_log: List[Tuple[Row, Dict[str, Tuple[float, float]]]] = []
    servers = {library: start_server(library) for library in LIBRARIES + (CEILING_OPENING,)}
    try:
        header = (
            f"{'row':<34} {'syncws':>9} {'ceiling':>9} {'websockets':>10} {'unit':>6}"
            f" {'syncws÷ceiling':>17} {'syncws÷websockets':>18} {'CPU/op: syncws÷ceiling':>23}"
        )
        print(header)
        print("-" * len(header))
        for row in rows(args.quick):
            if row.title[1] not in args.rows:
                continue
            results = measure(row, servers, rounds)
            rate = {lib: statistics.median(result[lib].rate for result in results) for lib in LIBRARIES}
            print(
                f"{row.title:<34} {_rate(rate['syncws']):>9} {_rate(rate['ceiling']):>9}"
                f" {_rate(rate['websockets']):>10} {row.unit:>6}"
                f" {ratio([r['syncws'].rate / r['ceiling'].rate for r in results]):>17}"
                f" {ratio([r['syncws'].rate / r['websockets'].rate for r in results]):>18}"
                f" {ratio([r['syncws'].cpu / r['ceiling'].cpu for r in results]):>23}",
                flush=True,
            )
            if CEILING_OPENING in row.extra:
                print(
                    f"    the ceiling with an opening round trip ({_rate(statistics.median(r[CEILING_OPENING].rate for r in results))}"
                    f" {row.unit}): syncws ÷ it {ratio([r['syncws'].rate / r[CEILING_OPENING].rate for r in results])},"
                    f" it ÷ the ceiling {ratio([r[CEILING_OPENING].rate / r['ceiling'].rate for r in results])}",
                    flush=True,
                )
            cpu = {
                lib: (statistics.median(r[lib].cpu for r in results), statistics.median(r[lib].client_cpu for r in results))
                for lib in LIBRARIES
            }
            cpu_log.append((row, cpu))
    finally:
        for server in servers.values():
            stop_server(server)
    print()
    print("CPU time per operation, client + server processes (medians; in brackets: the client's share):")
    for row, cpu in cpu_log:
        unit = "MB" if row.unit == "MB/s" else row.unit.split("/")[0] or "round trip"
        print(f"  {row.title:<36} per {unit}")
        print("      " + "   ".join(f"{lib} {_cpu(cpu[lib][0])} ({_cpu(cpu[lib][1])})" for lib in LIBRARIES))
    print()
    print(
        "rates: medians over rounds; ratios: median of the per-round ratios (min–max); rate ratios > 1: "
        "syncws is faster; CPU ratio > 1: syncws spends more CPU per operation."
    )
    print(f"total time: {time.perf_counter() - started:.1f} s")


def _cpu(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"


if __name__ == "__main__":
    main()
