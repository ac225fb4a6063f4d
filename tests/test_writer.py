"""Tests for syncws.writer over a socket pair: what each way of writing puts on the wire."""

from __future__ import annotations

import socket
import threading

from core_helpers import make, peer_frame
from syncws.framing import Opcode
from syncws.transport import Transport
from syncws.writer import Writer


def test_try_now_leaves_waiting_pongs_to_a_flush_and_writes_nothing() -> None:
    """The timer thread's write must not block: with the reader's pongs (up to 64) it could."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        core = make("server")
        writer = Writer(core, threading.Lock(), Transport(ours), write_timeout=1)
        core.receive_data(peer_frame(core, Opcode.PING, b"p"))  # the pong waits, as behind a send
        assert not writer.try_now(lambda core: core.send_ping(b"keepalive", None))
        theirs.settimeout(0.2)
        writer.flush(blocking=True)
        assert theirs.recv(100) == b"\x8a\x01p"
        assert writer.try_now(lambda core: core.send_ping(b"keepalive", None))
        assert theirs.recv(100) == b"\x89\x09keepalive"
