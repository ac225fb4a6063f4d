"""Tests for syncws.transport's non-blocking send, send_nowait, in both versions.

Every test runs on the pure-Python implementation and, on POSIX whenever
``syncws._speedups`` imports, on the C one too: both must return and raise
the same, over a socketpair whose buffer is empty, full, or gone.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any, Callable, List, Optional

import pytest

from syncws import transport
from syncws.transport import Transport, py_send_nowait

try:
    from syncws import _speedups
except ImportError:
    _speedups = None

pytestmark = pytest.mark.skipif(not hasattr(socket, "MSG_DONTWAIT"), reason="POSIX only")

SendNowait = Callable[[socket.socket, Any], Optional[memoryview]]
IMPLS: List[SendNowait] = [py_send_nowait]
if _speedups is not None and hasattr(_speedups, "send_nowait"):
    IMPLS.append(_speedups.send_nowait)


@pytest.fixture(params=IMPLS, ids=["python", "c"][: len(IMPLS)])
def send_nowait(request: pytest.FixtureRequest) -> SendNowait:
    """Each available implementation in turn."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def pair() -> Any:
    """Two connected stream sockets, blocking, with small buffers."""
    one, two = socket.socketpair()
    one.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    two.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield one, two
    one.close()
    two.close()


def receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_all_sent_is_none(send_nowait: SendNowait, pair: Any, kind: Any) -> None:
    one, two = pair
    assert send_nowait(one, kind(b"hello")) is None
    assert send_nowait(one, kind(b"")) is None
    assert receive(two, 5) == b"hello"


def test_a_full_buffer_gives_the_rest(send_nowait: SendNowait, pair: Any) -> None:
    one, two = pair
    data = bytes(range(256)) * 4096  # far more than both buffers hold
    rest = send_nowait(one, data)
    assert type(rest) is memoryview
    sent = len(data) - len(rest)
    assert 0 < sent < len(data)
    assert rest == data[sent:]
    # Nothing fits now: all of it is the rest, and no error.
    again = send_nowait(one, rest)
    assert again is not None and again == rest
    assert receive(two, sent) == data[:sent]


def test_a_closed_socket_is_ebadf(send_nowait: SendNowait, pair: Any) -> None:
    one, _ = pair
    one.close()
    with pytest.raises(OSError) as info:
        send_nowait(one, b"x")
    assert info.value.errno == errno.EBADF


def test_a_gone_peer_is_the_same_error(pair: Any) -> None:
    errors = []
    for send_nowait in IMPLS:
        one, two = socket.socketpair()
        two.close()
        with pytest.raises(OSError) as info:
            send_nowait(one, b"x")
        errors.append((type(info.value), info.value.errno))
        one.close()
    assert all(error == errors[0] for error in errors)
    assert errors[0][1] == errno.EPIPE


def test_not_bytes_like(send_nowait: SendNowait, pair: Any) -> None:
    one, _ = pair
    with pytest.raises(TypeError):
        send_nowait(one, "text")


def test_public_name_picks_one_implementation() -> None:
    if transport.SPEEDUPS is not None and hasattr(transport.SPEEDUPS, "send_nowait"):
        assert transport.send_nowait is transport.SPEEDUPS.send_nowait
    else:
        assert transport.send_nowait is py_send_nowait


def test_write_nowait_sends_on_the_transport_socket(pair: Any) -> None:
    one, two = pair
    write_nowait = Transport(one).write_nowait
    assert write_nowait.func is transport.send_nowait  # type: ignore[attr-defined]
    assert write_nowait(b"hi") is None
    assert receive(two, 2) == b"hi"


def test_a_socket_subclass_gets_the_python_version(pair: Any) -> None:
    class Sock(socket.socket):
        pass

    one, _ = pair
    sub = Sock(fileno=socket.dup(one.fileno()))
    try:
        assert Transport(sub).write_nowait.func is py_send_nowait  # type: ignore[attr-defined]
    finally:
        sub.close()


