"""Peers that vanish (no FIN, no RST) are detected within ping_interval + ping_timeout.

Each test puts the peer in a network namespace joined by veth (see netns.py),
lets it connect, then sets its link down: every packet is dropped from then
on. syncws.sockopts.tune_connection derives TCP keepalive and
TCP_USER_TIMEOUT from the ping settings, so the kernel gives the connection
up on its own; the tests measure when. Skipped, with the reason, where
network namespaces can't be created (not root, not Linux, no iproute2).
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import socket
import threading
import time
from typing import Any, Iterator, Optional, Tuple

import pytest

import syncws
from conftest import wait_for
from netns import vanishing_peer
from services import need_network_namespaces
from syncws.sockopts import connection_failed, tune_connection

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _network_namespaces() -> None:
    need_network_namespaces()

PING_INTERVAL = 1.0
PING_TIMEOUT = 2.0
# Scheduling and the kernel's timer granularity.
SLACK = 1.5
BOUND = PING_INTERVAL + PING_TIMEOUT + SLACK


def wait_ready(process: Any, timeout: float = 10.0) -> None:
    """Wait for the peer process to print "ready"."""
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError("the peer didn't get ready") from None
    assert line.strip() == "ready", (line, process.stderr.read() if process.poll() is not None else "")


def blocked_recv(sock: socket.socket) -> "queue.Queue[Optional[BaseException]]":
    """Start a recv() that blocks; the queue gets how it ended."""
    outcome: "queue.Queue[Optional[BaseException]]" = queue.Queue()

    def run() -> None:
        try:
            sock.recv(1)
        except OSError as exc:
            outcome.put(exc)
        else:
            outcome.put(None)

    threading.Thread(target=run, daemon=True).start()
    return outcome


@contextlib.contextmanager
def raw_connection_to_vanishing_peer() -> Iterator[Tuple[socket.socket, Any]]:
    """Our end of a TCP connection from a peer in a namespace, and the peer."""
    with vanishing_peer() as peer, socket.create_server((peer.local, 0)) as listener:
        listener.settimeout(10)
        client = peer.run(
            "import socket, time\n"
            f"s = socket.create_connection(({peer.local!r}, {listener.getsockname()[1]}), timeout=5)\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)\n"
        )
        wait_ready(client)
        conn, _ = listener.accept()
        with conn:
            yield conn, peer


@pytest.mark.parametrize("in_flight", [False, True], ids=["idle", "data-in-flight"])
def test_kernel_gives_up_a_vanished_peer(in_flight: bool) -> None:
    with raw_connection_to_vanishing_peer() as (conn, peer):
        tune_connection(conn, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)
        peer.vanish()
        start = time.monotonic()
        if in_flight:
            conn.sendall(b"never acknowledged")
        outcome = blocked_recv(conn)
        # Known without reading, as a paused reader would need it.
        assert wait_for(lambda: connection_failed(conn), timeout=BOUND + 2)
        failed_after = time.monotonic() - start
        exc = outcome.get(timeout=5)
        assert isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT, exc
        assert failed_after < BOUND, failed_after


def test_without_tuning_a_vanished_peer_goes_unnoticed() -> None:
    # The control: what the kernel does without the options (why they
    # are set). Nothing happens within the bound.
    with raw_connection_to_vanishing_peer() as (conn, peer):
        peer.vanish()
        outcome = blocked_recv(conn)
        with pytest.raises(queue.Empty):
            outcome.get(timeout=BOUND)
        assert not connection_failed(conn)


def syncws_client(host: str, port: int, messages: int) -> str:
    return (
        "import threading, syncws\n"
        f"ws = syncws.connect('ws://{host}:{port}/', ping_interval={PING_INTERVAL}, ping_timeout={PING_TIMEOUT})\n"
        f"def flood():\n"
        f"    for _ in range({messages}):\n"
        "        ws.send(b'x' * 65536)\n"
        "threading.Thread(target=flood, daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "threading.Event().wait(120)\n"
    )


def test_server_notices_a_vanished_client_while_its_handler_reads() -> None:
    closed = threading.Event()

    def handler(ws: Any) -> None:
        try:
            for _ in ws:
                pass
        finally:
            closed.set()

    with vanishing_peer() as peer:
        with syncws.serve(handler, peer.local, 0, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT) as server:
            client = peer.run(syncws_client(peer.local, server.port, messages=1))
            wait_ready(client)
            assert wait_for(lambda: len(server.connections) == 1)
            peer.vanish()
            start = time.monotonic()
            assert closed.wait(BOUND + 5)
            assert time.monotonic() - start < BOUND


@pytest.mark.parametrize("cut_off", ["vanish", "block_here", "lose_route"])
def test_server_notices_a_vanished_client_while_its_queue_is_full(cut_off: str) -> None:
    # Issue 11, point 6: the reader waits for room in the queue and reads
    # nothing; keepalive's ping then stays unacknowledged by TCP. Issue 22:
    # also when the ping never leaves this host (block_here, lose_route),
    # and so is never sent, let alone acknowledged.
    entered = threading.Event()
    state: dict = {}

    def handler(ws: Any) -> None:
        # Never reads: the client fills the queue. The wait covers filling
        # it too, which takes seconds on a loaded machine: the bound on
        # noticing is the test's, from the cut.
        entered.set()
        state["closed"] = wait_for(lambda: ws.closed, timeout=40, interval=0.05)

    with vanishing_peer() as peer:
        with syncws.serve(
            handler, peer.local, 0, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT, max_queue=1,
        ) as server:
            client = peer.run(syncws_client(peer.local, server.port, messages=200))
            wait_ready(client)
            assert entered.wait(10)
            # Let the client fill the queue and every buffer on the way.
            connection = next(iter(server.connections))
            assert wait_for(lambda: connection._messages.put_waiting, timeout=10)
            getattr(peer, cut_off)()
            start = time.monotonic()
            assert wait_for(lambda: "closed" in state, timeout=40)
            assert state["closed"]
            assert time.monotonic() - start < BOUND
            # Keepalive's check, or the kernel's TCP_USER_TIMEOUT (ping_timeout)
            # failing the next ping's write: whichever comes first.
            kernel = f"connection lost while writing: {OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))}"
            assert connection.close_reason in ("keepalive ping timeout", kernel)


def test_a_send_blocked_on_a_vanished_peer_ends_at_write_timeout() -> None:
    """While a send waits for the peer to read, its deadline decides, dead peer or live.

    The transport lifts TCP_USER_TIMEOUT while a write blocks (a live peer
    that keeps its window closed isn't dead: tests/test_sockopts.py), so the
    kernel doesn't give up first, though ping_timeout is shorter.
    """
    write_timeout = 3 * (PING_INTERVAL + PING_TIMEOUT)
    outcome: "queue.Queue[Tuple[BaseException, float]]" = queue.Queue()
    blocked = threading.Event()

    def handler(ws: Any) -> None:
        blocked.set()
        started = time.monotonic()
        try:
            ws.send(b"x" * 2**26)  # more than every buffer on the way holds
        except BaseException as exc:
            outcome.put((exc, time.monotonic() - started))

    with vanishing_peer() as peer:
        with syncws.serve(
            handler, peer.local, 0, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT, write_timeout=write_timeout,
        ) as server:
            client = peer.run(
                "import socket, time\n"
                f"s = socket.create_connection(({peer.local!r}, {server.port}), timeout=5)\n"
                "s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n'\n"
                "          b'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n')\n"
                "print('ready', flush=True)\n"
                "time.sleep(120)\n"  # reads nothing
            )
            wait_ready(client)
            assert blocked.wait(10)
            peer.vanish()
            exc, elapsed = outcome.get(timeout=write_timeout + 10)
    assert isinstance(exc, TimeoutError) and "write timed out" in str(exc), exc
    assert write_timeout - 0.2 < elapsed < write_timeout + SLACK, elapsed
