"""Benchmark servers alone under many connections, the load coming from Node.

Run it from the repository root as ``python bench/server_load.py`` (about
four minutes; ``--quick``: about a minute). It needs ``node`` and the ``ws``
package of ``tests/interop/node/node_modules`` (``npm ci`` there). This is
a benchmark, not a test: it prints numbers and never fails on them.

What it measures: one server process at a time (syncws, the design's
ceiling of ``bench/ceiling.py``, websockets.sync, and Node's ``ws`` as an
event-loop reference), each started afresh, serving the echo handler of
``bench/servers.py`` with compression off. The load is
``bench/node/load.js``, a single Node process, so that the client's cost is
small and the same for every server: it opens 100, then 1000 connections
(all of them before the clock starts), and each connection does 16-byte
round trips, one message in flight, for ``--seconds`` seconds.

Reported per server and connection count:

* msg/s: echoes received by the load generator per second, all
  connections together;
* min / median per connection: echoes of the slowest and the median
  connection, and *stalled*: connections that got no echo at all in the
  window (plus any that failed to open): a server that serves some
  connections and starves the others shows here, not in the total;
* RSS idle: the server process's ``VmRSS`` once listening, before the
  load (the interpreter and the library imported);
* peak RSS: ``VmHWM`` of the server process at the end of the run (its
  high-water mark, the handshakes included), and RSS per connection:
  ``(VmHWM - RSS before the load) / connections``;
* threads: the most threads the server process had (sampled every 0.1 s);
* CPU and µs/msg: the server process's CPU time during the window (all its
  threads, from /proc, 10 ms ticks), as a share of one core and per echo.
  A server using a whole core is CPU-bound and µs/msg is its cost; one
  using less is waiting (on the load generator, or on a machine too busy
  to run it): µs/msg is the steadier number on a loaded machine;
* ratios: syncws's msg/s and peak RSS divided by the ceiling's and by
  websockets.sync's, from the same round.

``--switch-interval 0.05`` runs the Python servers with
``sys.setswitchinterval(0.05)`` instead of Python's 5 ms: with 2000 threads,
most of them ready at once, the default makes the interpreter hand its lock
from thread to thread so often that the servers spend milliseconds of CPU
per message (see ``bench/NOTES.rst``).

Rounds alternate between the servers; with ``--rounds`` > 1 the medians
are printed. Both the load generator and the server share the machine's
cores, as they would on a 2-core box; on a loaded machine trust the ratios
and the stalled counts, not the absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from ceiling_compare import describe_machine  # noqa: E402
from servers import NODE_MODULES, start_server, stop_server  # noqa: E402

LOAD = os.path.join(BENCH, "node", "load.js")
SERVERS = ("syncws", "ceiling", "websockets", "node")
#: How the load generator speaks to each server.
PROTOCOLS = {"syncws": "ws", "ceiling": "raw", "websockets": "ws", "node": "ws"}
SAMPLE_EVERY = 0.1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (every thread), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM (KiB) and Threads of a process, from /proc/PID/status."""
    values = {}
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                values[key] = int(value.split()[0])
    return values


class Result(NamedTuple):
    per_second: float
    opened: int
    failed: int
    stalled: int
    min: int
    median: int
    rss_before: int  # KiB
    peak_rss: int  # KiB, VmHWM
    threads: int  # the most seen
    open_seconds: float
    cpu_share: float  # the server's CPU seconds per second of the window (1.0: one core)
    cpu_per_message: float  # the server's CPU seconds per echo in the window


