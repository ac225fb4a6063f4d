"""Benchmark ``python -m syncws serve --processes N``: messages/s at many busy connections.

Run it from the repository root as ``python bench/processes.py``; it takes
about half a minute. This is a benchmark, not a test: it prints numbers and
never fails on them.

For each N (``--processes``, default 1 and 2), it starts the echo server
with N worker processes on 127.0.0.1, then Node's ``ws`` (``bench/load.js``,
from ``tests/interop/node/node_modules``) opens ``--connections`` connections
(default 1000) and keeps one 32-byte message in flight on each: every echo
sends the next. The rate is echoes received per second over ``--seconds``,
after a one-second warm-up. Node runs in one process of its own, so the N
workers and the load generator share the machine's cores.

Reading the numbers: each worker holds connections/N connections, so
besides a second core it also has half the threads contending for its
interpreter lock; the gain from 1 to 2 processes can exceed 2x. On a busy
machine, runs vary several-fold: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO / "tests" / "interop" / "node" / "node_modules"


def run(processes: int, connections: int, seconds: float) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    server = subprocess.Popen(
        [sys.executable, "-m", "syncws", "serve", "--processes", str(processes), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        port = int(line.split(":")[2].split("/")[0])
        load = subprocess.run(
            ["node", str(REPO / "bench" / "load.js"), f"ws://127.0.0.1:{port}/", str(connections), str(seconds)],
            capture_output=True, text=True, env=dict(os.environ, NODE_PATH=str(NODE_MODULES)),
            timeout=seconds + 120,
        )
        if load.returncode != 0:
            raise SystemExit(f"load.js failed: {load.stderr.strip()}")
        return json.loads(load.stdout)  # type: ignore[no-any-return]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    if not (NODE_MODULES / "ws").is_dir():
        raise SystemExit("needs Node's ws: npm ci --prefix tests/interop/node")
    print(f"{os.cpu_count()} CPUs, {args.connections} connections, {args.seconds:g} s per run, 32-byte echoes")
    print(f"{'--processes':>12} {'messages/s':>12}")
    for processes in args.processes:
        result = run(processes, args.connections, args.seconds)
        print(f"{processes:>12} {result['rate']:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
