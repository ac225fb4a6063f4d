"""Benchmark thousands of busy connections: ``python -m syncws serve`` against Node's ``ws``.

Run it from the repository root as ``python bench/busy.py`` (about five
minutes; ``--quick``: one minute). It needs ``node`` and the ``ws`` package
of ``tests/interop/node/node_modules`` (``npm ci --prefix tests/interop/node``).
This is a benchmark, not a test: it prints numbers and never fails on them.

The servers, each started afresh for every run:

* ``node``: Node's ``ws`` (``bench/node/server.js``), the event-loop reference;
* ``syncws``: the command line's echo server, ``python -m syncws serve``,
  one process (this checkout's syncws, or ``--before``'s);
* ``syncws×2``: the same with ``--processes 2``: a supervisor and two
  worker processes sharing the port.

The load is one Node process (``bench/node/load.js --plain``): it opens
``--connections`` connections (all of them before the clock starts), then
each does 16-byte round trips, one message in flight, for ``--seconds``;
every message is echoed, the first one too (Node's server runs with
``--plain`` for that). The load generator and the servers share the
machine's cores.

Reported per server and connection count:

* msg/s: echoes received per second, all connections together;
* min / median: echoes of the slowest and the median connection in the
  window, and *stalled*: connections without a single echo in the window
  (or that never opened): a server that starves some connections shows
  here, not in the total;
* CPU: the server processes' CPU time in the window (every thread, the
  workers' for ``syncws×2``) as a share of one core, and per echo (µs);
* cs/msg: the server threads' context switches (voluntary and not, from
  ``/proc/PID/task/*/status``) in the window, per echo: how many times a
  thread was put to sleep or preempted for each message. Unlike the rate,
  it hardly depends on what else loads the machine;
* gen CPU: the load generator's CPU time in the window, as a share of one
  core: what is left of the machine for the servers;
* RSS/conn: the server processes' peak resident memory (``VmHWM``) less
  their resident memory before the load, per connection; threads: the most
  the server processes had;
* load: the machine's 1-minute load average as the window opened.

``--idle`` holds the connections open without a message instead, and
reports the server's resident memory per idle connection once all are open.

Opening thousands of connections needs as many file descriptors on each
side: the limit is raised to the hard limit (``ulimit -Hn``) here and in the
processes started; a run over what it allows fails with the reason. Linux
also counts each thread against ``/proc/sys/kernel/threads-max`` and
``pid_max`` (two threads per syncws connection).

``--before DIR`` adds the servers ``before`` and ``before×2``, the same
command run with ``PYTHONPATH=DIR`` (another checkout, e.g. a ``git
worktree`` of an earlier commit): before and after in one run, alternating.

``--python`` names the interpreter of the syncws servers (this one by
default); given several (``--python python3.11 python3.13t``), each syncws
server runs on each, named after it (``syncws 3.13t``): a free-threaded
CPython against one with the GIL, in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from ceiling_compare import describe_machine  # noqa: E402
from servers import NODE_MODULES, NODE_SERVER  # noqa: E402

LOAD = BENCH / "node" / "load.js"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerSpec(NamedTuple):
    """How to start one of the servers compared."""

    name: str
    processes: int  # 0: Node's ws
    repo: Optional[Path]  # the syncws checkout; None for Node
    python: str = sys.executable  # the syncws servers' interpreter


def python_tag(python: str) -> str:
    """``3.11``, or ``3.13t`` for a free-threaded build: what a server's name says of its interpreter."""
    return subprocess.run(
        [python, "-c", "import sys, sysconfig; print('%d.%d%s' % (*sys.version_info[:2], "
         "'t' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


class Running(NamedTuple):
    process: "subprocess.Popen[str]"
    port: int
    pids: List[int]  # the processes that serve (the workers under a supervisor)


def children(pid: int) -> List[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    if int(file.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def start(spec: ServerSpec) -> Running:
    """Start a server and wait until it listens."""
    if spec.repo is None:
        process = subprocess.Popen(
            ["node", NODE_SERVER, "--plain"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, NODE_PATH=NODE_MODULES),
        )
        assert process.stdout is not None
        port = int(process.stdout.readline())
        return Running(process, port, [process.pid])
    command = [spec.python, "-m", "syncws", "serve", "--host", "127.0.0.1", "--port", "0"]
    if spec.processes > 1:
        command += ["--processes", str(spec.processes)]
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(spec.repo)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    assert process.stdout is not None
    line = process.stdout.readline()  # "serving on ws://127.0.0.1:PORT/ ..."
    if "serving on" not in line:
        process.kill()
        process.wait()
        raise RuntimeError(f"{spec.name} didn't start: {line.strip()!r}")
    port = int(line.split("ws://", 1)[1].split("/", 1)[0].rpartition(":")[2])
    pids = [process.pid] if spec.processes <= 1 else children(process.pid)
    return Running(process, port, pids)


def stop(running: Running) -> None:
    """Stop a server (SIGTERM; SIGKILL if it lingers) and wait for it."""
    if running.process.stdin is not None:
        running.process.stdin.close()  # Node's server ends with its stdin
    running.process.send_signal(signal.SIGTERM)
    try:
        running.process.wait(30)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()


class Sample(NamedTuple):
    cpu: float  # seconds, every thread
    switches: int  # context switches of the threads alive now
    rss: int  # KiB
    peak: int  # KiB, VmHWM
    threads: int


def sample(pids: Sequence[int], switches: bool = True) -> Sample:
    """CPU, memory and (optionally) context switches of a group of processes, from /proc."""
    cpu = 0.0
    count = rss = peak = threads = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rpartition(")")[2].split()
            cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            with open(f"/proc/{pid}/status") as file:
                for line in file:
                    key, _, value = line.partition(":")
                    if key == "VmRSS":
                        rss += int(value.split()[0])
                    elif key == "VmHWM":
                        peak += int(value.split()[0])
                    elif key == "Threads":
                        threads += int(value)
            if switches:
                for task in os.listdir(f"/proc/{pid}/task"):
                    try:
                        with open(f"/proc/{pid}/task/{task}/status") as file:
                            for line in file:
                                if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                                    count += int(line.split()[1])
                    except OSError:
                        pass  # the thread ended
        except OSError:
            pass  # the process ended
    return Sample(cpu, count, rss, peak, threads)


def load_average() -> float:
    with open("/proc/loadavg") as file:
        return float(file.read().split()[0])


class Result(NamedTuple):
    per_second: float
    stalled: int
    min: int
    median: int
    cpu_share: float
    cpu_per_message: float  # seconds
    switches_per_message: float
    generator_share: float
    rss_per_connection: float  # KiB
    threads: int
    load: float
    open_seconds: float


def run(spec: ServerSpec, connections: int, seconds: float, idle: bool) -> Result:
    """One server, one load: start, measure, stop."""
    running = start(spec)
    try:
        time.sleep(0.5)
        before = sample(running.pids, switches=False)
        most_threads = [before.threads]
        done = threading.Event()

        def watch_threads() -> None:
            while not done.wait(0.5):
                most_threads[0] = max(most_threads[0], sample(running.pids, switches=False).threads)

        watcher = threading.Thread(target=watch_threads, daemon=True)
        watcher.start()
        load = subprocess.Popen(
            ["node", str(LOAD), "ws", str(running.port), str(connections), str(seconds), "--plain"]
            + (["--idle"] if idle else []),
            env=dict(os.environ, NODE_PATH=NODE_MODULES), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert load.stdout is not None and load.stderr is not None
        marks: Dict[str, Tuple[Sample, float, float]] = {}
        lines = []
        for line in load.stdout:  # "start", "stop", then the JSON report
            mark = line.strip()
            if mark in ("start", "stop"):
                marks[mark] = (sample(running.pids, switches=not idle), sample([load.pid], False).cpu, load_average())
            else:
                lines.append(line)
        stderr = load.stderr.read()
        load.wait(60)
        done.set()
        watcher.join()
        after = sample(running.pids, switches=False)
    finally:
        stop(running)
    if load.returncode != 0 or not lines or "start" not in marks or "stop" not in marks:
        raise RuntimeError(f"the load generator failed against {spec.name}: {stderr.strip()[-500:]}")
    if stderr.strip():
        print(f"  load.js against {spec.name}: {stderr.strip()[-300:]}", file=sys.stderr)
    report = json.loads(lines[-1])
    (first, generator_first, load_first), (last, generator_last, _) = marks["start"], marks["stop"]
    messages = max(report["messages"], 1)
    memory = (last.rss if idle else after.peak) - before.rss
    return Result(
        per_second=report["per_second"],
        stalled=report["stalled"] + report["failed"] + (connections - report["opened"] - report["failed"]),
        min=report["min"],
        median=report["median"],
        cpu_share=(last.cpu - first.cpu) / seconds,
        cpu_per_message=(last.cpu - first.cpu) / messages,
        switches_per_message=(last.switches - first.switches) / messages,
        generator_share=(generator_last - generator_first) / seconds,
        rss_per_connection=memory / connections,
        threads=most_threads[0],
        load=load_first,
        open_seconds=report["open_seconds"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--seconds", type=float, help="window of round trips per run (default 10; --quick: 4)")
    parser.add_argument("--quick", action="store_true", help="4-second windows, 1000 and 5000 connections")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, alternating servers (default 1)")
    parser.add_argument(
        "--servers", nargs="+", default=["node", "syncws", "syncws×2"],
        help="among node, syncws, syncws×2 (default: all three)",
    )
    parser.add_argument("--before", type=Path, metavar="DIR", help="also run DIR's syncws: before and before×2")
    parser.add_argument(
        "--python", nargs="+", default=[sys.executable],
        help="the interpreter of the syncws servers (default: this one); several: each server on each",
    )
    parser.add_argument("--idle", action="store_true", help="idle connections: memory per connection")
    args = parser.parse_args()
    if args.quick and parser.get_default("connections") == args.connections:
        args.connections = [1000, 5000]
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    if not (Path(NODE_MODULES) / "ws").is_dir():
        raise SystemExit("needs Node's ws: npm ci --prefix tests/interop/node")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers and load.js

    known = {
        "node": ServerSpec("node", 0, None),
        "syncws": ServerSpec("syncws", 1, REPO),
        "syncws×2": ServerSpec("syncws×2", 2, REPO),
    }
    specs = [known[name] for name in args.servers]
    if args.before is not None:
        specs += [ServerSpec("before", 1, args.before.resolve()), ServerSpec("before×2", 2, args.before.resolve())]
        specs = [spec for spec in specs if spec.processes != 2 or "syncws×2" in args.servers]
    if len(args.python) > 1:
        tags = [python_tag(python) for python in args.python]
        specs = [spec for spec in specs if spec.repo is None] + [
            spec._replace(name=f"{spec.name} {tag}", python=python)
            for python, tag in zip(args.python, tags) for spec in specs if spec.repo is not None
        ]
    width = max(9, *(len(spec.name) for spec in specs))
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{describe_machine()}; Node {node}; servers' Python: {', '.join(args.python)}")
    print(
        f"load: bench/node/load.js, one process, {'idle connections' if args.idle else '16 B round trips'}, "
        f"{seconds:g} s windows; file descriptors: {hard}; threads-max: "
        f"{Path('/proc/sys/kernel/threads-max').read_text().strip()}, "
        f"pid_max: {Path('/proc/sys/kernel/pid_max').read_text().strip()}"
    )
    print()
    started = time.perf_counter()
    header = (
        f"{'server':<{width}} {'conns':>6} {'msg/s':>8} {'min/median':>11} {'stalled':>7} {'CPU':>5} {'µs/msg':>7}"
        f" {'cs/msg':>6} {'gen CPU':>7} {'KiB/conn':>8} {'threads':>7} {'open s':>6} {'load':>5}"
    )
    for connections in args.connections:
        results: Dict[str, List[Result]] = {spec.name: [] for spec in specs}
        for r in range(args.rounds):
            for i in range(len(specs)):
                spec = specs[(r + i) % len(specs)]
                results[spec.name].append(run(spec, connections, seconds, args.idle))
        print(header)
        print("-" * len(header))
        for spec in specs:
            runs = results[spec.name]
            worst = max(runs, key=lambda run: run.stalled)

            def median(field: str) -> float:
                return statistics.median(getattr(run, field) for run in runs)

            print(
                f"{spec.name:<{width}} {connections:>6} {median('per_second'):>8,.0f}"
                f" {f'{worst.min}/{worst.median}':>11} {worst.stalled:>7} {median('cpu_share'):>5.0%}"
                f" {median('cpu_per_message') * 1e6:>7.1f} {median('switches_per_message'):>6.2f}"
                f" {median('generator_share'):>7.0%} {median('rss_per_connection'):>8.1f}"
                f" {max(run.threads for run in runs):>7} {median('open_seconds'):>6.1f} {median('load'):>5.1f}",
                flush=True,
            )
        print()
    print(
        "medians over rounds; min/median and stalled: the worst round; stalled: no echo in the window, "
        "or never opened; load: 1-minute load average as the window opened"
    )
    print(f"total time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
