"""permessage-deflate (RFC 7692) end to end, over real sockets on 127.0.0.1.

What is checked, and against whom:

* negotiation: syncws <-> syncws, syncws <-> websockets (sync and asyncio
  servers, sync client; default and non-default parameters), compression
  disabled on either side, explicit :class:`DeflateSettings` on the wire;
* round trips: text and binary, 0 B to 1 MiB, compressible and random,
  fragmented, bursts of small messages, with and without context takeover;
* the wire itself, read by a hand-made peer that parses frames with
  :func:`syncws.framing.read_frame`: RSV1 on the first frame of a compressed
  message only, never on control frames, ``compress=False/True``, the
  threshold, and bytes saved;
* hostile peers: a decompression bomb (1 MiB inflating to 1 GiB) against
  the client and the server, with the process's peak memory measured;
  corrupt DEFLATE data (1007); RSV1 where it may not be (1002);
* Node's ``ws`` (``perMessageDeflate: true``) as client and server: see
  ``tests/interop/node``. Needs ``npm ci --prefix tests/interop/node``; the
  tests fail (not skip) when node is there but ``ws`` isn't installed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import queue
import random
import select
import socket
import struct
import subprocess
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

import syncws
from conftest import traced_peak
from services import find_program
from syncws.exceptions import ConnectionClosedError
from syncws.extensions.permessage_deflate import DEFAULT_THRESHOLD, DeflateSettings
from syncws.framing import Frame, Opcode, read_frame

pytestmark = pytest.mark.timeout(60)

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TAIL = b"\x00\x00\xff\xff"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Big enough for the 1 MiB messages of the corpus on every peer.
BIG = 2 * MiB

NODE_DIR = Path(__file__).parent / "interop" / "node"
NPM_CI = "npm ci --prefix tests/interop/node"


# -- data ---------------------------------------------------------------------------


def json_text(size: int, seed: int = 0) -> str:
    """Typical JSON-ish text of exactly ``size`` characters (ASCII)."""
    rnd = random.Random(seed)
    names = ["alice", "bob", "carol", "dave", "eve", "mallory", "trent"]
    parts: List[str] = []
    length = 0
    while length < size:
        item = json.dumps(
            {"id": rnd.randrange(10**6), "user": rnd.choice(names), "active": rnd.random() < 0.5,
             "score": round(rnd.random() * 100, 2), "tags": rnd.sample(names, 2)}
        )
        parts.append(item)
        length += len(item) + 1
    return ",".join(parts)[:size]


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).getrandbits(8 * size).to_bytes(size, "little") if size else b""


def corpus() -> List[Any]:
    """Whole messages: every size, text and binary, compressible and random."""
    messages: List[Any] = []
    for size in (0, 1, 127, 128, 129, 64 * KiB, MiB):
        messages.append(json_text(size, size))
        messages.append(json_text(size, size + 1).encode())
        messages.append(random_bytes(size, size))
    messages.append(bytes(MiB))
    messages.append("é€😀 " * 3000)  # multi-byte UTF-8
    return messages


def fragmented() -> List[Tuple[List[Any], Any]]:
    """``(fragments, message as received)`` pairs for send(iterable)."""
    text = [json_text(1000, 1), "é€", "", json_text(70000, 2), "😀"]
    binary = [random_bytes(100, 3), json_text(5000, 4).encode(), b"", bytes(200000)]
    single = [json_text(300, 5)]
    return [(text, "".join(text)), (binary, b"".join(binary)), (single, single[0])]


def burst(n: int = 200) -> List[str]:
    """Small similar messages: context takeover makes later ones refer to earlier ones."""
    return [json.dumps({"seq": i, "event": "tick", "user": f"user{i % 7}", "value": i * 7 % 13}) for i in range(n)]


def round_trip(ws: Any) -> None:
    """Send everything through an echo peer; each echo must equal what was sent.

    ``ws`` is any connection with ``send(message)`` and ``recv(timeout)``
    (syncws or websockets.sync).
    """
    for message in corpus():
        ws.send(message)
        echo = ws.recv(timeout=10)
        assert type(echo) is type(message) and echo == message, f"{type(message).__name__} of {len(message)}"
    for fragments, whole in fragmented():
        ws.send(fragments)
        echo = ws.recv(timeout=10)
        assert type(echo) is type(whole) and echo == whole, f"fragmented {type(whole).__name__}"
    messages = burst()
    for message in messages:
        ws.send(message)
    assert [ws.recv(timeout=10) for _ in messages] == messages


# -- peers ----------------------------------------------------------------------------


def echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


@contextlib.contextmanager
def syncws_server(handler: Callable[[Any], None] = echo, **kwargs: Any) -> Iterator[Tuple[str, "queue.Queue[Any]"]]:
    """A syncws server; the queue gets each connection's server-side object."""
    seen: "queue.Queue[Any]" = queue.Queue()

    def wrapped(ws: Any) -> None:
        seen.put(ws)
        handler(ws)

    kwargs.setdefault("max_size", BIG)
    with syncws.serve(wrapped, "127.0.0.1", 0, ping_interval=None, **kwargs) as server:
        yield f"ws://127.0.0.1:{server.port}", seen


