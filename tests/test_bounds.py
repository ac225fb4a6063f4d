"""Memory bounds under hostile peers, measured over real sockets (issue 11, points 1 and 3).

Each test runs a syncws server in this process against a hand-made client that
misbehaves, and measures the peak of Python's traced memory while it does
(tracemalloc sees bytes, bytearrays, str and zlib buffers alike). The bounds
asserted are the documented ones (docs/design.rst, "The bounded queue and
back-pressure") with room for the test's own objects.
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import socket
import sys
import sysconfig
import threading
import time
import tracemalloc
from typing import Any, List

import pytest

import syncws
from conftest import frame, traced_peak, wait_for

KiB = 1024
MiB = 1024 * KiB


def raw_client(port: int) -> socket.socket:
    """Open a WebSocket connection by hand (no compression) and return its socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def flood(sock: socket.socket, data: bytes, stop: threading.Event) -> int:
    """Send ``data`` again and again, ignoring everything the server says; return bytes sent."""
    sent = 0
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            sock.sendall(data)
        except socket.timeout:
            continue  # the server stopped reading: TCP pushes back
        except OSError:
            break  # the server dropped us
        sent += len(data)
    return sent


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["handler-close", "server-close"])
def test_memory_bounded_while_a_peer_ignores_our_close(how: str) -> None:
    """A client that ignores our close frame and streams 512 KiB messages
    can't grow the server's memory: data after our close frame is dropped."""
    message = frame(0x2, os.urandom(512 * KiB), mask=b"abcd")
    started = threading.Event()

    def handler(ws: Any) -> None:
        ws.recv(timeout=10)
        started.set()
        if how == "handler-close":
            ws.close()
        else:
            ws.wait_closed(10)

    stop = threading.Event()
    with traced_peak() as peak:
        with syncws.serve(
            handler, "127.0.0.1", 0, compression=None, max_size=MiB, max_queue=4,
            close_timeout=3, ping_interval=None,
        ) as server:
            sock = raw_client(server.port)
            result: List[int] = []
            flooder = threading.Thread(target=lambda: result.append(flood(sock, message, stop)))
            flooder.start()
            assert started.wait(10)
            if how == "server-close":
                server.close()
            time.sleep(2.5)  # the peer keeps flooding while we wait for its close frame
            stop.set()
            flooder.join(10)
            sock.close()
    # The queue (4 messages), the frame being read and one read: ~3 MiB.
    assert peak[0] < 8 * MiB, f"peak {peak[0] / MiB:.1f} MiB after the peer sent {result[0] / MiB:.0f} MiB"
    assert result[0] > 16 * MiB  # the peer really did flood


# How long the tiny-fragments test waits for each step another thread
# takes. None of them measures speed: the server parses 65,536 two-byte
# frames, seconds of CPU time that a loaded machine spreads over tens of
# seconds, so the waits are generous.
SLOW_STEP = 90
MAX_QUEUE = 4


