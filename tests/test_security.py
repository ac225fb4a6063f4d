"""docs/security.rst, held to the code: its example run for real, its defaults read from the signatures.

The page's Python blocks are taken from the page itself and run (the port
made 0, a free one), so the example can't drift from what the tests check.
"""

from __future__ import annotations

import inspect
import re
import socket
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import pytest

import syncws
from syncws import http as syncws_http
from syncws.fanout import Fanout

PAGE = Path(__file__).resolve().parent.parent / "docs" / "security.rst"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def python_blocks(text: str) -> List[str]:
    """The ``.. code-block:: python`` blocks of an reStructuredText page, dedented."""
    blocks = []
    for match in re.finditer(r"^\.\. code-block:: python\n\n((?:(?:[ ]{4}.*)?\n)+)", text, re.MULTILINE):
        blocks.append(textwrap.dedent(match.group(1)))
    return blocks


def echo(websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


def status_of(port: int, origin_lines: bytes) -> int:
    """The status a raw handshake with these Origin header lines gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n".encode()
            + origin_lines
            + b"\r\n"
        )
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(1024)
            assert chunk, head
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_the_page_has_one_python_example() -> None:
    # If a block is added, this test must learn to run it.
    assert len(python_blocks(PAGE.read_text())) == 1


@pytest.mark.timeout(20)
def test_the_origin_allow_list_example() -> None:
    (block,) = python_blocks(PAGE.read_text())
    assert '"localhost", 8765' in block
    namespace: Dict[str, Any] = {"handler": echo}
    exec(block.replace('"localhost", 8765', '"localhost", 0'), namespace)
    server = namespace["server"]
    try:
        port = server.port
        for origin in ("https://app.example.com", "https://chat.example.com"):
            with syncws.connect(f"ws://127.0.0.1:{port}/", origin=origin) as ws:
                ws.send("hello")
                assert ws.recv(timeout=5) == "hello"
        for origin in ("https://evil.test", "https://example.com.evil.test", "https://a.b.example.com"):
            with pytest.raises(syncws.InvalidStatusCode) as info:
                syncws.connect(f"ws://127.0.0.1:{port}/", origin=origin)
            assert info.value.status_code == 403, origin
        # No Origin: refused, None isn't in the list.
        assert status_of(port, b"") == 403
        # Two origins, one of them allowed: a malformed request.
        assert status_of(port, b"Origin: https://evil.test\r\nOrigin: https://app.example.com\r\n") == 400
    finally:
        server.close()
        server.wait_closed(timeout=10)


def test_the_defaults_table() -> None:
    # The values the page's "Defaults" table states.
    serve = inspect.signature(syncws.serve).parameters
    assert serve["origins"].default is None
    assert serve["max_size"].default == 2**20
    assert serve["max_queue"].default == 32
    assert serve["max_connections"].default is None
    assert serve["max_pending_handshakes"].default == 128
    assert serve["first_byte_timeout"].default == 5
    assert serve["timeout"].default == 10 and serve["open_timeout"].default is None
    assert serve["write_timeout"].default == 60
    assert serve["ping_interval"].default == 20 and serve["ping_timeout"].default == 20
    assert (syncws_http.MAX_LINE, syncws_http.MAX_HEADERS) == (8192, 128)
    assert inspect.signature(syncws.connect).parameters["max_redirects"].default == 10
    fanout = inspect.signature(Fanout).parameters
    assert (fanout["max_pending"].default, fanout["max_pending_bytes"].default) == (1024, 4 * 2**20)
    text = PAGE.read_text()
    for stated in ("1 MiB per message", "32 messages", "128 handshakes", "5 s of silence", "10 s for TLS",
                   "60 s for a send", "20 s / 20 s", "8 KiB per line, 128 headers", "1024 messages, 4 MiB"):
        assert stated in text, stated
