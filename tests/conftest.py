"""Shared fixtures: peers to test syncws against, on 127.0.0.1 only.

* ``ws_serve(handler, **kwargs)``: a ``websockets.sync`` server in a thread.
* ``aio_serve(handler, **kwargs)``: a ``websockets.asyncio`` server in a thread.
* ``raw_serve(handler, handshake=True)``: a bare TCP server whose handler gets a
  :class:`RawConn`, for sending frames no well-behaved peer would send.

Each returns the ``ws://`` URI and shuts its server down at teardown.
Handlers run in server threads: they hand results to the test through a
``queue.Queue`` and must not block forever. An exception raised in a raw
handler fails the test at teardown.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import tracemalloc
import asyncio
import base64
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from services import find_program
from syncws.handshake import accept_key

STRESS_DIR = Path(__file__).parent / "stress"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(program, ...): the test starts these programs; without them it is skipped, "
        "saying why, or fails under CI=true (tests/services.py)",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip (or, in CI, fail) a test marked ``needs`` whose programs aren't installed."""
    for mark in item.iter_markers(name="needs"):
        for program in mark.args:
            find_program(program)


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Mark every test of tests/stress/ "stress": setup.cfg deselects them by
    default, ``-m stress`` selects them."""
    for item in items:
        if STRESS_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.stress)


CERTS = Path(__file__).parent / "certs"
CERT_FILE = str(CERTS / "localhost.crt")
KEY_FILE = str(CERTS / "localhost.key")


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


@contextlib.contextmanager
def servers_kept_alive() -> Iterator[None]:
    """Free the garbage now, then none until the block ends.

    ``syncws.metrics.collect()`` adds up the servers alive: an earlier
    test's server that the garbage collector frees in the block would leave
    the sum, and a difference of two sums would go down (seen on 3.13t).
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def http_get(port: int, path: str, timeout: float = 10.0, host: str = "127.0.0.1") -> Tuple[int, str]:
    """``GET path`` of a server on ``host:port``: the status and the body, as text."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


# -- websockets peers ----------------------------------------------------------


@pytest.fixture
def ws_serve():
    """Start ``websockets.sync.server.serve(handler, ...)``; return its URI."""
    from websockets.sync.server import serve

    servers: List[Tuple[Any, threading.Thread]] = []

    def start(handler: Callable[[Any], None], **kwargs: Any) -> str:
        server = serve(handler, "127.0.0.1", 0, **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        scheme = "wss" if kwargs.get("ssl") else "ws"
        host = "localhost" if kwargs.get("ssl") else "127.0.0.1"
        return f"{scheme}://{host}:{server.socket.getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def ws_unix_serve(tmp_path):
    """Start ``websockets.sync.server.unix_serve`` in ``tmp_path``; return the path."""
    from websockets.sync.server import unix_serve

    servers: List[Tuple[Any, threading.Thread]] = []

    def start(handler: Callable[[Any], None], **kwargs: Any) -> str:
        path = str(tmp_path / "ws.sock")
        server = unix_serve(handler, path, **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return path

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def aio_serve():
    """Start ``websockets.asyncio.server.serve(handler, ...)`` on a loop in a thread."""
    from websockets.asyncio.server import serve

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: List[Any] = []

    def start(handler: Callable[[Any], Any], **kwargs: Any) -> str:
        async def open_server() -> Any:
            return await serve(handler, "127.0.0.1", 0, **kwargs)

        server = asyncio.run_coroutine_threadsafe(open_server(), loop).result(10)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start

    async def close_all() -> None:
        for server in servers:
            server.close()
            await server.wait_closed()

    asyncio.run_coroutine_threadsafe(close_all(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


# -- the raw peer ----------------------------------------------------------------


class RawConn:
    """A server-side TCP connection speaking WebSocket by hand.

    Frames are parsed here, not with :mod:`syncws.framing`, so a bug there
    can't hide itself.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.buffer = b""
        self.request = b""

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buffer)} of {n} bytes read")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed in the HTTP head")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    def request_header(self, name: str) -> Optional[str]:
        for line in self.request.decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def handshake(self, accept: Optional[str] = None, extra: str = "") -> None:
        """Read the request and answer 101 (with ``accept`` if given)."""
        self.request = self.read_head()
        key = self.request_header("Sec-WebSocket-Key")
        assert key is not None, self.request
        self.sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept or accept_key(key)}\r\n{extra}\r\n"
            ).encode()
        )

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True) -> None:
        self.send(frame(opcode, payload, fin=fin))

    def read_frame(self) -> Tuple[bool, int, bytes]:
        """Read one frame from the client: ``(fin, opcode, unmasked payload)``."""
        first, second = self.read_exact(2)
        assert second & 0x80, "a client frame must be masked"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self.read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self.read_exact(8))
        mask = self.read_exact(4)
        data = self.read_exact(length)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if length < 4096 else _unmask(data, mask)
        return bool(first & 0x80), first & 0x0F, data

    def read_close(self) -> Tuple[int, str]:
        """Read frames until a close frame; return its ``(code, reason)``."""
        while True:
            _, opcode, data = self.read_frame()
            if opcode == 0x8:
                if not data:
                    return 1005, ""
                return struct.unpack("!H", data[:2])[0], data[2:].decode()

    def close(self) -> None:
        self.sock.close()


def _unmask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: Optional[bytes] = None, length: Optional[int] = None) -> bytes:
    """Serialize a frame by hand; ``length`` may announce more than ``payload``."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask:
        payload = mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


@pytest.fixture
def raw_serve():
    """Start a bare TCP server; each connection runs ``handler(RawConn)``."""
    listeners: List[socket.socket] = []
    threads: List[threading.Thread] = []
    errors: List[BaseException] = []
    conns: List[RawConn] = []
    # Set at teardown: errors from then on come from the teardown itself.
    stopping = threading.Event()

    def start(handler: Callable[[RawConn], None], handshake: bool = True) -> str:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listeners.append(listener)

        def run_one(conn: RawConn) -> None:
            try:
                if handshake:
                    conn.handshake()
                handler(conn)
            except BaseException as exc:  # reported at teardown
                if not stopping.is_set():
                    errors.append(exc)
            finally:
                conn.close()

        def accept_loop() -> None:
            while True:
                try:
                    sock, _ = listener.accept()
                except OSError:
                    return
                conn = RawConn(sock)
                conns.append(conn)
                thread = threading.Thread(target=run_one, args=(conn,), daemon=True)
                threads.append(thread)
                thread.start()

        thread = threading.Thread(target=accept_loop, daemon=True)
        thread.start()
        threads.append(thread)
        return f"ws://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    stopping.set()
    for listener in listeners:
        # shutdown() wakes accept() on Linux; close() alone may not.
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.close()
    for conn in conns:
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    for thread in threads:
        thread.join(10)
    if errors:
        raise errors[0]


def basic_auth_value(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextlib.contextmanager
def traced_peak() -> Iterator[List[int]]:
    """Measure the peak of Python's traced memory above the starting level.

    Yields a list that holds, after the block, the peak in bytes.
    """
    result: List[int] = []
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        yield result
        result.append(tracemalloc.get_traced_memory()[1] - baseline)
    finally:
        tracemalloc.stop()
