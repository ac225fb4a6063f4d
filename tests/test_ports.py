"""Tests for syncws.ports: binding, reserving a port for a group, naming holders.

Real sockets on 127.0.0.1 (and ::1); the sockets that "another server"
holds are this process's own, so the holder the errors name is this pid.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Iterator, List

import pytest

import syncws
from syncws import ports

HOST = "127.0.0.1"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT groups and /proc are Linux's")


def listener(host: str = HOST, port: int = 0, *, reuse_port: bool) -> socket.socket:
    """A listening socket that isn't syncws's."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(8)
    return sock


@pytest.fixture
def closing() -> Iterator[List[socket.socket]]:
    """Sockets to close at teardown."""
    sockets: List[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def me() -> str:
    return f"pid {os.getpid()}, "


@linux_only
@pytest.mark.parametrize("reuse_port", [True, False], ids=["SO_REUSEPORT", "plain"])
def test_reserve_refuses_a_port_a_listener_holds(closing: List[socket.socket], reuse_port: bool) -> None:
    other = listener(reuse_port=reuse_port)
    closing.append(other)
    port = other.getsockname()[1]
    with pytest.raises(OSError) as raised:
        ports.reserve(HOST, port)
    assert raised.value.errno == errno.EADDRINUSE
    assert raised.value.strerror == f"Address already in use: served by another process ({me()}{ports.holders(port)[0].name})"


@linux_only
def test_members_join_a_reservation_and_strangers_are_seen(closing: List[socket.socket]) -> None:
    reservation = ports.reserve(HOST, 0)
    closing.extend(reservation)
    port = reservation[0].getsockname()[1]
    # The reservation doesn't listen: nothing holds the port yet.
    assert ports.holders(port) == []
    assert ports.strangers(reservation, []) == []
    # Members join with SO_REUSEPORT, as serve(reuse_port=True) binds.
    with syncws.serve(lambda ws: None, HOST, port, reuse_port=True) as member:
        assert member.port == port
        assert [holder.pid for holder in ports.holders(port)] == [os.getpid()]
        # This process is a member: no stranger. Counted as not one, it is.
        assert ports.strangers(reservation, [os.getpid()]) == []
        assert [holder.pid for holder in ports.strangers(reservation, [])] == [os.getpid()]
    # A second reservation of a port that members serve is refused.
    with syncws.serve(lambda ws: None, HOST, port, reuse_port=True):
        with pytest.raises(OSError, match=f"served by another process \\({me()}"):
            ports.reserve(HOST, port)


@linux_only
def test_strangers_only_counts_addresses_that_overlap(closing: List[socket.socket]) -> None:
    reservation = ports.reserve(HOST, 0)
    closing.extend(reservation)
    port = reservation[0].getsockname()[1]
    # Another address of the loopback network, the same port: its own traffic.
    others = [listener("127.0.0.2", port, reuse_port=False)]
    # IPv6 loopback: another address family, another address.
    try:
        others.append(listener("::1", port, reuse_port=False))
    except OSError:
        pass  # no IPv6 here
    closing.extend(others)
    assert ports.strangers(reservation, []) == []
    for other in others:
        other.close()  # in the wildcard's way
    # The wildcard takes 127.0.0.1's connections too (with SO_REUSEPORT,
    # which lets it bind beside the reservation).
    wildcard = listener("0.0.0.0", port, reuse_port=True)
    closing.append(wildcard)
    assert [holder.pid for holder in ports.strangers(reservation, [])] == [os.getpid()]


def test_overlap() -> None:
    def packed(address: str) -> bytes:
        return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)

    def overlap(first: str, second: str) -> bool:
        return ports._overlap(packed(first), packed(second))

    assert overlap("127.0.0.1", "127.0.0.1")
    assert overlap("0.0.0.0", "127.0.0.1") and overlap("127.0.0.1", "0.0.0.0")
    assert overlap("::", "127.0.0.1") and overlap("::", "::1")
    assert overlap("::ffff:127.0.0.1", "127.0.0.1")
    assert not overlap("127.0.0.1", "127.0.0.2")
    assert not overlap("0.0.0.0", "::1")
    assert not overlap("::1", "::2")


def test_listening_sockets_share_one_port_for_port_0(closing: List[socket.socket]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sockets = ports.listening_sockets("localhost", 0, 8)
    except OSError as exc:
        pytest.skip(f"localhost doesn't bind here: {exc}")
    closing.extend(sockets)
    assert len({sock.getsockname()[1] for sock in sockets}) == 1


@linux_only
def test_bind_says_who_holds_the_address(closing: List[socket.socket]) -> None:
    other = listener(reuse_port=False)
    closing.append(other)
    port = other.getsockname()[1]
    with pytest.raises(OSError) as raised:
        ports.bind(socket.AF_INET, (HOST, port), backlog=8)
    assert raised.value.errno == errno.EADDRINUSE
    assert f"Address already in use: served by another process ({me()}" in str(raised.value)


def test_bind_names_no_one_when_nothing_listens(closing: List[socket.socket]) -> None:
    # Bound without SO_REUSEADDR, not listening: in the way, but no server.
    bound = socket.socket()
    closing.append(bound)
    bound.bind((HOST, 0))
    port = bound.getsockname()[1]
    with pytest.raises(OSError) as raised:
        ports.bind(socket.AF_INET, (HOST, port), backlog=8)
    assert raised.value.strerror == f"Address already in use: another socket is bound to port {port}"
