"""The servers of the ceiling benchmarks, each in a process of its own.

``python bench/servers.py LIBRARY`` serves :func:`handler` on a free port of
127.0.0.1 with compression off, prints the port on one line, answers each
line it reads with the CPU seconds it has used (:func:`server_cpu`), and
stops when its standard input closes. An optional second argument sets
the interpreter's switch interval (:func:`sys.setswitchinterval`). LIBRARY is ``syncws`` (this checkout's),
``ceiling`` (``bench/ceiling.py``) or ``websockets`` (websockets.sync).
:func:`start_server` also starts ``node``: Node's ``ws`` (``bench/node/server.js``).

A server process imports only the library it serves, so that its memory
(measured by ``bench/server_load.py``) is that library's and not the
others'. The file descriptor limit is raised to the hard limit: the
server-only scenario opens 1000+ connections.
"""

from __future__ import annotations

import compileall
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any, NamedTuple, Optional, Tuple, Type

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
HOST = "127.0.0.1"
MAX_SIZE = 32 * 2**20
LIBRARIES = ("syncws", "ceiling", "websockets")
#: The ceiling with the opening round trip of bench/ceiling.py: connect +
#: close is also measured against it.
CEILING_OPENING = "ceiling-opening"
NODE_SERVER = os.path.join(BENCH, "node", "server.js")
NODE_MODULES = os.path.join(REPO, "tests", "interop", "node", "node_modules")

# The first message of a connection picks what the server does with it.
ECHO, SINK = "echo", "sink"
#: Ends a SINK stream; the server answers how many messages came before it.
SINK_END = "end"

# The served library's ConnectionClosed, set by serve().
_closed: Tuple[Type[BaseException], ...] = ()


def handler(connection: Any) -> None:
    """The handler of every server: ECHO or SINK, as the first message says.

    A connection that closes without a message (connect + close) ends here
    at once; the library's ConnectionClosed ends the handler quietly.
    """
    try:
        mode = connection.recv()
        if mode == SINK:
            count = 0
            for message in connection:
                if message == SINK_END:
                    connection.send(str(count))
                    count = 0
                else:
                    count += 1
        else:
            for message in connection:
                connection.send(message)
    except _closed:
        pass


def serve(library: str) -> None:
    """Serve :func:`handler`, print the port, and stop when stdin closes."""
    global _closed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if library == "syncws":
        sys.path.insert(0, REPO)  # this checkout's syncws, whatever is installed
        import syncws

        _closed = (syncws.ConnectionClosed,)
        server: Any = syncws.serve(handler, HOST, 0, compression=None, max_size=MAX_SIZE, backlog=1024)
        port, stop = server.port, server.close
    elif library in ("ceiling", CEILING_OPENING):
        import ceiling

        _closed = (ceiling.ConnectionClosed,)
        server = ceiling.serve(handler, HOST, 0, max_size=MAX_SIZE, opening=library == CEILING_OPENING)
        port, stop = server.port, server.close
    elif library == "websockets":
        import logging

        import websockets.sync.server

        # websockets logs "unexpected internal error ... stream of frames
        # ended" for some connections that the load generator closes: one
        # traceback per connection at 1000 connections, and no effect on the
        # measurement.
        logging.getLogger("websockets").setLevel(logging.CRITICAL)
        _closed = (websockets.ConnectionClosed,)
        server = websockets.sync.server.serve(handler, HOST, 0, compression=None, max_size=MAX_SIZE)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port, stop = server.socket.getsockname()[1], server.shutdown
    else:
        raise ValueError(f"unknown library {library!r}")
    print(port, flush=True)
    # Each line on stdin asks for the CPU time this process has used so far
    # (every thread, those that ended included). The parent closes our stdin
    # when it is done, or dies.
    for _ in sys.stdin:
        print(time.process_time(), flush=True)
    stop()


class Server(NamedTuple):
    """A server process and the port it listens on."""

    library: str
    process: "subprocess.Popen[str]"
    port: int


def start_server(library: str, switch_interval: Optional[float] = None) -> Server:
    """Start one server process: a library of LIBRARIES, CEILING_OPENING, or "node" (Node's ws).

    ``switch_interval``: for the Python servers, the interpreter's
    :func:`sys.setswitchinterval` (None: Python's default, 5 ms).
    """
    if library == "node":
        command = ["node", NODE_SERVER]
        env = dict(os.environ, NODE_PATH=NODE_MODULES)
    else:
        command = [sys.executable, os.path.abspath(__file__), library]
        if switch_interval is not None:
            command.append(str(switch_interval))
        # A server runs from compiled bytecode, as an installed package does
        # (pip compiles it at install): with PYTHONDONTWRITEBYTECODE set,
        # every server would compile its library from source at start,
        # which costs memory (and time) that no deployment pays.
        _compile_libraries()
        env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    if not port:
        process.kill()
        process.wait()
        raise RuntimeError(f"the {library} server didn't start")
    return Server(library, process, int(port))


def _compile_libraries() -> None:
    """Write the bytecode of this checkout's syncws and of the benchmarks, once."""
    global _compiled
    if not _compiled:
        for directory in (os.path.join(REPO, "syncws"), BENCH):
            compileall.compile_dir(directory, quiet=1)
        _compiled = True


_compiled = False


def server_cpu(server: Server) -> float:
    """CPU seconds the server process has used so far, all its threads."""
    assert server.process.stdin is not None and server.process.stdout is not None
    server.process.stdin.write("\n")
    server.process.stdin.flush()
    return float(server.process.stdout.readline())


def stop_server(server: Server) -> None:
    """Close the server's stdin (it exits) and wait; kill it if it doesn't."""
    assert server.process.stdin is not None
    server.process.stdin.close()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python bench/servers.py syncws|ceiling|websockets [SWITCH_INTERVAL]")
    if len(sys.argv) == 3:
        sys.setswitchinterval(float(sys.argv[2]))
    serve(sys.argv[1])