@pytest.mark.timeout(4 * SLOW_STEP)
def test_tiny_fragments_cost_memory_by_bytes_not_by_fragment() -> None:
    """A message in 2-byte fragments to a handler that doesn't read: TCP
    pushes back within the bound; once the handler reads, the message goes
    over max_size and the connection fails with 1009."""
    queue_full = threading.Event()  # set by the handler: the reader thread stopped reading
    release = threading.Event()  # set by the test: the handler may read
    handler_done = threading.Event()
    outcome: List[BaseException] = []

    def handler(ws: Any) -> None:
        try:
            # max_queue items waiting: the reader thread's next put waits
            # for room, so it reads at most once more, then TCP pushes back.
            if wait_for(lambda: ws.stats.queued >= MAX_QUEUE, SLOW_STEP, 0.01):
                queue_full.set()
            release.wait(SLOW_STEP)
            ws.recv(timeout=SLOW_STEP)
        except Exception as exc:
            outcome.append(exc)
        finally:
            handler_done.set()

    # 8 KiB of payload in 4096 frames, again and again: 0.6 MiB would take
    # tens of MiB as an object per fragment.
    first = frame(0x2, b"ab", fin=False, mask=b"abcd")
    more = b"".join(frame(0x0, b"cd", fin=False, mask=b"abcd") for _ in range(4096))
    stop = threading.Event()
    # Set by the sender each time the kernel's buffers are full.
    pushed_back = threading.Event()
    with traced_peak() as peak:
        with syncws.serve(
            handler, "127.0.0.1", 0, compression=None, max_size=128 * KiB, max_queue=MAX_QUEUE,
            ping_interval=None, close_timeout=2,
        ) as server:
            sock = raw_client(server.port)
            sock.sendall(first)

            def send() -> None:
                # Non-blocking sends, to see TCP push back rather than
                # guess it from a pause; stop (or the server closing)
                # ends the thread.
                sock.setblocking(False)
                view = memoryview(b"")
                while not stop.is_set():
                    if not view:
                        view = memoryview(more)
                    try:
                        view = view[sock.send(view):]
                    except BlockingIOError:
                        pushed_back.set()
                        select.select([], [sock], [], 0.05)
                    except OSError:
                        return

            sender = threading.Thread(target=send)
            sender.start()
            try:
                assert queue_full.wait(SLOW_STEP), "the server's queue never filled"
                # Pushed back after the queue filled: the server holds what
                # it read, and the kernel's buffers the rest.
                pushed_back.clear()
                assert pushed_back.wait(SLOW_STEP), "TCP never pushed back"
                blocked_peak = tracemalloc.get_traced_memory()[1]
                release.set()
                assert handler_done.wait(SLOW_STEP + 10), "recv() never returned"
            finally:
                release.set()
                stop.set()
                sender.join(SLOW_STEP)
                sock.close()
    assert len(outcome) == 1 and isinstance(outcome[0], syncws.ConnectionClosed), outcome
    assert outcome[0].code == 1006 and "max_size" in outcome[0].reason, outcome
    # (max_queue + 1) x max_size is 640 KiB, and the kernel's buffers hold
    # the rest of what the peer sent.
    assert blocked_peak < 2 * MiB, f"peak {blocked_peak / MiB:.1f} MiB while blocked"
    assert peak[0] < 2 * MiB, f"peak {peak[0] / MiB:.1f} MiB"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [16, 4 * MiB], ids=["read", "read-into-frame"])
def test_a_message_recv_returned_is_not_kept_while_the_peer_is_silent(size: int) -> None:
    """Once recv() has returned a message and the caller dropped it, the
    connection holds no reference to it, though the peer sends nothing more
    (the reader thread blocks on the socket meanwhile). Small frames come
    through a read, large ones are read into the frame's buffer."""

    def handler(ws: Any) -> None:
        ws.send(b"x" * size)
        with contextlib.suppress(syncws.ConnectionClosed):
            ws.recv(timeout=20)  # silent until the client closes

    with syncws.serve(handler, "127.0.0.1", 0, compression=None, max_size=8 * MiB) as server:
        with syncws.connect(f"ws://127.0.0.1:{server.port}/", compression=None, max_size=8 * MiB) as ws:
            message = ws.recv(timeout=10)
            assert len(message) == size
            # The reader thread may still be on its way to the socket.
            deadline = time.monotonic() + 5
            while sys.getrefcount(message) > 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sys.getrefcount(message) == 2  # the name and the call's argument


@pytest.mark.timeout(30)
def test_connections_waiting_for_the_peers_end_of_stream_hold_no_read_buffer() -> None:
    """After the closing handshake the server waits for each client's FIN
    (RFC 6455 §7.1.1), reading what still comes to discard it: 20 such
    connections hold no read buffer each (one of read_limit bytes was 1.3 MB)."""
    with syncws.serve(lambda ws: ws.wait_closed(20), "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        socks = [raw_client(server.port) for _ in range(20)]
        try:
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for sock in socks:
                    sock.sendall(frame(0x8, b"\x03\xe8", mask=b"abcd"))
                for sock in socks:  # the close frame's echo, then the server's FIN
                    received = b""
                    while True:
                        data = sock.recv(4096)
                        if not data:
                            break
                        received += data
                    assert received == b"\x88\x02\x03\xe8"
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            # A free-threaded CPython's threads hold more of their own (the
            # reader threads still run here): 2 KiB each where the reader's
            # loop writes, traced; none of it a read buffer.
            per_connection = 8 * KiB if sysconfig.get_config_var("Py_GIL_DISABLED") else 4 * KiB
            assert held < 20 * per_connection, f"{held / KiB:.0f} KiB held by 20 connections waiting"
        finally:
            for sock in socks:
                sock.close()
