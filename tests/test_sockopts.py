"""Tests for syncws.sockopts: the options set on every connection and the backlog.

The kernel's behaviour with these options (a vanished peer given up) is
tested in tests/stress/test_vanished_peer.py, in network namespaces.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from typing import Any, Iterator, Tuple

import pytest

import syncws
from conftest import wait_for
from syncws import sockopts

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


def test_default_backlog_is_somaxconn() -> None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            expected = max(128, int(f.read()))
    except OSError:
        expected = sockopts.DEFAULT_BACKLOG
    assert sockopts.default_backlog() == expected
    assert expected >= 128


@pytest.mark.skipif(shutil.which("ss") is None, reason="iproute2's ss isn't installed")
def test_serve_listens_with_the_default_backlog() -> None:
    with syncws.serve(lambda ws: None, "127.0.0.1", 0) as server:
        # For a listening socket, ss shows the backlog as Send-Q.
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.split()
    assert int(out[2]) == sockopts.default_backlog(), out