def connect(uri: str, **kwargs: Any) -> Any:
    kwargs.setdefault("max_size", BIG)
    return syncws.connect(uri, proxy=None, open_timeout=10, close_timeout=5, ping_interval=None, **kwargs)


@contextlib.contextmanager
def websockets_sync_server(**kwargs: Any) -> Iterator[Tuple[str, "queue.Queue[Any]"]]:
    from websockets.sync.server import serve

    seen: "queue.Queue[Any]" = queue.Queue()

    def handler(ws: Any) -> None:
        seen.put(ws)
        for message in ws:
            ws.send(message)

    server = serve(handler, "127.0.0.1", 0, max_size=BIG, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}", seen
    finally:
        server.shutdown()
        thread.join(10)


@contextlib.contextmanager
def websockets_asyncio_server(**kwargs: Any) -> Iterator[Tuple[str, "queue.Queue[Any]"]]:
    from websockets.asyncio.server import serve

    seen: "queue.Queue[Any]" = queue.Queue()

    async def handler(ws: Any) -> None:
        seen.put(ws)
        async for message in ws:
            await ws.send(message)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        return await serve(handler, "127.0.0.1", 0, max_size=BIG, **kwargs)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def websockets_connect(uri: str, **kwargs: Any) -> Any:
    from websockets.sync.client import connect as ws_connect

    return ws_connect(uri, max_size=BIG, open_timeout=10, close_timeout=5, proxy=None, **kwargs)


def ws_server_non_default() -> Any:
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=10,
        client_max_window_bits=9,
    )


def ws_client_non_default() -> Any:
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    return ClientPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=10,
        client_max_window_bits=9,
    )


NON_DEFAULT_RESPONSE = (
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
    "server_max_window_bits=10; client_max_window_bits=9"
)


def extension_params(header: Optional[str]) -> Tuple[str, set]:
    """``"permessage-deflate; a; b=1"`` -> ``("permessage-deflate", {"a", "b=1"})``."""
    assert header is not None, "no Sec-WebSocket-Extensions header"
    name, *params = [part.strip().replace(" ", "") for part in header.split(";")]
    return name, set(params)


# -- a hand-made peer, for the wire --------------------------------------------------


class Raw:
    """One side of a WebSocket connection spoken by hand over a socket.

    Frames are read with :func:`syncws.framing.read_frame` (RSV1 allowed, so
    that it reports it instead of refusing it) and written by hand.
    """

    def __init__(self, sock: socket.socket, *, is_client: bool) -> None:
        self.sock = sock
        self.sock.settimeout(15)
        self.is_client = is_client
        self.buffer = bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("the peer closed the connection")
        self.buffer += chunk

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_head(self) -> str:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        return head

    def read_frame(self) -> Frame:
        # A server reads masked frames; a client unmasked ones.
        return read_frame(self.read_exact, mask=not self.is_client, allow_rsv1=True)

    def frames_until_close(self) -> List[Frame]:
        """Read frames up to and including a close frame, then answer it."""
        frames = []
        while True:
            frame = self.read_frame()
            frames.append(frame)
            if frame.opcode is Opcode.CLOSE:
                self.send_frame(Opcode.CLOSE, frame.data)
                if not self.is_client:
                    # The server closes TCP first (RFC 6455 §7.1.1).
                    self.sock.shutdown(socket.SHUT_RDWR)
                return frames

    def read_close(self) -> Tuple[int, str]:
        """Skip to the peer's close frame, answer it, return ``(code, reason)``."""
        data = self.frames_until_close()[-1].data
        return struct.unpack("!H", data[:2])[0], data[2:].decode()

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> None:
        self.sock.sendall(build_frame(opcode, payload, fin=fin, rsv1=rsv1, masked=self.is_client))

    def close(self) -> None:
        self.sock.close()


def xor_mask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


def build_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, masked: bool = False) -> bytes:
    """Serialize a frame by hand (RFC 6455 §5.2)."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if masked:
        mask = os.urandom(4)
        return head + mask + xor_mask(payload, mask)
    return head + payload


def deflate(data: bytes) -> bytes:
    """One message compressed the RFC 7692 way (fresh context)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(TAIL)
    return payload[:-4]


