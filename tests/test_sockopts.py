"""Tests for syncws.sockopts: the options set on every connection and the backlog.

The kernel's behaviour with these options (a vanished peer given up) is
tested in tests/stress/test_vanished_peer.py, in network namespaces; a live
peer that doesn't read is tested here, on loopback.
"""

from __future__ import annotations

import base64
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, Tuple

import pytest

import syncws
from conftest import wait_for
from services import find_program
from syncws import sockopts
from syncws.transport import Transport

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="these TCP options are Linux's")


@pytest.fixture
def tcp_pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
        with client, server:
            yield client, server


def options(sock: socket.socket) -> Tuple[int, ...]:
    return (
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


@linux_only
def test_options_derived_from_the_ping_settings(tcp_pair: Tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    sockopts.tune_connection(client, ping_interval=20, ping_timeout=10)
    # Probes after 20 s idle, every ceil(10/3) s; unacknowledged data or
    # unanswered probes fail the connection after 10 s.
    assert options(client)[0]
    assert options(client)[1:] == (1, 20, 4, 3, 10_000)


@linux_only
def test_fractional_settings_round_up_to_what_the_kernel_takes(tcp_pair: Tuple[socket.socket, socket.socket]) -> None:
    client, _ = tcp_pair
    sockopts.tune_connection(client, ping_interval=0.2, ping_timeout=0.5)
    assert options(client)[1:] == (1, 1, 1, 3, 500)


@linux_only
@pytest.mark.parametrize("interval, timeout", [(None, 20), (20, None), (None, None)])
def test_no_keepalive_without_both_settings(tcp_pair: Tuple[socket.socket, socket.socket], interval: Any, timeout: Any) -> None:
    client, _ = tcp_pair
    sockopts.tune_connection(client, ping_interval=interval, ping_timeout=timeout)
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0


def test_unix_sockets_are_left_alone() -> None:
    a, b = socket.socketpair()
    with a, b:
        sockopts.tune_connection(a, ping_interval=1, ping_timeout=1)
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@linux_only
def test_connection_failed_is_false_while_alive_and_true_once_closed(tcp_pair: Tuple[socket.socket, socket.socket]) -> None:
    client, server = tcp_pair
    assert not sockopts.connection_failed(client)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    server.close()  # linger 0: RST
    assert wait_for(lambda: sockopts.connection_failed(client))
    a, b = socket.socketpair()
    with a, b:
        assert not sockopts.connection_failed(a)


@linux_only
def test_both_sides_of_a_syncws_connection_are_tuned() -> None:
    seen = {}

    def handler(ws: Any) -> None:
        seen["server"] = options(ws.transport.sock)
        ws.send("done")
        # Keep the connection open until the client has read its options:
        # returning would close it, and the client's socket with it.
        for _ in ws:
            pass

    with syncws.serve(handler, "127.0.0.1", 0, ping_interval=7, ping_timeout=3) as server:
        with syncws.connect(f"ws://127.0.0.1:{server.port}", ping_interval=5, ping_timeout=6) as ws:
            assert ws.recv(timeout=5) == "done"
            client = options(ws.transport.sock)
    assert client[1:] == (1, 5, 2, 3, 6000)
    assert seen["server"][1:] == (1, 7, 1, 3, 3000)


@linux_only
def test_long_and_infinite_settings_connect_both_ways() -> None:
    """Settings past what the kernel takes are capped at its maxima; inf is no limit, as None."""
    seen = {}

    def handler(ws: Any) -> None:
        seen["server"] = options(ws.transport.sock)
        ws.send(ws.recv(timeout=5))

    for settings, tuned in [
        # 11 h and 116 days: SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT.
        (dict(ping_interval=40_000, ping_timeout=1e7), (1, 32_767, 32_767, 3, 2**31 - 1)),
        # No keepalive to derive: SO_KEEPALIVE and TCP_USER_TIMEOUT off, the rest the system's.
        (dict(ping_interval=float("inf"), ping_timeout=20), (0, None, None, None, 0)),
    ]:
        with syncws.serve(handler, "127.0.0.1", 0, **settings) as server:
            with syncws.connect(f"ws://127.0.0.1:{server.port}", open_timeout=5, **settings) as ws:
                client = options(ws.transport.sock)  # before the server's handler ends and closes
                ws.send("echo")
                assert ws.recv(timeout=5) == "echo"
        for side in (client, seen["server"]):
            assert [value for value, want in zip(side[1:], tuned) if want is not None] == [
                want for want in tuned if want is not None
            ]


@linux_only
def test_send_progress_counts_what_is_queued_and_not_acknowledged(tcp_pair: Tuple[socket.socket, socket.socket]) -> None:
    client, server = tcp_pair
    acknowledged, written = sockopts.send_progress(client)  # type: ignore[misc]
    assert written == acknowledged
    client.setblocking(False)
    data = b"x" * 2**26
    sent = client.send(data)  # what the buffers take; the peer doesn't read
    assert wait_for(lambda: sockopts.send_progress(client)[0] > acknowledged)  # type: ignore[index]
    now_acknowledged, now_written = sockopts.send_progress(client)  # type: ignore[misc]
    assert now_written == written + sent  # the end of everything written, acknowledged or not
    assert now_acknowledged < now_written  # the rest waits in our queue
    received = 0
    while received < sent:
        received += len(server.recv(2**20))
    assert wait_for(lambda: sockopts.send_progress(client) == (now_written, now_written))


def test_send_progress_is_none_without_tcp() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert sockopts.send_progress(a) is None
    assert sockopts.send_progress(a) is None  # closed


def test_default_backlog_is_somaxconn() -> None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            expected = max(128, int(f.read()))
    except OSError:
        expected = sockopts.DEFAULT_BACKLOG
    assert sockopts.default_backlog() == expected
    assert expected >= 128


def test_serve_listens_with_the_default_backlog() -> None:
    ss = find_program("ss")
    with syncws.serve(lambda ws: None, "127.0.0.1", 0) as server:
        # For a listening socket, ss shows the backlog as Send-Q.
        out = subprocess.run(
            [ss, "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.split()
    assert int(out[2]) == sockopts.default_backlog(), out


# -- a live peer that doesn't read: write_timeout decides (issue 22) ---------------------


def user_timeout(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)


@linux_only
@pytest.mark.timeout(20)
def test_user_timeout_is_lifted_while_a_write_blocks(tcp_pair: Tuple[socket.socket, socket.socket]) -> None:
    client, server = tcp_pair
    sockopts.tune_connection(client, ping_interval=1, ping_timeout=1)
    transport = Transport(client)
    done: "queue.Queue[Any]" = queue.Queue()
    data = b"x" * 2**24  # more than every buffer on the way holds

    def write() -> None:
        transport.write(data, timeout=10)
        done.put(user_timeout(client))

    threading.Thread(target=write, daemon=True).start()
    assert wait_for(lambda: user_timeout(client) == 0)  # blocked: lifted
    received = 0
    while received < len(data):
        received += len(server.recv(2**20))
    assert done.get(timeout=5) == 1000  # back once the write is over
    transport.write(b"y")  # a write that doesn't block leaves it alone
    assert user_timeout(client) == 1000


def handshake_and_never_read(port: int) -> socket.socket:
    """Open a WebSocket connection by hand, with a small receive buffer, and read nothing."""
    sock = socket.socket()
    # Before connecting: a buffer shrunk later drops segments already on the way.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return sock


@pytest.mark.timeout(20)
def test_write_timeout_decides_for_a_live_peer_that_does_not_read() -> None:
    """Not the keepalive's TCP_USER_TIMEOUT, though it is shorter: the peer is alive.

    Its TCP answers every zero-window probe; Linux 5.11 and later would
    still give the connection up after TCP_USER_TIMEOUT with the window
    closed (1 s here) if it were set during the send.
    """
    write_timeout = 3.0
    outcome: "queue.Queue[Tuple[BaseException, float]]" = queue.Queue()

    def handler(ws: Any) -> None:
        started = time.monotonic()
        try:
            ws.send(b"x" * 2**26)  # blocks from the start: no keepalive ping goes out
        except BaseException as exc:
            outcome.put((exc, time.monotonic() - started))

    with syncws.serve(handler, "127.0.0.1", 0, ping_interval=1, ping_timeout=1, write_timeout=write_timeout) as server:
        with handshake_and_never_read(server.port):
            exc, elapsed = outcome.get(timeout=15)
    assert isinstance(exc, TimeoutError) and "write timed out" in str(exc), exc
    assert write_timeout - 0.2 < elapsed < write_timeout + 2, elapsed