def test_read_head_takes_a_long_head_that_arrived_whole() -> None:
    """A request head longer than one small read (a browser's, with cookies),
    sent in one piece over TCP, comes back whole from one read_head()."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 1500 + b"\r\n\r\n"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with socket.create_connection(listener.getsockname(), timeout=5) as client:
            server, _ = listener.accept()
            with server:
                server.settimeout(5)
                client.sendall(head + b"\x81\x00")
                # All of it in the server's buffer before the read.
                deadline = 50
                while len(server.recv(4096, socket.MSG_PEEK)) < len(head) + 2 and deadline:
                    deadline -= 1
                    time.sleep(0.01)
                reader = Transport(server)
                assert reader.read_head(8192) == head
                assert reader.take_buffered() == b"\x81\x00"


def _drain(sock: socket.socket, size: int, into: List[bytes]) -> threading.Thread:
    """Receive ``size`` bytes in a thread, slowly enough that writes must wait."""

    def run() -> None:
        into.append(receive(sock, size))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_write_parts_sends_them_in_order(pair: Any) -> None:
    one, two = pair
    Transport(one).write_parts([b"head", bytearray(b"er"), memoryview(b"payload")])
    assert receive(two, 13) == b"headerpayload"


@pytest.mark.parametrize(
    "parts",
    [
        # Far more than both buffers hold: sendmsg() takes part of it,
        # within any of the parts; the rest is written as the peer reads.
        [b"h" * 10, bytes(range(256)) * 1024, b"t" * 3000, bytes(range(255, -1, -1)) * 512],
        # Over the sendmsg limit: written one by one.
        [bytes([i]) * 100 for i in range(transport._SENDMSG_MAX_PARTS + 5)],
    ],
    ids=["more-than-the-buffers-hold", "over-the-sendmsg-limit"],
)
def test_write_parts_writes_every_part_in_order(pair: Any, parts: List[bytes]) -> None:
    one, two = pair
    expected = b"".join(parts)
    received: List[bytes] = []
    thread = _drain(two, len(expected), received)
    Transport(one).write_parts(parts, timeout=10)
    thread.join(10)
    assert received == [expected]


def test_write_parts_on_a_socket_subclass_goes_through_send(pair: Any) -> None:
    sent: List[bytes] = []

    class Sock(socket.socket):
        def send(self, data: Any, flags: int = 0) -> int:
            sent.append(bytes(data))
            return super().send(data, flags)

    one, two = pair
    sub = Sock(fileno=socket.dup(one.fileno()))
    try:
        Transport(sub).write_parts([b"head", b"payload"])
    finally:
        sub.close()
    assert sent == [b"head", b"payload"]
    assert receive(two, 11) == b"headpayload"


def test_write_parts_times_out_as_one_write(pair: Any) -> None:
    one, _ = pair
    parts = [bytes(2**16)] * 4  # the peer never reads
    with pytest.raises(TimeoutError):
        Transport(one).write_parts(parts, timeout=0.2)


@pytest.mark.timeout(10)
def test_send_last_writes_the_answer_then_our_fin(pair: Any) -> None:
    one, two = pair
    two.settimeout(5)
    Transport(one).send_last(b"HTTP/1.1 403 Forbidden\r\n\r\n")
    assert receive(two, 26) == b"HTTP/1.1 403 Forbidden\r\n\r\n"
    assert two.recv(1) == b""  # the FIN: nothing follows
    two.sendall(b"late")  # our side still reads: only writing ended
    assert one.recv(4) == b"late"


def test_send_last_to_a_peer_that_left_raises_nothing(pair: Any) -> None:
    one, two = pair
    two.close()
    transport.send_last(one, b"x" * 2**16)  # EPIPE, ignored
    one.close()
    transport.send_last(one, b"x")  # a closed socket, ignored