class Background:
    """Run ``fn`` in a thread; ``result(timeout)`` returns or re-raises."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._outcome: List[Any] = []

        def run() -> None:
            try:
                self._outcome.append((True, fn()))
            except BaseException as exc:
                self._outcome.append((False, exc))

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 20) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"background task still running after {timeout} s"
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value


@pytest.fixture
def raw_server():
    """``start(script, extensions=...) -> (uri, Background)``: one hand-made server connection.

    The server reads the request, answers 101 with ``Sec-WebSocket-Extensions:
    extensions`` (omitted when ``None``) and runs ``script(raw, request_head)``.
    """
    listeners: List[socket.socket] = []
    conns: List[Raw] = []

    def start(script: Callable[[Raw, str], Any], extensions: Optional[str] = "permessage-deflate") -> Tuple[str, Background]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(15)
        listeners.append(listener)

        def serve_one() -> Any:
            sock, _ = listener.accept()
            raw = Raw(sock, is_client=False)
            conns.append(raw)
            head = raw.read_head()
            key = next(
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            response = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n"
            )
            if extensions is not None:
                response += f"Sec-WebSocket-Extensions: {extensions}\r\n"
            raw.sock.sendall((response + "\r\n").encode())
            return script(raw, head)

        return f"ws://127.0.0.1:{listener.getsockname()[1]}", Background(serve_one)

    yield start
    for raw in conns:
        raw.close()
    for listener in listeners:
        listener.close()


def raw_connect(uri: str, offer: Optional[str] = "permessage-deflate; client_max_window_bits") -> Tuple[Raw, str]:
    """Open a hand-made client connection; return it and the response head."""
    host, port = uri[len("ws://"):].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    raw = Raw(sock, is_client=True)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if offer is not None:
        request += f"Sec-WebSocket-Extensions: {offer}\r\n"
    sock.sendall((request + "\r\n").encode())
    head = raw.read_head()
    assert head.startswith("HTTP/1.1 101"), head
    return raw, head


def header(head: str, name: str) -> Optional[str]:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def inflate_messages(frames: List[Frame], wbits: int = 15) -> List[Tuple[Opcode, bool, bytes]]:
    """Reassemble data frames into ``(opcode, compressed, payload)``, inflating
    compressed messages with one context for the whole connection."""
    decompressor = zlib.decompressobj(-wbits)
    messages = []
    current: List[Frame] = []
    for frame in frames:
        if frame.opcode.value >= Opcode.CLOSE.value:
            continue
        current.append(frame)
        if not frame.fin:
            continue
        compressed = current[0].rsv1
        payload = b"".join(f.data for f in current)
        if compressed:
            payload = decompressor.decompress(payload + TAIL)
        messages.append((current[0].opcode, compressed, payload))
        current = []
    return messages


# -- negotiation ----------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_negotiated_by_default_between_syncws_peers():
    with syncws_server() as (uri, seen), connect(uri) as ws:
        server_ws = seen.get(timeout=5)
        assert ws.extensions and server_ws.extensions
        name, params = extension_params(ws.response_headers["Sec-WebSocket-Extensions"])
        assert name == "permessage-deflate"
        # The server's defaults: 4 KiB windows both ways.
        assert params == {"server_max_window_bits=12", "client_max_window_bits=12"}
        assert extension_params(ws.request_headers["Sec-WebSocket-Extensions"]) == (
            "permessage-deflate", {"client_max_window_bits"})
        ws.send("x" * 1000)
        assert ws.recv(timeout=5) == "x" * 1000


@pytest.mark.timeout(20)
@pytest.mark.parametrize("side", ["client", "server"])
def test_compression_none_on_either_side_disables_the_extension(side):
    client_kwargs = {"compression": None} if side == "client" else {}
    server_kwargs = {"compression": None} if side == "server" else {}
    with syncws_server(**server_kwargs) as (uri, seen), connect(uri, **client_kwargs) as ws:
        server_ws = seen.get(timeout=5)
        assert ws.extensions == [] and server_ws.extensions == []
        assert "Sec-WebSocket-Extensions" not in ws.response_headers
        offered = "Sec-WebSocket-Extensions" in ws.request_headers
        assert offered == (side == "server")
        before = ws.stats.bytes_out
        ws.send("y" * 10000)
        assert ws.recv(timeout=5) == "y" * 10000
        assert ws.stats.bytes_out - before >= 10000  # sent as is


@pytest.mark.timeout(30)
@pytest.mark.parametrize("server", ["syncws", "websockets"])
def test_client_deflate_settings_reach_the_wire(server):
    settings = DeflateSettings(
        server_no_context_takeover=True, client_no_context_takeover=True,
        server_max_window_bits=10, client_max_window_bits=11,
    )
    start = syncws_server if server == "syncws" else websockets_sync_server
    with start() as (uri, seen), connect(uri, compression=settings) as ws:
        assert extension_params(ws.request_headers["Sec-WebSocket-Extensions"]) == (
            "permessage-deflate",
            {"server_no_context_takeover", "client_no_context_takeover",
             "server_max_window_bits=10", "client_max_window_bits=11"},
        )
        assert extension_params(ws.response_headers["Sec-WebSocket-Extensions"]) == (
            "permessage-deflate",
            {"server_no_context_takeover", "client_no_context_takeover",
             "server_max_window_bits=10", "client_max_window_bits=11"},
        )
        server_ws = seen.get(timeout=5)
        if server == "syncws":
            assert server_ws.extensions
        else:
            assert server_ws.request.headers["Sec-WebSocket-Extensions"] == ws.request_headers["Sec-WebSocket-Extensions"]
        round_trip(ws)


@pytest.mark.timeout(20)
def test_server_deflate_settings_reach_the_wire_websockets_client():
    settings = DeflateSettings(server_no_context_takeover=True, server_max_window_bits=9, client_max_window_bits=10)
    with syncws_server(compression=settings) as (uri, seen), websockets_connect(uri) as ws:
        assert extension_params(ws.response.headers["Sec-WebSocket-Extensions"]) == (
            "permessage-deflate",
            {"server_no_context_takeover", "server_max_window_bits=9", "client_max_window_bits=10"},
        )
        assert seen.get(timeout=5).extensions
        round_trip(ws)


WEBSOCKETS_SERVERS = {
    "sync-default": lambda: websockets_sync_server(),
    "sync-non-default": lambda: websockets_sync_server(compression=None, extensions=[ws_server_non_default()]),
    "asyncio-default": lambda: websockets_asyncio_server(),
    "asyncio-non-default": lambda: websockets_asyncio_server(compression=None, extensions=[ws_server_non_default()]),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("kind", sorted(WEBSOCKETS_SERVERS))
def test_syncws_client_with_websockets_server(kind):
    with WEBSOCKETS_SERVERS[kind]() as (uri, seen), connect(uri) as ws:
        server_ws = seen.get(timeout=5)
        assert ws.extensions
        response = ws.response_headers["Sec-WebSocket-Extensions"]
        if kind.endswith("non-default"):
            assert extension_params(response) == extension_params(NON_DEFAULT_RESPONSE)
        else:
            assert extension_params(response) == (
                "permessage-deflate", {"server_max_window_bits=12", "client_max_window_bits=12"})
        assert server_ws.request.headers["Sec-WebSocket-Extensions"] == "permessage-deflate; client_max_window_bits"
        round_trip(ws)


@pytest.mark.timeout(40)
@pytest.mark.parametrize("kind", ["default", "non-default"])
def test_websockets_client_with_syncws_server(kind):
    kwargs = {} if kind == "default" else {"compression": None, "extensions": [ws_client_non_default()]}
    with syncws_server() as (uri, seen), websockets_connect(uri, **kwargs) as ws:
        server_ws = seen.get(timeout=5)
        assert server_ws.extensions
        response = ws.response.headers["Sec-WebSocket-Extensions"]
        if kind == "default":
            assert extension_params(response) == (
                "permessage-deflate", {"server_max_window_bits=12", "client_max_window_bits=12"})
        else:
            assert extension_params(response) == extension_params(NON_DEFAULT_RESPONSE)
        round_trip(ws)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("side", ["client", "server"])
def test_websockets_peer_without_compression(side):
    if side == "client":
        with websockets_sync_server() as (uri, seen), connect(uri, compression=None) as ws:
            assert ws.extensions == []
            assert "Sec-WebSocket-Extensions" not in ws.response_headers
            assert "Sec-WebSocket-Extensions" not in seen.get(timeout=5).request.headers
            round_trip(ws)
    else:
        with syncws_server() as (uri, seen), websockets_connect(uri, compression=None) as ws:
            assert seen.get(timeout=5).extensions == []
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            round_trip(ws)


# -- round trips between syncws peers ------------------------------------------------


SYNCWS_PAIRS = {
    "defaults": ({}, {}),
    "no-context-takeover": (
        {"compression": DeflateSettings(server_no_context_takeover=True, client_no_context_takeover=True)},
        {"compression": DeflateSettings(server_no_context_takeover=True, client_no_context_takeover=True,
                                        server_max_window_bits=12, client_max_window_bits=12)},
    ),
    "threshold-0-small-windows": (
        {"compression": DeflateSettings(threshold=0, client_max_window_bits=8)},
        {"compression": DeflateSettings(threshold=0, server_max_window_bits=8, client_max_window_bits=9)},
    ),
    "off": ({"compression": None}, {"compression": None}),
}


@pytest.mark.timeout(40)
@pytest.mark.parametrize("pair", sorted(SYNCWS_PAIRS))
def test_round_trip_between_syncws_peers(pair):
    client_kwargs, server_kwargs = SYNCWS_PAIRS[pair]
    with syncws_server(**server_kwargs) as (uri, seen), connect(uri, **client_kwargs) as ws:
        assert bool(ws.extensions) == (pair != "off")
        assert bool(seen.get(timeout=5).extensions) == (pair != "off")
        round_trip(ws)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("takeover", [True, False])
def test_many_messages_in_a_row_with_every_message_compressed(takeover):
    """Context takeover correctness: 1000 similar messages, each compressed,
    in both directions; takeover must make them smaller on the wire."""
    settings = DeflateSettings(threshold=0, server_no_context_takeover=not takeover,
                               client_no_context_takeover=not takeover)
    server_settings = DeflateSettings(threshold=0, server_max_window_bits=12, client_max_window_bits=12,
                                      server_no_context_takeover=not takeover,
                                      client_no_context_takeover=not takeover)
    messages = burst(1000)
    with syncws_server(compression=server_settings) as (uri, _), connect(uri, compression=settings) as ws:
        ws.send(messages[0])  # the connection's first message, before the numbers below
        assert ws.recv(timeout=5) == messages[0]
        before = ws.stats
        for message in messages:
            ws.send(message)
            assert ws.recv(timeout=5) == message
        after = ws.stats
    raw_size = sum(len(m) for m in messages)
    sent = after.bytes_out - before.bytes_out
    received = after.bytes_in - before.bytes_in
    if takeover:
        # Each message mostly refers to the previous one.
        assert sent < raw_size * 0.6 and received < raw_size * 0.5, (sent, received, raw_size)
    else:
        assert sent > raw_size * 0.6, (sent, raw_size)


# -- the wire -------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_compression_shrinks_bytes_on_the_wire():
    text = ("The quick brown fox jumps over the lazy dog. " * 3000)[: 100 * KiB]
    sizes = {}
    for compression in ("deflate", None):
        with syncws_server() as (uri, _), connect(uri, compression=compression) as ws:
            before = ws.stats
            ws.send(text)
            assert ws.recv(timeout=5) == text
            after = ws.stats
            sizes[compression] = (after.bytes_out - before.bytes_out, after.bytes_in - before.bytes_in)
    assert sizes[None][0] >= 100 * KiB and sizes[None][1] >= 100 * KiB
    assert sizes["deflate"][0] < sizes[None][0] / 20, sizes
    assert sizes["deflate"][1] < sizes[None][1] / 20, sizes


@pytest.mark.timeout(20)
def test_client_frames_on_the_wire(raw_server):
    """RSV1 on the first frame only; control frames never compressed;
    compress=False/True; the threshold."""
    uri, server = raw_server(lambda raw, head: raw.frames_until_close())
    big = json_text(5000, 1)
    with connect(uri) as ws:
        assert ws.extensions
        ws.send(big)                                    # 1: compressed, one frame
        ws.send([json_text(300, 2), json_text(300, 3), "tail"])  # 2: fragmented
        ws.ping(b"p" * 100)
        ws.pong(b"q" * 100)
        ws.send(big.encode(), compress=False)           # 3: forced off
        ws.send("hi", compress=True)                    # 4: forced on
        ws.send("a" * (DEFAULT_THRESHOLD - 1))          # 5: below the threshold
        ws.send("b" * DEFAULT_THRESHOLD)                # 6: at the threshold
        ws.send([b"x" * 300, b"y" * 300], compress=False)  # 7: fragmented, forced off
        ws.send(b"")                                    # 8: empty
    frames = server.result()

    data_frames = [f for f in frames if f.opcode.value < Opcode.CLOSE.value]
    first_frames = [f for i, f in enumerate(data_frames) if i == 0 or data_frames[i - 1].fin]
    assert all(not f.rsv1 for f in data_frames if f.opcode is Opcode.CONT), "RSV1 on a continuation frame"
    control = [f for f in frames if f.opcode.value >= Opcode.CLOSE.value]
    assert [f.opcode for f in control] == [Opcode.PING, Opcode.PONG, Opcode.CLOSE]
    assert not any(f.rsv1 for f in control)
    assert control[0].data == b"p" * 100 and control[1].data == b"q" * 100

    messages = inflate_messages(frames)
    assert [(opcode, compressed) for opcode, compressed, _ in messages] == [
        (Opcode.TEXT, True), (Opcode.TEXT, True), (Opcode.BINARY, False), (Opcode.TEXT, True),
        (Opcode.TEXT, False), (Opcode.TEXT, True), (Opcode.BINARY, False), (Opcode.BINARY, False),
    ]
    assert [payload for _, _, payload in messages] == [
        big.encode(), (json_text(300, 2) + json_text(300, 3) + "tail").encode(), big.encode(), b"hi",
        b"a" * (DEFAULT_THRESHOLD - 1), b"b" * DEFAULT_THRESHOLD, b"x" * 300 + b"y" * 300, b"",
    ]
    assert [f.rsv1 for f in first_frames] == [compressed for _, compressed, _ in messages]
    assert len(frames[0].data) < len(big) / 2  # really compressed
    # One frame per fragment (plus, possibly, an empty final one).
    frame_counts = []
    for f in data_frames:
        if f.opcode is Opcode.CONT:
            frame_counts[-1] += 1
        else:
            frame_counts.append(1)
    assert frame_counts[:2] == [1, frame_counts[1]] and frame_counts[1] >= 3, frame_counts
    assert frame_counts[2:6] == [1, 1, 1, 1] and frame_counts[6] >= 2 and frame_counts[7] == 1, frame_counts


@pytest.mark.timeout(20)
def test_client_threshold_setting(raw_server):
    uri, server = raw_server(lambda raw, head: raw.frames_until_close())
    with connect(uri, compression=DeflateSettings(threshold=0)) as ws:
        ws.send("a")
        ws.send(b"")
    messages = inflate_messages(server.result())
    assert messages == [(Opcode.TEXT, True, b"a"), (Opcode.BINARY, True, b"")]


@pytest.mark.timeout(20)
def test_server_frames_on_the_wire():
    """The server side: RSV1 on the first frame only, threshold, compress=..."""
    big = json_text(3000, 7)

    def handler(ws: Any) -> None:
        ws.send(big)
        ws.send([big[:1000], big[1000:]])
        ws.ping(b"ping")
        ws.send("small")
        ws.send(big, compress=False)
        ws.send(b"tiny", compress=True)
        ws.recv(timeout=10)  # the client's go-ahead to close

    with syncws_server(handler) as (uri, _):
        raw, head = raw_connect(uri)
        try:
            assert extension_params(header(head, "Sec-WebSocket-Extensions")) == (
                "permessage-deflate", {"server_max_window_bits=12", "client_max_window_bits=12"})
            frames = []
            while len([f for f in frames if f.fin and f.opcode is not Opcode.PING]) < 5:
                frames.append(raw.read_frame())
            raw.send_frame(Opcode.TEXT, b"done")
            frames += raw.frames_until_close()
        finally:
            raw.close()
    assert [f.rsv1 for f in frames if f.opcode is Opcode.CONT] == [False]
    assert [(f.opcode, f.rsv1) for f in frames if f.opcode.value >= Opcode.CLOSE.value] == [
        (Opcode.PING, False), (Opcode.CLOSE, False)]
    messages = inflate_messages(frames, wbits=12)
    assert messages == [
        (Opcode.TEXT, True, big.encode()), (Opcode.TEXT, True, big.encode()), (Opcode.TEXT, False, b"small"),
        (Opcode.TEXT, False, big.encode()), (Opcode.BINARY, True, b"tiny"),
    ]


@pytest.mark.timeout(20)
def test_server_accepts_a_bare_offer():
    """OkHttp, Java and Go clients offer exactly ``permessage-deflate``: the
    server accepts it and inflates with the 15-bit window RFC 7692 implies."""
    big = json_text(3000, 3)
    with syncws_server() as (uri, seen):
        raw, head = raw_connect(uri, offer="permessage-deflate")
        try:
            # No client_max_window_bits in the response: the offer had none.
            assert extension_params(header(head, "Sec-WebSocket-Extensions")) == (
                "permessage-deflate", {"server_max_window_bits=12"})
            assert seen.get(timeout=5).extensions
            # Compressed with a full 32 KiB window, as such a client does,
            # with context takeover across the two messages.
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            for _ in range(2):
                payload = compressor.compress(big.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
                raw.send_frame(Opcode.TEXT, payload[:-4], rsv1=True)
            frames = [raw.read_frame(), raw.read_frame()]
            raw.send_frame(Opcode.CLOSE, struct.pack("!H", 1000))
            frames += raw.frames_until_close()
        finally:
            raw.close()
    # The echoes come back compressed with the server's 12-bit window.
    assert inflate_messages(frames, wbits=12) == [(Opcode.TEXT, True, big.encode())] * 2


# -- hostile peers ---------------------------------------------------------------------


# What each piece of a bomb inflates to.
BOMB_PIECE = 16 * MiB


@pytest.fixture(scope="module")
def bomb_pieces() -> Tuple[bytes, bytes]:
    """The DEFLATE data of :data:`BOMB_PIECE` zeros, twice: from an empty
    window (the first piece), then from a window of zeros (the block that the
    rest of a bomb repeats: matches at distance 1). Each ends with a sync
    flush: at a byte boundary, in no final block."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    zeros = bytes(BOMB_PIECE)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    block = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return first, block


