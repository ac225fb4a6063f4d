"""Tests for syncws.headreader over real sockets (socket.socketpair()).

Every socket gets a timeout so that a reader waiting for bytes that never
come fails with an OSError instead of hanging the run.
"""

from __future__ import annotations

import io
import socket
import threading
from typing import Iterator, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncws.framing import Frame, Opcode, read_frame, serialize_frame
from syncws.headreader import SMALL_READ, HeadReader

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    """(reading end, writing end), both closed afterwards."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def feed(writer: socket.socket, data: bytes, *, eof: bool = True) -> None:
    writer.sendall(data)
    if eof:
        writer.shutdown(socket.SHUT_WR)


class ScriptedSocket:
    """A socket stand-in whose recv returns exactly the given chunks."""

    def __init__(self, chunks: List[bytes]) -> None:
        self.chunks = list(chunks)
        self.requests: List[int] = []

    def recv(self, n: int) -> bytes:
        self.requests.append(n)
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        assert len(chunk) <= n, "a recv never returns more than asked"
        return chunk

    def recv_into(self, view: memoryview) -> int:
        self.requests.append(len(view))
        if not self.chunks:
            return 0
        chunk = self.chunks.pop(0)
        if len(chunk) > len(view):  # the rest stays for the next call
            chunk, rest = chunk[: len(view)], chunk[len(view) :]
            self.chunks.insert(0, rest)
        view[: len(chunk)] = chunk
        return len(chunk)


# --- read_exact ---------------------------------------------------------------------


def test_read_exact_simple(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    feed(writer, b"hello world")
    assert reader.read_exact(5) == b"hello"
    assert reader.read_exact(0) == b""
    assert reader.read_exact(6) == b" world"


def test_read_exact_across_multiple_sends(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock, read_limit=4)
    chunks = [b"ab", b"cdefg", b"h", b"ijklmnop"]

    def send() -> None:
        for chunk in chunks:
            writer.sendall(chunk)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        assert reader.read_exact(3) == b"abc"
        assert reader.read_exact(4) == b"defg"
        assert reader.read_exact(9) == b"hijklmnop"
    finally:
        thread.join(5)
    assert not thread.is_alive()


def test_read_exact_across_scripted_recvs() -> None:
    sock = ScriptedSocket([b"a", b"bc", b"def"])
    reader = HeadReader(sock, read_limit=8)  # type: ignore[arg-type]
    assert reader.read_exact(5) == b"abcde"
    assert sock.requests == [8, 8, 8]
    assert reader.read_exact(1) == b"f"


def test_refills_start_small_and_grow_while_recvs_come_back_full() -> None:
    full, short = b"x" * SMALL_READ, b"y" * 10
    sock = ScriptedSocket([full, b"z" * 5000, short, short])
    reader = HeadReader(sock, read_limit=2**16)  # type: ignore[arg-type]
    assert reader.read_exact(SMALL_READ + 5000 + 20) == full + b"z" * 5000 + short + short
    # A full small read: the next asks for read_limit, which stays while a
    # recv returns SMALL_READ bytes or more; a shorter one goes back to small.
    assert sock.requests == [SMALL_READ, 2**16, 2**16, SMALL_READ]


def test_read_exact_larger_than_read_limit(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock, read_limit=1024)
    payload = bytes(i % 256 for i in range(300_000))

    thread = threading.Thread(target=feed, args=(writer, payload + b"tail"))
    thread.start()
    try:
        data = reader.read_exact(len(payload))
    finally:
        thread.join(5)
    assert type(data) is bytearray
    assert data == payload
    assert reader.read_exact(4) == b"tail"


def test_read_exact_large_includes_buffered_bytes() -> None:
    sock = ScriptedSocket([b"0123456789", b"abcdefghij", b"klmno"])
    reader = HeadReader(sock, read_limit=10)  # type: ignore[arg-type]
    assert reader.read_exact(3) == b"012"
    # 7 bytes are buffered; the rest goes straight into the bytearray.
    data = reader.read_exact(20)
    assert type(data) is bytearray
    assert data == b"3456789abcdefghijklm"
    assert reader.read_exact(2) == b"no"


def test_read_exact_large_is_writable_for_unmasking(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock, read_limit=512)
    frame = Frame(True, Opcode.BINARY, bytes(range(256)) * 40)

    thread = threading.Thread(target=feed, args=(writer, serialize_frame(frame, mask=True)))
    thread.start()
    try:
        received = read_frame(reader.read_exact, mask=True)
    finally:
        thread.join(5)
    assert received == frame
    assert type(received.data) is bytearray


def test_read_exact_eof_before_enough_bytes(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    feed(writer, b"abc")
    with pytest.raises(EOFError):
        reader.read_exact(5)


def test_read_exact_eof_on_empty_stream(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    writer.close()
    with pytest.raises(EOFError):
        reader.read_exact(1)


def test_read_exact_large_eof(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock, read_limit=16)
    feed(writer, b"x" * 50)
    with pytest.raises(EOFError):
        reader.read_exact(100)


def test_read_exact_zero_at_eof(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    writer.close()
    assert reader.read_exact(0) == b""


def test_socket_errors_pass_through(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, _ = pair
    reader_sock.settimeout(0.05)
    reader = HeadReader(reader_sock)
    with pytest.raises(OSError):
        reader.read_exact(1)


# --- read_line ------------------------------------------------------------------------


def test_read_line_then_leftover_for_read_exact(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    feed(writer, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi")
    assert reader.read_line(100) == b"HTTP/1.1 101 Switching Protocols\r\n"
    assert reader.read_line(100) == b"Upgrade: websocket\r\n"
    assert reader.read_line(100) == b"\r\n"
    # The frame that arrived with the head is not lost.
    assert read_frame(reader.read_exact, mask=False) == Frame(True, Opcode.TEXT, b"hi")
    with pytest.raises(EOFError):
        reader.read_exact(1)


def test_read_line_across_recvs() -> None:
    sock = ScriptedSocket([b"GE", b"T / HT", b"TP/1.1\r", b"\nHost: x\r\n"])
    reader = HeadReader(sock, read_limit=64)  # type: ignore[arg-type]
    assert reader.read_line(100) == b"GET / HTTP/1.1\r\n"
    assert reader.read_line(100) == b"Host: x\r\n"
    assert reader.read_line(100) == b""


def test_read_line_limit_cuts_long_line(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock, read_limit=4)
    feed(writer, b"abcdefghij\nrest")
    assert reader.read_line(6) == b"abcdef"
    assert reader.read_line(6) == b"ghij\n"
    assert reader.read_line(6) == b"rest"  # partial line at end of stream
    assert reader.read_line(6) == b""
    assert reader.read_line(6) == b""


def test_read_line_newline_exactly_at_limit(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    feed(writer, b"abcd\nefgh\n")
    assert reader.read_line(5) == b"abcd\n"
    assert reader.read_line(4) == b"efgh"
    assert reader.read_line(4) == b"\n"


def test_read_line_zero_limit(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    feed(writer, b"x\n")
    assert reader.read_line(0) == b""
    assert reader.read_line(10) == b"x\n"


def test_read_line_empty_stream(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    writer.close()
    assert reader.read_line(10) == b""


def test_read_line_does_not_read_past_limit_needlessly() -> None:
    # Once ``limit`` bytes are buffered, read_line returns without another recv.
    sock = ScriptedSocket([b"abcdef"])
    reader = HeadReader(sock, read_limit=6)  # type: ignore[arg-type]
    assert reader.read_line(6) == b"abcdef"
    assert sock.requests == [6]


# --- read_available ---------------------------------------------------------------------


def test_read_available_returns_buffered_first(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    feed(writer, b"line\nbody bytes")
    assert reader.read_line(100) == b"line\n"
    assert reader.read_available(4) == b"body"
    assert reader.read_available(100) == b" bytes"
    assert reader.read_available(100) == b""
    assert reader.read_available(100) == b""


def test_read_available_one_recv_at_most() -> None:
    sock = ScriptedSocket([b"abc", b"def"])
    reader = HeadReader(sock, read_limit=100)  # type: ignore[arg-type]
    assert reader.read_available(100) == b"abc"
    assert reader.read_available(2) == b"de"
    assert reader.read_available(2) == b"f"
    assert reader.read_available(2) == b""


def test_read_available_waits_for_data(pair: Tuple[socket.socket, socket.socket]) -> None:
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    thread = threading.Thread(target=feed, args=(writer, b"late"), kwargs={"eof": False})
    thread.start()
    try:
        data = reader.read_available(10)
    finally:
        thread.join(5)
    assert data  # something, never b"" while the stream is open
    assert b"late".startswith(data)


# --- against io.BufferedReader -----------------------------------------------------------------


operations = st.lists(
    st.one_of(
        st.tuples(st.just("line"), st.integers(0, 24)),
        st.tuples(st.just("exact"), st.integers(0, 24)),
        st.tuples(st.just("available"), st.integers(1, 24)),
    ),
    max_size=20,
)


@given(
    data=st.lists(st.sampled_from([b"a", b"b", b"\n", b"\r\n", b"xyz"]), max_size=60).map(b"".join),
    read_limit=st.integers(1, 12),
    ops=operations,
)
@settings(max_examples=150, deadline=None)
@pytest.mark.timeout(40)  # hypothesis's own overhead dominates on a loaded machine
def test_matches_buffered_reader(data: bytes, read_limit: int, ops: List[Tuple[str, int]]) -> None:
    a, b = socket.socketpair()
    try:
        a.settimeout(5)
        feed(b, data)
        reader = HeadReader(a, read_limit=read_limit)
        reference = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
        for op, n in ops:
            if op == "line":
                assert reader.read_line(n) == reference.readline(n)
            elif op == "exact":
                expected = reference.read(n)
                if len(expected) < n:
                    with pytest.raises(EOFError):
                        reader.read_exact(n)
                    return
                assert reader.read_exact(n) == expected
            else:
                got = reader.read_available(n)
                expected = reference.peek(n)[:n] if reference.peek(1) else b""
                if expected:
                    assert got and expected.startswith(got)
                else:
                    assert got == b""
                reference.read(len(got))
    finally:
        a.close()
        b.close()


def test_read_line_negative_limit_never_rewinds(pair: Tuple[socket.socket, socket.socket]) -> None:
    # io.BufferedReader.readline(-1) means "no limit". Whatever read_line does
    # with a negative limit, it must not move its position backwards and hand
    # out bytes a second time.
    reader_sock, writer = pair
    reader = HeadReader(reader_sock)
    feed(writer, b"abc\ndef\n")
    assert reader.read_line(4) == b"abc\n"
    assert reader.read_line(-1) == io.BufferedReader(io.BytesIO(b"def\n")).readline(-1)  # type: ignore[arg-type]
    assert reader.read_line(100) == b""


# --- read_head ----------------------------------------------------------------------


def test_read_head_takes_a_whole_head_and_leaves_the_rest() -> None:
    sock = ScriptedSocket([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x81\x00"])
    reader = HeadReader(sock, read_limit=64)  # type: ignore[arg-type]
    assert reader.read_head(100) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert reader.take_buffered() == b"\x81\x00"


@pytest.mark.parametrize("limit", [10, 26])
def test_read_head_consumes_nothing_without_a_whole_head_within_limit(limit: int) -> None:
    sock = ScriptedSocket([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"more"])
    reader = HeadReader(sock, read_limit=64)  # type: ignore[arg-type]
    assert reader.read_head(limit) is None
    assert sock.requests == [64]  # one read, as the first line's would be
    assert reader.read_line(100) == b"GET / HTTP/1.1\r\n"


def test_read_head_reads_nothing_more_when_a_part_is_buffered() -> None:
    sock = ScriptedSocket([b"GET / HTTP/1.1\r\n", b"\r\n"])
    reader = HeadReader(sock, read_limit=64)  # type: ignore[arg-type]
    assert reader.read_head(100) is None
    assert reader.read_head(100) is None
    assert sock.requests == [64]


def test_read_head_at_end_of_stream() -> None:
    reader = HeadReader(ScriptedSocket([]), read_limit=64)  # type: ignore[arg-type]
    assert reader.read_head(100) is None
    assert reader.read_line(100) == b""


# A browser's request head: longer than one small read.
LONG_HEAD = b"GET /chat HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 600 + b"\r\n\r\n"


def test_read_head_tops_up_a_full_read_without_the_head_end() -> None:
    first, rest = LONG_HEAD[:SMALL_READ], LONG_HEAD[SMALL_READ:] + b"\x81\x00"
    sock = ScriptedSocket([first])
    asked: List[int] = []

    def top_up(size: int) -> bytes:
        asked.append(size)
        return rest

    reader = HeadReader(sock, read_limit=2**16)  # type: ignore[arg-type]
    assert reader.read_head(4096, top_up) == LONG_HEAD
    assert sock.requests == [SMALL_READ] and asked == [4096 - SMALL_READ]
    assert reader.take_buffered() == b"\x81\x00"


def test_read_head_tops_up_only_a_full_read() -> None:
    # A short read without the head's end: the rest is still on its way.
    sock = ScriptedSocket([b"GET / HTTP/1.1\r\n", b"\r\n"])
    asked: List[int] = []
    reader = HeadReader(sock, read_limit=2**16)  # type: ignore[arg-type]
    assert reader.read_head(4096, lambda size: asked.append(size) or b"") is None
    assert asked == []


def test_read_head_without_the_rest_leaves_the_head_to_the_lines() -> None:
    first, rest = LONG_HEAD[:SMALL_READ], LONG_HEAD[SMALL_READ:]
    sock = ScriptedSocket([first, rest])
    reader = HeadReader(sock, read_limit=2**16)  # type: ignore[arg-type]
    assert reader.read_head(4096, lambda size: b"") is None  # nothing there yet, or TLS
    assert reader.read_line(4096) == b"GET /chat HTTP/1.1\r\n"
    assert reader.read_line(4096) == b"Host: x\r\n"
    assert reader.read_line(4096) == LONG_HEAD.split(b"\r\n")[2] + b"\r\n"
    assert reader.read_line(4096) == b"\r\n"


def test_read_head_tops_up_no_further_than_the_limit() -> None:
    sock = ScriptedSocket([LONG_HEAD[:SMALL_READ]])
    asked: List[int] = []
    reader = HeadReader(sock, read_limit=2**16)  # type: ignore[arg-type]
    assert reader.read_head(600, lambda size: asked.append(size) or LONG_HEAD[SMALL_READ : SMALL_READ + size]) is None
    assert asked == [600 - SMALL_READ]
