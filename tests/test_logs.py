"""Log lines (syncws.logs): INFO for a server's and a connection's life,
DEBUG for handshake heads, nothing at INFO per message. Captured with caplog."""

from __future__ import annotations

import logging
import re
import socket
import uuid
from types import SimpleNamespace
from typing import Any, List

import pytest
import websockets.sync.client

import syncws
from syncws.logs import closed_line, format_address, format_head, format_status, side_logger

pytestmark = pytest.mark.timeout(20)


def echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


def messages(caplog: pytest.LogCaptureFixture, level: int, logger: str) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == logger]


def test_server_and_connection_life_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="syncws")
    with syncws.serve(echo, "127.0.0.1", 0, subprotocols=["chat"]) as server:
        with syncws.connect(f"ws://127.0.0.1:{server.port}/room?x=1&flag", subprotocols=["chat"]) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"
            client_id = ws.id.hex[:8]
            client_port = ws.local_address[1]
    server_lines = messages(caplog, logging.INFO, "syncws.server")
    assert f"server listening on 127.0.0.1:{server.port}" in server_lines
    opened = [line for line in server_lines if " opened: " in line]
    assert len(opened) == 1
    assert re.fullmatch(
        rf"connection [0-9a-f]{{8}} opened: peer 127\.0\.0\.1:{client_port}, path /room\?x=\[redacted\]&\[redacted\], "
        r"subprotocol chat, permessage-deflate",
        opened[0],
    ), opened[0]
    client_lines = messages(caplog, logging.INFO, "syncws.client")
    assert (
        f"connection {client_id} opened: peer 127.0.0.1:{server.port}, path /room?x=[redacted]&[redacted], "
        "subprotocol chat, permessage-deflate"
    ) in client_lines


def test_refused_handshake_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="syncws")
    with syncws.serve(echo, "127.0.0.1", 0, origins=["https://good.example"]) as server:
        with pytest.raises(syncws.InvalidStatusCode):
            syncws.connect(f"ws://127.0.0.1:{server.port}/secret?token=abc", origin="https://evil.example")
    refused = [line for line in messages(caplog, logging.INFO, "syncws.server") if " refused with " in line]
    assert len(refused) == 1
    assert re.match(
        r"connection [0-9a-f]{8} refused with 403 \(Forbidden\): peer 127\.0\.0\.1:\d+, path /secret\?token=\[redacted\]: ",
        refused[0],
    ), refused[0]
    assert "evil.example" in refused[0]


def test_handshake_heads_at_debug_with_credentials_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="syncws")
    with syncws.serve(echo, "127.0.0.1", 0) as server:
        with syncws.connect(
            f"ws://alice:secret@127.0.0.1:{server.port}/x?access_token=tok123",
            additional_headers={"Cookie": "sid=42", "X-Api-Key": "key456", "X-Auth-Token": "tok789"},
        ):
            pass
    debug = messages(caplog, logging.DEBUG, "syncws.server") + messages(caplog, logging.DEBUG, "syncws.client")
    request = [line for line in debug if " request: GET /x?access_token=[redacted]" in line]
    response = [line for line in debug if " response: 101 (Switching Protocols)" in line]
    assert len(request) == 2 and len(response) == 2  # each side logs both heads
    for line in request:
        assert "\n  Upgrade: websocket" in line
        assert "\n  Authorization: Basic [redacted]" in line and "\n  Cookie: [redacted]" in line
        assert "\n  X-Api-Key: [redacted]" in line and "\n  X-Auth-Token: [redacted]" in line
        assert "\n  Sec-WebSocket-Key: " in line and "Sec-WebSocket-Key: [redacted]" not in line
    for secret in ("secret", "sid=42", "tok123", "key456", "tok789"):
        assert secret not in caplog.text
    assert all("Sec-WebSocket-Accept: " in line for line in response)


def test_a_bare_token_in_authorization_is_redacted_whole(caplog: pytest.LogCaptureFixture) -> None:
    # Many APIs send a token with no scheme before it: the part before a
    # space is a scheme only when credentials follow it.
    caplog.set_level(logging.DEBUG, logger="syncws")
    with syncws.serve(echo, "127.0.0.1", 0) as server:
        with syncws.connect(
            f"ws://127.0.0.1:{server.port}/",
            additional_headers={"Authorization": "sk_live_tok123", "Proxy-Authorization": "tok456"},
        ):
            pass
    request = [line for line in messages(caplog, logging.DEBUG, "syncws.server") if " request: GET /" in line]
    assert len(request) == 1
    assert "\n  Authorization: [redacted]" in request[0] and "\n  Proxy-Authorization: [redacted]" in request[0]
    assert "tok123" not in caplog.text and "tok456" not in caplog.text
    assert format_head("GET /", [("Authorization", "Bearer ")]) == "GET /\n  Authorization: [redacted]"


def test_each_received_message_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    # Whole messages reach the queue without the reader looking at each,
    # except at DEBUG, where each is logged.
    caplog.set_level(logging.DEBUG, logger="syncws")
    with syncws.serve(echo, "127.0.0.1", 0, compression=None) as server:
        with syncws.connect(f"ws://127.0.0.1:{server.port}/", compression=None) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00\x01")
            assert ws.recv(timeout=5) == b"\x00\x01"
    for logger in ("syncws.server", "syncws.client"):
        lines = messages(caplog, logging.DEBUG, logger)
        assert any(line.endswith(" < TEXT 'hello' [5]") for line in lines), lines
        assert any(line.endswith(" < BINARY b'\\x00\\x01' [2]") for line in lines), lines


