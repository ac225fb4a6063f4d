"""Tests for syncws.writer over a socket pair: what each way of writing puts on the wire."""

from __future__ import annotations

import socket
import threading
from typing import Any, Iterator, Tuple

import pytest

from core_helpers import make, peer_frame
from syncws.core import ConnectionCore
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
        yield Writer(core, threading.Lock(), Transport(ours), write_timeout=1), core, theirs


def keepalive_ping(core: ConnectionCore) -> None:
    core.send_ping(b"keepalive", None)


def test_try_now_writes_a_waiting_pong_with_its_frame(writer: Any) -> None:
    writer, core, theirs = writer
    core.receive_data(peer_frame(core, Opcode.PING, b"p"))  # the pong waits, as behind a send
    assert writer.try_now(keepalive_ping)
    assert theirs.recv(100) == b"\x8a\x01p" + b"\x89\x09keepalive"


def test_try_now_leaves_more_waiting_pongs_to_a_flush_and_writes_nothing(writer: Any) -> None:
    """With them, the timer thread's write could be more than the socket takes at once, and block."""
    writer, core, theirs = writer
    payloads = [bytes([number]) * 100 for number in range(10)]  # 1 KiB of pongs
    core.receive_data(b"".join(peer_frame(core, Opcode.PING, payload) for payload in payloads))
    assert not writer.try_now(keepalive_ping)
    with pytest.raises(socket.timeout):
        theirs.recv(100)
    writer.flush(blocking=True)
    assert theirs.recv(2000) == b"".join(b"\x8a\x64" + payload for payload in payloads)


def test_a_pong_made_while_try_now_holds_the_lock_is_written_right_after(writer: Any, monkeypatch: Any) -> None:
    """The reader's flush, which only tries the lock, can't write it: try_now sees to it."""
    writer, core, theirs = writer
    write_locked = Writer.write_locked

    def write_then_receive_a_ping(self: Writer, data: Any, deadline: Any) -> None:
        write_locked(self, data, deadline)
        monkeypatch.undo()
        core.receive_data(peer_frame(core, Opcode.PING, b"p"))  # as the reader thread would, meanwhile
        assert not writer.lock.acquire(blocking=False)  # so its flush gives up

    monkeypatch.setattr(Writer, "write_locked", write_then_receive_a_ping)
    assert writer.try_now(keepalive_ping)
    received = b""
    while len(received) < 14:
        received += theirs.recv(100)
    assert received == b"\x89\x09keepalive" + b"\x8a\x01p"