@pytest.fixture(scope="module")
def bomb(bomb_pieces: Tuple[bytes, bytes]) -> bytes:
    """One message's DEFLATE data, under 1 MiB, that inflates to 1 GiB of zeros:
    the first piece, then the block repeated instead of 1 GiB really compressed."""
    first, block = bomb_pieces
    data = first + block * (GiB // BOMB_PIECE - 1)
    assert data.endswith(TAIL)
    data = data[:-4]
    assert len(data) <= MiB  # fits in a frame that max_size=2**20 lets through
    return data


def test_the_bomb_is_real(bomb: bytes, bomb_pieces: Tuple[bytes, bytes]) -> None:
    # Proved piece by piece rather than by inflating the whole gigabyte (a
    # few seconds of CPU, which a loaded machine stretched past the test's
    # timeout). How a DEFLATE block decodes depends only on the window (the
    # last 32 KiB out) and on where in the stream it starts. Each piece ends
    # with a sync flush, so the next starts at a byte boundary; each inflates
    # to zeros only, so the window then holds zeros. The block therefore
    # starts every time from the same state, and leaves that state again:
    # every one of its copies inflates to what the first copy does.
    first, block = bomb_pieces
    copies = GiB // BOMB_PIECE - 1
    assert bomb + TAIL == first + block * copies
    decompressor = zlib.decompressobj(-15)
    for piece in (first, block, block):  # the block twice: from the state it leaves, too
        out = decompressor.decompress(piece)
        assert len(out) == BOMB_PIECE and out.count(0) == BOMB_PIECE
        assert piece.endswith(TAIL)  # a sync flush: the next piece starts at a byte boundary
        assert not decompressor.unconsumed_tail and not decompressor.unused_data and not decompressor.eof
    assert BOMB_PIECE * (1 + copies) == GiB


@pytest.mark.timeout(40)
def test_decompression_bomb_against_the_client(raw_server, bomb):
    def script(raw: Raw, head: str) -> Tuple[int, str]:
        raw.sock.sendall(build_frame(Opcode.BINARY, bomb, rsv1=True))
        return raw.read_close()

    with traced_peak() as peak:
        uri, server = raw_server(script)
        ws = connect(uri, max_size=MiB)
        try:
            with pytest.raises(ConnectionClosedError) as exc_info:
                ws.recv(timeout=20)
        finally:
            ws.close()
        code, reason = server.result()
    assert code == 1009, (code, reason)
    assert "decompression" in reason, reason  # inflating stopped it, not the frame's size
    # We failed the connection: no close frame of the peer's is processed,
    # so the code is 1006, the cause is the reason, and ours was 1009.
    assert exc_info.value.code == 1006 and "decompression" in exc_info.value.reason
    assert ws.close_sent is not None and ws.close_sent[0] == 1009
    print(f"peak traced memory: {peak[0] / MiB:.1f} MiB")
    assert peak[0] < 16 * MiB, f"peak {peak[0] / MiB:.1f} MiB"


@pytest.mark.timeout(40)
def test_decompression_bomb_against_the_server(bomb):
    masked = build_frame(Opcode.BINARY, bomb, rsv1=True, masked=True)
    outcome: "queue.Queue[Any]" = queue.Queue()

    def handler(ws: Any) -> None:
        try:
            outcome.put(("message", len(ws.recv(timeout=20))))
        except Exception as exc:
            outcome.put(("error", exc))

    with traced_peak() as peak:
        with syncws_server(handler, max_size=MiB) as (uri, _):
            raw, _ = raw_connect(uri)
            try:
                raw.sock.sendall(masked)
                code, reason = raw.read_close()
            finally:
                raw.close()
            kind, value = outcome.get(timeout=10)
    assert code == 1009, (code, reason)
    assert "decompression" in reason, reason
    assert kind == "error" and isinstance(value, ConnectionClosedError), value
    # Failed by us: 1006, with the cause as the reason (our 1009 went out).
    assert value.code == 1006 and "decompression" in value.reason
    print(f"peak traced memory: {peak[0] / MiB:.1f} MiB")
    assert peak[0] < 16 * MiB, f"peak {peak[0] / MiB:.1f} MiB"


BAD_FRAMES = {
    # name: (frames the peer sends as (opcode, payload, fin, rsv1), expected close code)
    "corrupt-deflate": ([(Opcode.TEXT, b"\xff\xff\xff\xff\xff", True, True)], 1007),
    "corrupt-after-good": ([(Opcode.TEXT, deflate(b"hello"), True, True),
                            (Opcode.BINARY, deflate(b"x" * 100)[:-3] + b"\xff\xfe\xfd", True, True)], 1007),
    "rsv1-on-continuation": ([(Opcode.TEXT, b"\x4a\x04\x00", False, True),  # "a", not final
                              (Opcode.CONT, deflate(b"b"), True, True)], 1002),
    "rsv1-on-ping": ([(Opcode.PING, b"", True, True)], 1002),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_compressed_frames_against_the_client(raw_server, case):
    frames, expected = BAD_FRAMES[case]

    def script(raw: Raw, head: str) -> Tuple[int, str]:
        for opcode, payload, fin, rsv1 in frames:
            raw.send_frame(opcode, payload, fin=fin, rsv1=rsv1)
        return raw.read_close()

    uri, server = raw_server(script)
    with connect(uri) as ws:
        if case == "corrupt-after-good":
            assert ws.recv(timeout=5) == "hello"
        with pytest.raises(ConnectionClosedError) as exc_info:
            ws.recv(timeout=10)
    assert server.result()[0] == expected
    # Failed by us: 1006, with the cause as the reason, our code in close_sent.
    assert exc_info.value.code == 1006 and exc_info.value.reason
    assert ws.close_sent[0] == expected


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_compressed_frames_against_the_server(case):
    frames, expected = BAD_FRAMES[case]
    outcome: "queue.Queue[Any]" = queue.Queue()

    def handler(ws: Any) -> None:
        try:
            while True:
                outcome.put(("message", ws.recv(timeout=10)))
        except Exception as exc:
            outcome.put(("error", exc))

    with syncws_server(handler) as (uri, _):
        raw, _ = raw_connect(uri)
        try:
            for opcode, payload, fin, rsv1 in frames:
                raw.send_frame(opcode, payload, fin=fin, rsv1=rsv1)
            code, _ = raw.read_close()
        finally:
            raw.close()
        if case == "corrupt-after-good":
            assert outcome.get(timeout=5) == ("message", "hello")
        kind, value = outcome.get(timeout=10)
    assert code == expected
    assert kind == "error" and isinstance(value, ConnectionClosedError), value
    assert value.code == 1006 and value.reason, value  # failed by us: the cause is the reason


@pytest.mark.timeout(20)
@pytest.mark.parametrize("why", ["client-disabled", "server-declined"])
def test_rsv1_without_negotiation_against_the_client(raw_server, why):
    def script(raw: Raw, head: str) -> Tuple[int, str]:
        raw.send_frame(Opcode.TEXT, deflate(b"hello"), rsv1=True)
        return raw.read_close()

    uri, server = raw_server(script, extensions=None)
    with connect(uri, compression=None if why == "client-disabled" else "deflate") as ws:
        assert ws.extensions == []
        with pytest.raises(ConnectionClosedError) as exc_info:
            ws.recv(timeout=10)
    assert server.result()[0] == 1002
    assert exc_info.value.code == 1006 and "reserved bits" in exc_info.value.reason
    assert ws.close_sent[0] == 1002


@pytest.mark.timeout(20)
@pytest.mark.parametrize("why", ["server-disabled", "client-did-not-offer"])
def test_rsv1_without_negotiation_against_the_server(why):
    outcome: "queue.Queue[Any]" = queue.Queue()

    def handler(ws: Any) -> None:
        try:
            outcome.put(("message", ws.recv(timeout=10)))
        except Exception as exc:
            outcome.put(("error", exc))

    kwargs = {"compression": None} if why == "server-disabled" else {}
    with syncws_server(handler, **kwargs) as (uri, _):
        raw, head = raw_connect(uri, offer="permessage-deflate" if why == "server-disabled" else None)
        try:
            assert header(head, "Sec-WebSocket-Extensions") is None
            raw.send_frame(Opcode.TEXT, deflate(b"hello"), rsv1=True)
            code, _ = raw.read_close()
        finally:
            raw.close()
        kind, value = outcome.get(timeout=10)
    assert code == 1002
    assert kind == "error" and value.code == 1006 and "reserved bits" in value.reason, value


# -- Node ws --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with ws installed in tests/interop/node."""
    exe = find_program("node")
    if not (NODE_DIR / "node_modules" / "ws" / "package.json").is_file():
        # The pinned ws is a test dependency, like pip's test extra: install
        # it from the lock file so that `python -m pytest` alone is enough.
        result = subprocess.run(
            [find_program("npm"), "ci", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR)],
            capture_output=True, text=True, timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(
                f"node is on PATH but the ws package isn't installed in {NODE_DIR} "
                f"and `{NPM_CI}` failed: {result.stderr[-2000:]}",
                pytrace=False,
            )
    return exe


@pytest.fixture(params=[None, "0"], ids=["ws-default-threshold", "ws-threshold-0"])
def node_threshold(request) -> Optional[str]:
    return request.param


@pytest.fixture
def node_echo_server(node, node_threshold, tmp_path) -> Iterator[str]:
    """Start tests/interop/node/echo_server.js; yield its URI; kill it after."""
    log = open(tmp_path / "echo_server.log", "w+")
    args = [node, str(NODE_DIR / "echo_server.js")] + ([node_threshold] if node_threshold else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, cwd=NODE_DIR)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "the Node echo server didn't print its port within 15 s"
        line = proc.stdout.readline()
        assert line, f"the Node echo server exited: {(tmp_path / 'echo_server.log').read_text()}"
        yield f"ws://127.0.0.1:{json.loads(line)['port']}"
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        log.close()


@pytest.mark.timeout(40)
def test_syncws_client_with_node_server(node_echo_server):
    with connect(node_echo_server) as ws:
        assert ws.extensions
        name, params = extension_params(ws.response_headers["Sec-WebSocket-Extensions"])
        assert name == "permessage-deflate"
        round_trip(ws)
        # Both directions compress: 1 MiB of zeros costs a few KiB each way.
        before = ws.stats
        ws.send(bytes(MiB))
        assert ws.recv(timeout=10) == bytes(MiB)
        after = ws.stats
        assert after.bytes_out - before.bytes_out < 16 * KiB
        assert after.bytes_in - before.bytes_in < 16 * KiB


@pytest.mark.timeout(60)
def test_node_client_with_syncws_server(node, node_threshold):
    received: "queue.Queue[Any]" = queue.Queue()

    def handler(ws: Any) -> None:
        log = []
        try:
            for message in ws:
                payload = message.encode() if isinstance(message, str) else message
                log.append(["text" if isinstance(message, str) else "binary", len(payload),
                            hashlib.sha256(payload).hexdigest()])
                ws.send(message)
        finally:
            received.put((bool(ws.extensions), ws.close_code, log))

    with syncws_server(handler) as (uri, _):
        args = [node, str(NODE_DIR / "client.js"), uri] + ([node_threshold] if node_threshold else [])
        proc = subprocess.run(args, capture_output=True, text=True, timeout=50, cwd=NODE_DIR)
        assert proc.stdout, f"node client.js printed nothing (exit {proc.returncode}): {proc.stderr}"
        report = json.loads(proc.stdout)
        negotiated, close_code, log = received.get(timeout=10)
    assert proc.returncode == 0 and report["mismatches"] == [], (report["mismatches"], proc.stderr)
    assert extension_params(report["extensions"]) == (
        "permessage-deflate", {"server_max_window_bits=12", "client_max_window_bits=12"})
    assert negotiated
    assert log == report["sent"]
    assert report["close"] == [1000, "done"] and close_code == 1000
