"""The benchmark's ceiling (bench/ceiling.py) keeps a WebSocket connection's contract.

bench/ceiling_compare.py compares syncws with it; the comparison is only
honest if the ceiling delivers what syncws does: whole messages, text
decoded to str and binary as bytes, of any size, from any thread, with a
closing handshake. These tests hold it to that, over real sockets.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
from typing import Any, Iterator, List

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

import ceiling  # noqa: E402


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test() -> Iterator[None]:
    # Server.close() and Connection.close() end the threads they started:
    # a benchmark that starts a server per case mustn't pile them up.
    before = set(threading.enumerate())
    yield
    left = [thread.name for thread in threading.enumerate() if thread not in before and thread.is_alive()]
    assert left == []


@pytest.fixture
def server() -> Iterator[ceiling.Server]:
    server = ceiling.serve(ceiling.echo, "127.0.0.1", 0, max_size=32 * 2**20)
    yield server
    server.close()


@pytest.fixture
def client(server: ceiling.Server) -> Iterator[ceiling.Connection]:
    connection = ceiling.connect("127.0.0.1", server.port, max_size=32 * 2**20)
    yield connection
    connection.close()


@pytest.mark.parametrize(
    "message",
    ["", "héllo ✓", "x" * 70_000, b"", b"\x00\xff" * 8, os.urandom(3 * 2**20)],
    ids=["empty text", "text", "long text", "empty binary", "binary", "3 MiB binary"],
)
def test_echo_keeps_type_and_content(client: ceiling.Connection, message: Any) -> None:
    client.send(message)
    echo = client.recv(timeout=10)
    assert type(echo) is type(message)
    assert echo == message


def test_many_pipelined_messages_arrive_whole_and_in_order(client: ceiling.Connection) -> None:
    # More than max_queue (32) and more than one 64 KiB read: exercises the
    # queue's bound and messages cut across reads.
    messages = [f"{i:04d}" + "y" * 1019 for i in range(2000)]
    def send_all() -> None:
        for message in messages:
            client.send(message)

    sender = threading.Thread(target=send_all)
    sender.start()
    received = [client.recv(timeout=10) for _ in messages]
    sender.join(10)
    assert received == messages


def test_sends_from_several_threads_are_not_interleaved(client: ceiling.Connection) -> None:
    def send_many(tag: str) -> None:
        for _ in range(200):
            client.send(tag * 5000)

    threads = [threading.Thread(target=send_many, args=(tag,)) for tag in "abcd"]
    for thread in threads:
        thread.start()
    received: List[Any] = [client.recv(timeout=10) for _ in range(800)]
    for thread in threads:
        thread.join(10)
    assert sorted({m[0] for m in received}) == list("abcd")
    assert all(m == m[0] * 5000 for m in received)


def test_close_runs_the_closing_handshake() -> None:
    ended = threading.Event()
    seen: List[Any] = []

    def handler(connection: ceiling.Connection) -> None:
        seen.extend(connection)  # until the client's close frame
        ended.set()

    server = ceiling.serve(handler, "127.0.0.1", 0)
    try:
        connection = ceiling.connect("127.0.0.1", server.port)
        connection.send("last")
        connection.close()
        assert ended.wait(10)
        assert seen == ["last"]
        with pytest.raises(ceiling.ConnectionClosed):
            connection.recv(timeout=1)
        with pytest.raises(ceiling.ConnectionClosed):
            connection.send("too late")
    finally:
        server.close()


def test_the_opening_round_trip_comes_before_the_connection() -> None:
    server = ceiling.serve(ceiling.echo, "127.0.0.1", 0, opening=True)
    try:
        # The server's side of it, byte for byte: it answers only once the
        # whole request is in, then the connection works as usual.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(bytes(ceiling.OPENING_REQUEST - 1))
            sock.settimeout(0.3)
            with pytest.raises(socket.timeout):
                sock.recv(1)
            sock.settimeout(10)
            sock.sendall(b"\0")
            answer = b""
            while len(answer) < ceiling.OPENING_ANSWER:
                answer += sock.recv(ceiling.OPENING_ANSWER - len(answer))
            assert answer == bytes(ceiling.OPENING_ANSWER)
            sock.sendall(struct.pack("!BI", ceiling.TEXT, 2) + b"hi")
            assert sock.recv(100) == struct.pack("!BI", ceiling.TEXT, 2) + b"hi"
        # And the client's.
        connection = ceiling.connect("127.0.0.1", server.port, opening=True)
        connection.send(b"after the opening")
        assert connection.recv(timeout=10) == b"after the opening"
        connection.close()
    finally:
        server.close()


def test_wire_format_is_the_documented_5_byte_header(server: ceiling.Server) -> None:
    # The Node load generator speaks this format: type byte, 4-byte big-endian length.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(struct.pack("!BI", ceiling.TEXT, 2) + b"hi")
        data = b""
        while len(data) < 7:
            data += sock.recv(7 - len(data))
        assert data == struct.pack("!BI", ceiling.TEXT, 2) + b"hi"
        sock.sendall(struct.pack("!BI", ceiling.CLOSE, 0))
        assert sock.recv(5) == struct.pack("!BI", ceiling.CLOSE, 0)


def test_a_message_over_max_size_ends_the_connection() -> None:
    server = ceiling.serve(ceiling.echo, "127.0.0.1", 0, max_size=1000)
    try:
        connection = ceiling.connect("127.0.0.1", server.port)
        connection.send(b"x" * 1001)
        with pytest.raises(ceiling.ConnectionClosed):
            connection.recv(timeout=10)
        connection.close(timeout=5)
    finally:
        server.close()