def run_one(library: str, connections: int, seconds: float, switch_interval: Optional[float]) -> Result:
    """Start a server, load it from Node, sample it, stop it."""
    server = start_server(library, switch_interval)
    pid = server.process.pid
    try:
        time.sleep(0.5)  # let the server's imports settle before the baseline
        before = status(pid)["VmRSS"]
        most_threads = [status(pid)["Threads"]]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_EVERY):
                try:
                    most_threads[0] = max(most_threads[0], status(pid)["Threads"])
                except (OSError, KeyError):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load = subprocess.Popen(
            ["node", LOAD, PROTOCOLS[library], str(server.port), str(connections), str(seconds)],
            env=dict(os.environ, NODE_PATH=NODE_MODULES), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert load.stdout is not None
        cpu: Dict[str, float] = {}
        lines = []
        for line in load.stdout:  # "start", "stop", then the JSON report
            if line.strip() in ("start", "stop"):
                cpu[line.strip()] = cpu_seconds(pid)
            else:
                lines.append(line)
        stderr = load.stderr.read() if load.stderr is not None else ""
        load.wait(seconds + 150)
        done.set()
        sampler.join()
        peak = status(pid)["VmHWM"]
    finally:
        stop_server(server)
    if load.returncode != 0 or not lines:
        raise RuntimeError(f"the load generator failed against {library}: {stderr.strip()[-500:]}")
    if stderr.strip():
        print(f"  load.js against {library}: {stderr.strip()[-300:]}", file=sys.stderr)
    report = json.loads(lines[-1])
    window_cpu = cpu.get("stop", 0.0) - cpu.get("start", 0.0)
    return Result(
        report["per_second"], report["opened"], report["failed"],
        report["stalled"] + report["failed"] + (connections - report["opened"] - report["failed"]),
        report["min"], report["median"], before, peak, most_threads[0], report["open_seconds"],
        window_cpu / seconds, window_cpu / max(report["messages"], 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows: a rough look")
    parser.add_argument("--seconds", type=float, help="window of round trips per run (default 10; --quick: 4)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, alternating servers (default 1)")
    parser.add_argument("--connections", type=int, nargs="+", default=[100, 1000], help="default: 100 1000")
    parser.add_argument(
        "--switch-interval", type=float, metavar="SECONDS",
        help="sys.setswitchinterval() in the Python servers (default: Python's, 0.005)",
    )
    args = parser.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    interval = args.switch_interval if args.switch_interval is not None else sys.getswitchinterval()
    print(f"{describe_machine()}; Node {node}; load: bench/node/load.js, 16 B round trips, {seconds:g} s per run")
    print(f"Python servers' switch interval: {interval * 1000:g} ms")
    print()
    started = time.perf_counter()
    header = (
        f"{'server':<11} {'conns':>5} {'msg/s':>8} {'min/median':>11} {'stalled':>7} {'RSS idle':>8} {'peak RSS':>9}"
        f" {'KiB/conn':>8} {'threads':>7} {'CPU':>5} {'µs/msg':>7}"
        f" {'÷ceiling msg/s, RSS':>20} {'÷websockets msg/s, RSS':>23}"
    )
    for connections in args.connections:
        results: Dict[str, List[Result]] = {library: [] for library in SERVERS}
        for r in range(args.rounds):
            for i in range(len(SERVERS)):
                library = SERVERS[(r + i) % len(SERVERS)]
                results[library].append(run_one(library, connections, seconds, args.switch_interval))
        print(header)
        print("-" * len(header))
        for library in SERVERS:
            runs = results[library]
            rate = statistics.median(run.per_second for run in runs)
            peak = statistics.median(run.peak_rss for run in runs)
            per_connection = statistics.median((run.peak_rss - run.rss_before) / connections for run in runs)
            worst = max(runs, key=lambda run: run.stalled)
            ratios = []
            for other in ("ceiling", "websockets"):
                pairs: List[Tuple[float, float]] = [
                    (mine.per_second / theirs.per_second, mine.peak_rss / theirs.peak_rss)
                    for mine, theirs in zip(runs, results[other])
                ]
                ratios.append(
                    f"{statistics.median(p[0] for p in pairs):.2f}, {statistics.median(p[1] for p in pairs):.2f}"
                )
            idle = statistics.median(run.rss_before for run in runs)
            print(
                f"{library:<11} {connections:>5} {rate:>8,.0f} {f'{worst.min}/{worst.median}':>11}"
                f" {worst.stalled:>7} {idle / 1024:>6.1f}Mi {peak / 1024:>7.1f}Mi {per_connection:>8,.0f}"
                f" {max(run.threads for run in runs):>7}"
                f" {statistics.median(run.cpu_share for run in runs):>5.0%}"
                f" {statistics.median(run.cpu_per_message for run in runs) * 1e6:>7.1f}"
                f" {ratios[0]:>20} {ratios[1]:>23}",
                flush=True,
            )
        print()
    print(
        "msg/s, RSS: medians over rounds; min/median: echoes per connection in the window; "
        "ratios: per round, median; stalled: no echo in the window, or never opened."
    )
    print(f"total time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
