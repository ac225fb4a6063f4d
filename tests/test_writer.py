"""Tests for syncws.writer over a socket pair: what each way of writing puts on the wire."""

from __future__ import annotations

import errno
import functools
import socket
import threading
from typing import Any, Iterator, List, Tuple

import pytest

from core_helpers import make, peer_frame
from syncws.core import ConnectionCore, Phase
from syncws.framing import Opcode
from syncws.transport import Transport
from syncws.writer import Writer


@pytest.fixture
def writer() -> Iterator[Tuple[Writer, ConnectionCore, socket.socket]]:
    """A server side's writer, its core, and the peer's socket (reads time out after 0.5 s)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.settimeout(0.5)
        core = make("server")
        yield Writer(core, threading.Lock(), Transport(ours), write_timeout=1, on_abandon=lambda: None), core, theirs


def keepalive_ping(core: ConnectionCore) -> None:
    core.send_ping(b"keepalive", None)


def test_write_now_writes_a_waiting_pong_with_its_frame(writer: Any) -> None:
    writer, core, theirs = writer
    core.receive_data(peer_frame(core, Opcode.PING, b"p"))  # the pong waits, as behind a send
    assert writer.write(keepalive_ping, now=True)
    assert theirs.recv(100) == b"\x8a\x01p" + b"\x89\x09keepalive"


def test_write_now_leaves_more_waiting_pongs_to_a_flush_and_writes_nothing(writer: Any) -> None:
    """With them, the timer thread's write could be more than the socket takes at once, and block."""
    writer, core, theirs = writer
    payloads = [bytes([number]) * 100 for number in range(10)]  # 1 KiB of pongs
    core.receive_data(b"".join(peer_frame(core, Opcode.PING, payload) for payload in payloads))
    assert not writer.write(keepalive_ping, now=True)
    with pytest.raises(socket.timeout):
        theirs.recv(100)
    writer.flush(blocking=True)
    assert theirs.recv(2000) == b"".join(b"\x8a\x64" + payload for payload in payloads)


def test_pongs_the_reader_makes_during_write_now_are_written_by_its_flush(writer: Any, monkeypatch: Any) -> None:
    """A flush never finds the lock taken by write(now=True), which doesn't flush after.

    1 KiB of pongs, more than write(now=True) may write along with its own
    frame: a flush that gave up on finding the lock taken by it left them
    waiting for whatever frame came next, maybe none.
    """
    writer, core, theirs = writer
    payloads = [bytes([number]) * 100 for number in range(10)]

    def reader_thread() -> None:
        with writer.core_lock:
            core.receive_data(b"".join(peer_frame(core, Opcode.PING, payload) for payload in payloads))
        writer.flush(blocking=False)

    reader = threading.Thread(target=reader_thread)
    writable_now = Transport.writable_now

    def reader_runs_meanwhile(self: Transport) -> bool:
        reader.start()
        if not writer.core_lock.locked():  # nothing keeps it from trying the lock: let it
            reader.join(5)
        return writable_now(self)

    monkeypatch.setattr(Transport, "writable_now", reader_runs_meanwhile)
    assert writer.write(keepalive_ping, now=True)
    reader.join(5)
    pongs = b"".join(b"\x8a\x64" + payload for payload in payloads)
    assert read_exactly(theirs, 11 + len(pongs)) == b"\x89\x09keepalive" + pongs


# -- send_message, the fast path, against write(), the way in ------------------------


def read_exactly(sock: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = sock.recv(size - len(received))
        assert chunk, "the writer's side closed"
        received += chunk
    return received


@pytest.fixture
def writers() -> Iterator[Tuple[Tuple[Writer, ConnectionCore, socket.socket], ...]]:
    """Two server-side writers, each with its core and its peer's socket."""
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        made = []
        for ours, theirs in pairs:
            theirs.settimeout(5)
            core = make("server")
            writer = Writer(core, threading.Lock(), Transport(ours), write_timeout=5, on_abandon=lambda: None)
            made.append((writer, core, theirs))
        yield tuple(made)
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


@pytest.mark.parametrize("pong_waiting", [False, True])
@pytest.mark.parametrize("payload", ["text", "\u00e9" * 40000, b"", b"\x00" * 125, b"\x01" * 70000])
def test_send_message_writes_what_write_writes(writers: Any, payload: Any, pong_waiting: bool) -> None:
    """send_message() inlines the core's and write_locked()'s work: the same bytes reach the peer."""
    (fast, fast_core, fast_peer), (general, general_core, general_peer) = writers
    text = isinstance(payload, str)
    if pong_waiting:  # left by the reader, as while a send held the lock
        for core in (fast_core, general_core):
            core.receive_data(peer_frame(core, Opcode.PING, b"p"))
    # Each fits in the socket buffer: written whole, read after.
    assert fast.send_message(payload, text, None, None)
    assert general.write(lambda core: core.send_data(payload, text=text), deadline=general.deadline())
    assert read_exactly(fast_peer, fast_core.bytes_sent) == read_exactly(general_peer, general_core.bytes_sent)
    assert (fast_core.messages_sent, fast_core.bytes_sent) == (general_core.messages_sent, general_core.bytes_sent)


@pytest.mark.parametrize("size", [60000, 300000])  # one bytes object, or header and payload
def test_send_message_fails_as_write_fails(writers: Any, size: int) -> None:
    """On a lost connection both abandon the core, tell the connection, and raise the same error."""
    errors = []
    abandoned: List[Writer] = []
    for writer, core, theirs in writers:
        theirs.close()
        writer.on_abandon = functools.partial(abandoned.append, writer)
    (fast, fast_core, _), (general, general_core, _) = writers
    for send in (
        lambda: fast.send_message(b"x" * size, False, None, None),
        lambda: general.write(lambda core: core.send_data(b"x" * size, text=False), deadline=general.deadline()),
    ):
        with pytest.raises(OSError) as info:
            send()
        errors.append(type(info.value))
    assert errors[0] is errors[1]
    assert abandoned == [fast, general]
    assert fast_core.phase is general_core.phase is Phase.ABANDONED
    assert fast_core.close_reason is None and general_core.state is fast_core.state


@pytest.mark.parametrize(
    "error, cause",
    [
        (TimeoutError("write timed out"), "a write timed out: the peer stopped reading"),
        # The kernel's TCP_USER_TIMEOUT: the peer acknowledged nothing, it didn't stop reading.
        (
            OSError(errno.ETIMEDOUT, "Connection timed out"),
            f"connection lost while writing: [Errno {errno.ETIMEDOUT}] Connection timed out",
        ),
        (OSError(errno.ECONNRESET, "reset"), f"connection lost while writing: [Errno {errno.ECONNRESET}] reset"),
    ],
)
def test_a_failed_write_says_what_failed(writer: Any, monkeypatch: Any, error: OSError, cause: str) -> None:
    """Only the write's own deadline is "the peer stopped reading"."""
    writer, core, _ = writer

    def fail(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(Transport, "write", fail)
    with pytest.raises(OSError):
        writer.write(keepalive_ping, deadline=writer.deadline())
    core.receive_eof()
    assert core.close_reason == cause