def test_nothing_at_info_per_message(caplog: pytest.LogCaptureFixture) -> None:
    with syncws.serve(echo, "127.0.0.1", 0) as server:
        with syncws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            caplog.set_level(logging.INFO, logger="syncws")
            # The server logs "opened" after the 101 went out, maybe after
            # connect() returned: an echo proves its handler (and so that
            # line) came first.
            ws.send("first")
            assert ws.recv(timeout=5) == "first"
            caplog.clear()
            for i in range(50):
                ws.send(f"message {i}")
                assert ws.recv(timeout=5) == f"message {i}"
            ws.ping().wait(5)
            assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_websockets_client_opened_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="syncws.server")
    with syncws.serve(echo, "127.0.0.1", 0) as server:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{server.port}/ws", compression=None, open_timeout=5):
            pass
    assert any(
        re.fullmatch(r"connection [0-9a-f]{8} opened: peer 127\.0\.0\.1:\d+, path /ws, no subprotocol", line)
        for line in messages(caplog, logging.INFO, "syncws.server")
    )


def test_formats() -> None:
    assert format_address(("127.0.0.1", 80)) == "127.0.0.1:80"
    assert format_address(("::1", 80, 0, 0)) == "[::1]:80"
    assert format_address("/tmp/s.sock") == "/tmp/s.sock"
    assert format_address("") == "unix" and format_address(None) == "?"
    assert format_status(403) == "403 (Forbidden)" and format_status(599) == "599"
    assert format_head("GET /", [("Proxy-Authorization", "Basic abc")]) == "GET /\n  Proxy-Authorization: Basic [redacted]"
    connection = SimpleNamespace(id=uuid.UUID("1a2b3c4d" + "0" * 24))
    assert closed_line(connection, 1000, "bye", 12.345) == "connection 1a2b3c4d closed: 1000 (OK) bye, after 12.35 s"
    assert closed_line(connection, 1006, "", 0.5) == "connection 1a2b3c4d closed: 1006 (abnormal closure), after 0.50 s"


def test_a_close_reason_cannot_forge_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    # A peer's close reason is its own text: a line feed in it would start
    # a log line of its choosing, an escape sequence would drive the
    # terminal of whoever reads the log.
    forged = "bye\nINFO syncws.server: connection 00000000 opened: admin\x1b]0;pwned\x07"

    def close_with_forged_reason(ws: Any) -> None:
        ws.close(4000, forged)

    caplog.set_level(logging.DEBUG, logger="syncws")
    with syncws.serve(close_with_forged_reason, "127.0.0.1", 0) as server:
        with syncws.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            with pytest.raises(syncws.ConnectionClosed) as excinfo:
                ws.recv(timeout=5)
        assert ws.close_reason == forged  # the attribute keeps the text as sent
    text = str(excinfo.value)
    assert "\n" not in text and "\x1b" not in text
    assert text.endswith("bye\\x0aINFO syncws.server: connection 00000000 opened: admin\\x1b]0;pwned\\x07")
    lines = [r.getMessage() for r in caplog.records]
    closed = [line for line in lines if " closed: 4000 " in line]
    assert len(closed) == 2, lines  # one per side
    for line in lines:
        assert "\n" not in line or " request: " in line or " response: " in line, line  # heads are multi-line
        assert "\x1b" not in line, line


def test_peer_header_values_are_escaped_at_debug(raw_serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    # A header value may hold bytes 0x80-0xFF (obs-text), C1 controls among
    # them: U+009B is CSI to some terminals.
    def answer_with_a_c1_control(conn: Any) -> None:
        conn.handshake(extra="X-Evil: a\x9b2Jb\r\n")
        conn.read_close()

    caplog.set_level(logging.DEBUG, logger="syncws.client")
    uri = raw_serve(answer_with_a_c1_control, handshake=False)
    with syncws.connect(uri, compression=None):
        pass
    response = [line for line in messages(caplog, logging.DEBUG, "syncws.client") if " response: 101 " in line]
    assert len(response) == 1
    assert "\n  X-Evil: a\u00c2\\x9b2Jb" in response[0], response[0]
    assert "\x9b" not in caplog.text


def test_a_malformed_requests_token_stays_out_of_the_refused_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="syncws.server")
    with syncws.serve(echo, "127.0.0.1", 0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /feed?access_token=tok123 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer tok456\n\r\n")
            answer = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    refused = [line for line in messages(caplog, logging.INFO, "syncws.server") if " refused with " in line]
    assert len(refused) == 1
    assert "Authorization: [redacted]" in refused[0], refused[0]
    assert "tok123" not in caplog.text and "tok456" not in caplog.text


def test_side_logger_defaults_to_the_side_and_takes_a_name_or_a_logger() -> None:
    assert side_logger(None, "client") is logging.getLogger("syncws.client")
    assert side_logger(None, "server") is logging.getLogger("syncws.server")
    assert side_logger(None, "relay") is logging.getLogger("syncws.relay")
    assert side_logger("app.ws", "server") is logging.getLogger("app.ws")
    mine = logging.getLogger("mine")
    assert side_logger(mine, "client") is mine
