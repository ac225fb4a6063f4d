"""Tests for syncws.server: serve(), unix_serve(), WebSocketServer and
WebSocketServerProtocol, driven over real sockets on 127.0.0.1 by syncws's
own client, by independent clients (websockets sync and asyncio,
websocket-client) and by raw sockets for HTTP-level checks.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import functools
import http
import logging
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from typing import Any, Optional

import pytest
import websocket as websocket_client  # websocket-client
import websockets.asyncio.client
import websockets.sync.client

import syncws
from services import find_program
from syncws.server import SERVER_HEADER

HOST = "127.0.0.1"
KEY = base64.b64encode(b"0123456789abcdef").decode()


# -- helpers -------------------------------------------------------------------


def echo(ws):
    for message in ws:
        ws.send(message)


@pytest.fixture
def make_server():
    """serve() with teardown: every server made is closed and waited for."""
    servers = []

    def make(handler=echo, host=HOST, port=0, **kwargs):
        server = syncws.serve(handler, host, port, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
    for server in servers:
        server.wait_closed(timeout=10)


def url(server, path="/"):
    return f"ws://{HOST}:{server.port}{path}"


def upgrade_request(path="/", *, method="GET", headers=None, omit=()):
    base = {
        "Host": f"{HOST}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in base.items() if name not in omit]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawResponse:
    def __init__(self, data: bytes):
        head, sep, self.body = data.partition(b"\r\n\r\n")
        assert sep, f"no complete HTTP head in {data[:200]!r}"
        lines = head.decode("iso-8859-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        self.status = int(status)
        self.headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]

    def header_tokens(self, name):
        """A list-valued header's tokens, lower case, over every line of it."""
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return [t.strip().lower() for v in values for t in v.split(",")]

    def header(self, name):
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, values
        return values[0] if values else None


def raw_exchange(port, request: bytes, *, until_head=False, timeout=5.0, family=socket.AF_INET, host=HOST):
    """Send ``request`` on a new TCP connection; read to EOF (or the head)."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.sendall(request)
        data = b""
        while True:
            if until_head and b"\r\n\r\n" in data:
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return RawResponse(data)


def server_thread_names():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("syncws-server"))


def wait_until(predicate, timeout=5.0, interval=0.01):
    """Bounded poll loop: True as soon as predicate() is, False at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


# -- echo with every client ------------------------------------------------------


@pytest.mark.timeout(10)
def test_echo_syncws_client(make_server):
    server = make_server()
    with syncws.connect(url(server)) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\xffbin")
        assert ws.recv(timeout=5) == b"\x00\xffbin"
        ws.send(["frag", "ment", "ed"])
        assert ws.recv(timeout=5) == "fragmented"
        ws.send([b"a", b"b"])
        assert ws.recv(timeout=5) == b"ab"


@pytest.mark.timeout(10)
def test_the_server_builds_its_handshake_policy_once(make_server, monkeypatch):
    policies = []
    negotiate = syncws.opening.accept

    def spy(request, policy, hooks, **kwargs):
        policies.append(policy)
        return negotiate(request, policy, hooks, **kwargs)

    monkeypatch.setattr(syncws.opening, "accept", spy)
    server = make_server(subprotocols=["chat"])
    for _ in range(2):
        with syncws.connect(url(server), subprotocols=["chat"]) as ws:
            assert ws.subprotocol == "chat"
            ws.send("policy")
            assert ws.recv(timeout=5) == "policy"
    first, second = policies
    assert first is second


@pytest.mark.timeout(20)
def test_a_connection_thread_is_reused_from_the_pool(make_server, monkeypatch):
    """A new connection's handshake and handler run on a thread that an
    ended connection left idle (syncws.threadpool), not a new one."""
    monkeypatch.setattr(syncws.threadpool, "LINGER", 30.0)  # no idle thread ends meanwhile
    handler_threads = []

    def handler(ws):
        handler_threads.append(threading.current_thread())
        echo(ws)

    server = make_server(handler)
    with syncws.connect(url(server)) as ws:
        ws.send("first")
        assert ws.recv(timeout=5) == "first"
    first = handler_threads[0]
    assert wait_until(lambda: first.name == "syncws-idle", timeout=10)
    idle = {t for t in threading.enumerate() if t.name == "syncws-idle"}
    with syncws.connect(url(server)) as ws:
        ws.send("second")
        assert ws.recv(timeout=5) == "second"
    assert handler_threads[1] in idle


@pytest.mark.timeout(10)
def test_connection_threads_are_named_after_the_peer(make_server):
    """The handler's thread and the reader thread carry the peer's address
    as log lines write it (host:port)."""
    names = {}

    def handler(ws):
        names["handler"] = threading.current_thread().name
        ws.send("named")
        ws.recv()

    server = make_server(handler)
    with syncws.connect(url(server)) as ws:
        assert ws.recv(timeout=5) == "named"
        host, port = ws.local_address[:2]
        assert names["handler"] == f"syncws-server-{host}:{port}"
        # A reused reader thread takes its name with its task, a moment
        # after the handler may start.
        assert wait_until(lambda: f"syncws-reader-{host}:{port}" in {t.name for t in threading.enumerate()})


@pytest.mark.timeout(10)
def test_echo_websockets_sync_client(make_server):
    server = make_server()
    with websockets.sync.client.connect(url(server), open_timeout=5) as ws:
        ws.send("text ✓")
        assert ws.recv(timeout=5) == "text ✓"
        ws.send(b"\x01\x02binary")
        assert ws.recv(timeout=5) == b"\x01\x02binary"
        ws.send(["one ", "two ", "three"])
        assert ws.recv(timeout=5) == "one two three"
        ws.send([b"\x00" * 100, b"\x01" * 100000])
        assert ws.recv(timeout=5) == b"\x00" * 100 + b"\x01" * 100000


@pytest.mark.timeout(10)
def test_echo_websockets_asyncio_client(make_server):
    server = make_server()

    async def main():
        async with websockets.asyncio.client.connect(url(server), open_timeout=5) as ws:
            results = []
            await ws.send("async text")
            results.append(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(b"async bytes")
            results.append(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(["frag", "mented"])
            results.append(await asyncio.wait_for(ws.recv(), 5))
            return results

    assert asyncio.run(main()) == ["async text", b"async bytes", "fragmented"]


@pytest.mark.timeout(10)
def test_echo_websocket_client(make_server):
    server = make_server()
    ws = websocket_client.create_connection(url(server), timeout=5)
    try:
        ws.send("plain text")
        assert ws.recv() == "plain text"
        ws.send_binary(b"\x00\x01\x02")
        assert ws.recv() == b"\x00\x01\x02"
    finally:
        ws.close()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("compression", ["deflate", None])
def test_multidimensional_memoryview_is_sent_as_its_bytes(make_server, compression):
    # A server's large payload is written apart from its header: its length
    # must be its bytes, not its rows (was: len(), 70000 rows of 2 bytes, a
    # corrupt frame). Small ones, fragments and the client's frames alike.
    data = bytes(range(256)) * 546 + bytes(224)  # 140 000 bytes
    rows = memoryview(data).cast("B", (70000, 2))
    small = memoryview(data[:6]).cast("B", (2, 3))

    def handler(ws):
        for message in ws:
            ws.send(rows)
            ws.send(small)
            ws.send([rows, small])
            ws.send(message)

    server = make_server(handler, compression=compression)
    with syncws.connect(url(server), compression=compression) as ws:
        ws.send(rows)
        assert ws.recv(timeout=5) == data
        assert ws.recv(timeout=5) == data[:6]
        assert ws.recv(timeout=5) == data + data[:6]
        assert ws.recv(timeout=5) == data


def test_one_argument_handler_sees_path_and_headers(make_server):
    seen = {}

    def handler(ws):
        seen["path"] = ws.path
        seen["host"] = ws.request_headers["Host"]
        seen["custom"] = ws.request_headers["X-Custom"]
        ws.send("ready")

    server = make_server(handler)
    with syncws.connect(url(server, "/room/1?user=bob&x=%20"), extra_headers={"X-Custom": "yes"}) as ws:
        assert ws.recv(timeout=5) == "ready"
    assert seen == {
        "path": "/room/1?user=bob&x=%20",
        "host": f"{HOST}:{server.port}",
        "custom": "yes",
    }


@pytest.mark.timeout(10)
def test_seed_style_handler_gets_path_with_query(make_server):
    seen = []

    def handler(ws, path):
        seen.append((path, ws.path))
        ws.send(path)

    server = make_server(handler)
    with syncws.connect(url(server, "/chat?room=a&b=1")) as ws:
        assert ws.recv(timeout=5) == "/chat?room=a&b=1"
    assert seen == [("/chat?room=a&b=1", "/chat?room=a&b=1")]


def deny_private(path, request_headers):
    if path.startswith("/private"):
        return syncws.respond(401, "log in first\n")
    return None


@pytest.mark.timeout(10)
def test_process_request_and_handler_see_one_decoded_path(make_server):
    # process_request got the request-target as received: a check on
    # "/private" let "/%70rivate/feed" through to a handler that decodes.
    seen = []

    def handler(ws, path):
        seen.append((path, ws.path, ws.request_target))
        ws.send("ok")

    server = make_server(handler, process_request=deny_private,
                         extra_headers=lambda path, headers: {"X-Hook-Path": urllib.parse.quote(path)})
    for path in ("/private/feed", "/%70rivate/feed", "/priv%61te/feed?room=1"):
        with pytest.raises(syncws.InvalidStatusCode) as info:
            syncws.connect(url(server, path))
        assert info.value.status_code == 401, path
    with syncws.connect(url(server, "/caf%C3%A9/%66eed?room=%70")) as ws:
        assert ws.recv(timeout=5) == "ok"
        assert urllib.parse.unquote(ws.response_headers["X-Hook-Path"]) == "/café/feed?room=%70"
    assert seen == [("/café/feed?room=%70", "/café/feed?room=%70", "/caf%C3%A9/%66eed?room=%70")]


@pytest.mark.timeout(10)
def test_absolute_form_target_gives_its_path(make_server):
    seen = []

    def handler(ws):
        seen.append((ws.path, ws.request_target))

    server = make_server(handler, process_request=deny_private)
    assert raw_exchange(server.port, upgrade_request("http://example.com/%70rivate")).status == 401
    response = raw_exchange(server.port, upgrade_request("http://example.com/chat?x=1"), until_head=True)
    assert response.status == 101
    assert wait_until(lambda: seen == [("/chat?x=1", "http://example.com/chat?x=1")])


@pytest.mark.timeout(10)
@pytest.mark.parametrize("target, why", [
    ("/a%00b", b"control character"),
    ("/a%0Ab", b"control character"),
    ("/%FF", b"UTF-8"),
    ("*", b"isn't a path"),
    ("example.com:80", b"isn't a path"),
])
def test_a_path_that_doesnt_decode_to_text_is_400(make_server, target, why):
    server = make_server()
    response = raw_exchange(server.port, upgrade_request(target))
    assert response.status == 400
    assert why in response.body


# -- HTTP errors -------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_malformed_request_line_is_400_with_explanation(make_server):
    server = make_server()
    response = raw_exchange(server.port, b"GARBAGE\r\n\r\n")
    assert response.status == 400
    assert b"request line" in response.body
    assert response.header("Content-Length") == str(len(response.body))


@pytest.mark.timeout(10)
def test_missing_upgrade_is_426(make_server):
    server = make_server()
    response = raw_exchange(server.port, upgrade_request(omit=("Upgrade",)))
    assert response.status == 426
    assert response.header("Upgrade").lower() == "websocket"
    # The answer closes the connection too: "Upgrade, close" in any layout.
    assert sorted(response.header_tokens("Connection")) == ["close", "upgrade"]
    assert b"Upgrade" in response.body


@pytest.mark.timeout(10)
def test_wrong_version_is_426_naming_version_13(make_server):
    server = make_server()
    response = raw_exchange(server.port, upgrade_request(headers={"Sec-WebSocket-Version": "8"}))
    assert response.status == 426
    assert response.header("Sec-WebSocket-Version") == "13"
    assert b"Sec-WebSocket-Version" in response.body


@pytest.mark.timeout(10)
def test_bad_key_is_400(make_server):
    server = make_server()
    response = raw_exchange(server.port, upgrade_request(headers={"Sec-WebSocket-Key": "not base64!"}))
    assert response.status == 400
    assert b"Sec-WebSocket-Key" in response.body
    short = base64.b64encode(b"short").decode()
    response = raw_exchange(server.port, upgrade_request(headers={"Sec-WebSocket-Key": short}))
    assert response.status == 400


@pytest.mark.timeout(10)
def test_header_line_over_8k_is_431(make_server):
    server = make_server()
    response = raw_exchange(server.port, upgrade_request(headers={"X-Big": "a" * 9000}))
    assert response.status == 431
    assert b"8192" in response.body
    # Just under the limit is fine.
    response = raw_exchange(server.port, upgrade_request(headers={"X-Big": "a" * 8000}), until_head=True)
    assert response.status == 101


@pytest.mark.timeout(10)
def test_too_many_headers_is_431(make_server):
    server = make_server()
    many = {f"X-H{i}": "v" for i in range(130)}
    response = raw_exchange(server.port, upgrade_request(headers=many))
    assert response.status == 431
    assert b"128" in response.body


@pytest.mark.timeout(10)
def test_post_is_405_with_allow_get(make_server):
    server = make_server()
    response = raw_exchange(server.port, upgrade_request(method="POST"))
    assert response.status == 405
    assert response.header("Allow") == "GET"
    assert b"POST" in response.body


@pytest.mark.timeout(10)
def test_server_header_present_on_101_and_errors(make_server):
    server = make_server()
    ok = raw_exchange(server.port, upgrade_request(), until_head=True)
    assert ok.status == 101
    assert ok.header("Server") == SERVER_HEADER
    error = raw_exchange(server.port, b"GARBAGE\r\n\r\n")
    assert error.header("Server") == SERVER_HEADER


@pytest.mark.timeout(10)
def test_custom_server_header(make_server):
    server = make_server(server_header="MyServer/1.0")
    assert raw_exchange(server.port, upgrade_request(), until_head=True).header("Server") == "MyServer/1.0"


@pytest.mark.timeout(10)
def test_server_header_none_omits_it(make_server):
    server = make_server(server_header=None)
    ok = raw_exchange(server.port, upgrade_request(), until_head=True)
    assert ok.status == 101
    assert ok.header("Server") is None
    error = raw_exchange(server.port, b"GARBAGE\r\n\r\n")
    assert error.status == 400
    assert error.header("Server") is None


@pytest.mark.timeout(10)
def test_connection_and_upgrade_are_case_insensitive_token_lists(make_server):
    server = make_server()
    request = upgrade_request(headers={"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"})
    response = raw_exchange(server.port, request, until_head=True)
    assert response.status == 101
    assert response.header("Sec-WebSocket-Accept") == base64.b64encode(
        __import__("hashlib").sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode()


@pytest.mark.timeout(10)
def test_repeated_key_and_http_1_0_are_400(make_server):
    server = make_server()
    request = upgrade_request().replace(b"\r\n\r\n", f"\r\nSec-WebSocket-Key: {KEY}\r\n\r\n".encode())
    response = raw_exchange(server.port, request)
    assert response.status == 400
    assert b"Sec-WebSocket-Key" in response.body
    response = raw_exchange(server.port, upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert response.status == 400
    assert b"HTTP/1.1" in response.body


# -- a strict opening handshake: each refusal is a 400 that closes -------------------


def masked_text_frame(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def refused_without_running(make_server, request: bytes, **kwargs: Any) -> RawResponse:
    """Send ``request`` to an echo server; return its answer, read to the end of the stream.

    Checks what every refusal must do: a text/plain answer whose body is
    exactly its Content-Length (nothing follows it: the server closed), and
    no handler run.
    """
    handled = threading.Event()

    def handler(ws):
        handled.set()
        echo(ws)

    server = make_server(handler, compression=None, **kwargs)
    response = raw_exchange(server.port, request)
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert len(response.body) == int(response.header("Content-Length")), response.body
    assert "close" in response.header_tokens("Connection")
    assert not handled.is_set()
    return response


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "name, framing",
    [
        ("Content-Length", lambda frame: (f"Content-Length: {len(frame)}\r\n\r\n".encode(), frame)),
        (
            "Transfer-Encoding",
            lambda frame: (b"Transfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(frame), frame)),
        ),
    ],
)
def test_a_body_on_the_upgrade_is_400_and_never_read_as_frames(make_server, name, framing):
    # The body is a valid masked text frame: read as frames, it would be
    # echoed after the 101.
    headers, body = framing(masked_text_frame(b"smuggled"))
    request = upgrade_request()[:-2] + headers + body
    response = refused_without_running(make_server, request)
    assert response.status == 400
    assert name.encode() in response.body and b"body" in response.body
    assert b"smuggled" not in response.body


@pytest.mark.timeout(10)
def test_content_length_0_on_the_upgrade_is_accepted(make_server):
    # Some clients send it on every request; it announces no body.
    server = make_server(compression=None)
    response = raw_exchange(server.port, upgrade_request(headers={"Content-Length": "0"}), until_head=True)
    assert response.status == 101


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "host_lines, fragment",
    [
        ([], b"missing Host header"),
        ([f"Host: {HOST}", "Host: evil.example"], b"more than one Host header"),
        (["Host: a b"], b"expected host or host:port"),
        (["Host: example.com/path"], b"expected host or host:port"),
        (["Host: user@example.com"], b"expected host or host:port"),
    ],
)
def test_missing_repeated_or_invalid_host_is_400(make_server, host_lines, fragment):
    # RFC 9112 section 3.2: a server answers 400 to each.
    request = upgrade_request(omit=("Host",))[:-2] + "".join(f"{line}\r\n" for line in host_lines).encode() + b"\r\n"
    response = refused_without_running(make_server, request)
    assert response.status == 400
    assert fragment in response.body


@pytest.mark.timeout(10)
@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]:8765", "[::1]", "xn--bcher-kva.example"])
def test_hosts_with_and_without_port_are_accepted(make_server, host):
    server = make_server()
    response = raw_exchange(server.port, upgrade_request(headers={"Host": host}), until_head=True)
    assert response.status == 101


@pytest.mark.timeout(10)
@pytest.mark.parametrize("origins", [None, [re.compile(r"https://.*\.example\.com")]])
def test_two_origins_are_400_and_never_matched_as_one(make_server, origins):
    # Joined, the two values fullmatch the pattern: they must not be tried.
    request = upgrade_request()[:-2] + b"Origin: https://evil.test\r\nOrigin: https://app.example.com\r\n\r\n"
    response = refused_without_running(make_server, request, origins=origins)
    assert response.status == 400
    assert b"more than one origin" in response.body


@pytest.mark.timeout(10)
def test_an_origin_list_in_one_header_is_400(make_server):
    # RFC 6454 section 7.1's space-separated list: a browser sends one origin.
    request = upgrade_request(headers={"Origin": "https://evil.test https://app.example.com"})
    response = refused_without_running(make_server, request, origins=[re.compile(r"https://.*\.example\.com")])
    assert response.status == 400
    assert b"more than one origin" in response.body


@pytest.mark.timeout(10)
def test_one_origin_is_still_matched_against_the_allow_list(make_server):
    server = make_server(origins=[re.compile(r"https://[a-z]+\.example\.com")])
    ok = raw_exchange(server.port, upgrade_request(headers={"Origin": "https://app.example.com"}), until_head=True)
    assert ok.status == 101
    assert raw_exchange(server.port, upgrade_request(headers={"Origin": "https://evil.test"})).status == 403


@pytest.mark.timeout(10)
def test_repeated_version_is_400_not_426(make_server):
    # RFC 6455 section 11.3.5: it appears once in a request. 426 would tell
    # the client to speak version 13, which it did.
    request = upgrade_request()[:-2] + b"Sec-WebSocket-Version: 13\r\n\r\n"
    response = refused_without_running(make_server, request)
    assert response.status == 400
    assert b"more than one Sec-WebSocket-Version header" in response.body
    assert response.header("Sec-WebSocket-Version") is None


@pytest.mark.timeout(10)
def test_refusals_escape_what_the_peer_sent(make_server):
    # Bytes 0x80-0xFF are legal in header values (obs-text); the body shows
    # them as escapes, ASCII only.
    request = upgrade_request()[:-2] + b"Origin: https://\xe9vil.test\x9b2J\r\nOrigin: https://a.test\r\n\r\n"
    response = refused_without_running(make_server, request)
    assert response.status == 400
    assert response.body.isascii(), response.body
    assert b"\\xe9vil.test\\x9b2J" in response.body


@pytest.mark.timeout(10)
def test_frame_pipelined_with_the_request_is_not_lost(make_server):
    server = make_server(compression=None)
    mask = b"\x01\x02\x03\x04"
    payload = b"pipelined"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(upgrade_request() + frame)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 2 + len(payload):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert rest[: 2 + len(payload)] == bytes([0x81, len(payload)]) + payload


@pytest.mark.timeout(10)
def test_extra_headers_can_replace_server_header(make_server):
    server = make_server(extra_headers={"Server": "Custom/2"})
    response = raw_exchange(server.port, upgrade_request(), until_head=True)
    assert response.status == 101
    assert response.header("Server") == "Custom/2"


@pytest.mark.timeout(10)
def test_process_request_that_raises_answers_500_and_server_goes_on(make_server, caplog):
    def process_request(path, request_headers):
        if path == "/broken":
            raise RuntimeError("process_request exploded")
        return None

    server = make_server(process_request=process_request)
    with caplog.at_level(logging.ERROR, logger="syncws.server"):
        response = raw_exchange(server.port, upgrade_request("/broken"))
    assert response.status == 500
    assert "process_request exploded" in caplog.text
    with syncws.connect(url(server)) as ws:
        ws.send("fine")
        assert ws.recv(timeout=5) == "fine"


@pytest.mark.timeout(10)
def test_get_response_status_that_raises_answers_500(make_server):
    class Broken(syncws.WebSocketServerProtocol):
        def get_response_status(self, set_header):
            raise RuntimeError("get_response_status exploded")

    server = make_server(create_protocol=Broken)
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(url(server), open_timeout=5)
    assert excinfo.value.status_code == 500


# -- origins -------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_allowed_origin_passes_other_gets_403(make_server):
    server = make_server(origins=["https://good.example"])
    with syncws.connect(url(server), origin="https://good.example") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(url(server), origin="https://evil.example")
    assert excinfo.value.status_code == 403
    # No Origin at all isn't admitted unless None is listed.
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(url(server))
    assert excinfo.value.status_code == 403
    response = raw_exchange(server.port, upgrade_request(headers={"Origin": "https://evil.example"}))
    assert response.status == 403
    assert b"evil.example" in response.body


@pytest.mark.timeout(10)
def test_none_in_origins_admits_requests_without_origin(make_server):
    server = make_server(origins=[None, "https://good.example"])
    with syncws.connect(url(server)) as ws:
        ws.send("no origin")
        assert ws.recv(timeout=5) == "no origin"
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(url(server), origin="https://evil.example")
    assert excinfo.value.status_code == 403


# -- subprotocols -----------------------------------------------------------------------


def report_subprotocol(ws):
    ws.send(repr(ws.subprotocol))


@pytest.mark.timeout(10)
def test_subprotocol_server_preference_wins(make_server):
    server = make_server(report_subprotocol, subprotocols=["chat.v2", "chat.v1"])
    with syncws.connect(url(server), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response_headers["Sec-WebSocket-Protocol"] == "chat.v2"
        assert ws.recv(timeout=5) == "'chat.v2'"


@pytest.mark.timeout(10)
def test_subprotocol_none_in_common_sends_no_header(make_server):
    server = make_server(report_subprotocol, subprotocols=["chat.v2"])
    with syncws.connect(url(server), subprotocols=["other"]) as ws:
        assert ws.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in ws.response_headers
        assert ws.recv(timeout=5) == "None"


@pytest.mark.timeout(10)
def test_select_subprotocol_override(make_server):
    class ClientFirst(syncws.WebSocketServerProtocol):
        def select_subprotocol(self, client_protos, server_protos):
            for protocol in client_protos:
                if protocol in server_protos:
                    return protocol
            return None

    server = make_server(report_subprotocol, subprotocols=["chat.v2", "chat.v1"], create_protocol=ClientFirst)
    with syncws.connect(url(server), subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v1"
        assert ws.recv(timeout=5) == "'chat.v1'"


# -- get_response_status / process_request / extra_headers ---------------------------------


class Gatekeeper(syncws.WebSocketServerProtocol):
    def get_response_status(self, set_header):
        if self.path == "/private":
            set_header("WWW-Authenticate", 'Basic realm="test"')
            return http.HTTPStatus.UNAUTHORIZED
        if self.path == "/missing":
            set_header("X-Reason", "no such room")
            return http.HTTPStatus.NOT_FOUND
        if self.request_headers.get("X-Token") != "t0k":
            return http.HTTPStatus.FORBIDDEN
        return http.HTTPStatus.SWITCHING_PROTOCOLS


@pytest.mark.timeout(10)
def test_get_response_status_override(make_server):
    server = make_server(create_protocol=Gatekeeper)
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(url(server, "/private"), extra_headers={"X-Token": "t0k"})
    assert excinfo.value.status_code == 401
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(url(server, "/missing"), extra_headers={"X-Token": "t0k"})
    assert excinfo.value.status_code == 404
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(url(server, "/"))
    assert excinfo.value.status_code == 403
    with syncws.connect(url(server, "/"), extra_headers={"X-Token": "t0k"}) as ws:
        ws.send("in")
        assert ws.recv(timeout=5) == "in"

    response = raw_exchange(server.port, upgrade_request("/private"))
    assert response.status == 401
    assert response.header("WWW-Authenticate") == 'Basic realm="test"'
    response = raw_exchange(server.port, upgrade_request("/missing"))
    assert response.status == 404
    assert response.header("X-Reason") == "no such room"


def health_check(path, request_headers):
    if path == "/health":
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], b"OK\n"
    return None


@pytest.mark.timeout(10)
def test_process_request_health_check(make_server):
    calls = []

    def process_request(path, request_headers):
        calls.append(path)
        return health_check(path, request_headers)

    server = make_server(process_request=process_request)
    response = raw_exchange(server.port, f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    assert response.status == 200
    assert response.header("Content-Type") == "text/plain"
    assert response.header("Content-Length") == "3"
    assert response.body == b"OK\n"
    # Returning None goes on with the handshake.
    with syncws.connect(url(server, "/")) as ws:
        ws.send("still upgrades")
        assert ws.recv(timeout=5) == "still upgrades"
    assert calls == ["/health", "/"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "extra_headers",
    [
        {"X-One": "1", "X-Two": "2"},
        [("X-One", "1"), ("X-Two", "2")],
        lambda path, headers: {"X-One": "1", "X-Two": headers["X-Ask"]} if path == "/p?q" else {},
        lambda path, headers: [("X-One", "1"), ("X-Two", headers["X-Ask"])],
    ],
    ids=["mapping", "pairs", "callable-mapping", "callable-pairs"],
)
def test_extra_headers(make_server, extra_headers):
    server = make_server(extra_headers=extra_headers)
    with syncws.connect(url(server, "/p?q"), extra_headers={"X-Ask": "2"}) as ws:
        assert ws.response_headers["X-One"] == "1"
        assert ws.response_headers["X-Two"] == "2"
        ws.send("x")
        assert ws.recv(timeout=5) == "x"


# -- handler lifecycle ----------------------------------------------------------------


@pytest.mark.timeout(10)
def test_handler_exception_closes_1011_logs_and_server_goes_on(make_server, caplog):
    def handler(ws):
        message = ws.recv()
        if message == "boom":
            raise RuntimeError("handler exploded")
        ws.send(message)

    server = make_server(handler)
    with caplog.at_level(logging.ERROR, logger="syncws.server"):
        with syncws.connect(url(server)) as ws:
            ws.send("boom")
            with pytest.raises(syncws.ConnectionClosedError) as excinfo:
                ws.recv(timeout=5)
            assert excinfo.value.code == 1011
        assert ws.close_code == 1011
        assert wait_until(lambda: any(r.exc_info for r in caplog.records))
    records = [r for r in caplog.records if r.name == "syncws.server" and r.exc_info]
    assert records, caplog.records
    assert records[0].exc_info[0] is RuntimeError
    assert "handler exploded" in caplog.text
    assert "Traceback" in caplog.text

    with syncws.connect(url(server)) as ws:
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"


@pytest.mark.parametrize("error", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_handler_dying_of_a_base_exception_closes_1011(make_server, caplog, error):
    # SystemExit (sys.exit() in a handler), KeyboardInterrupt and
    # GeneratorExit aren't Exceptions: the connection used to stay open,
    # with no close frame, until the client gave up.
    def handler(ws):
        ws.recv()
        raise error()

    server = make_server(handler)
    with caplog.at_level(logging.ERROR, logger="syncws.server"):
        with syncws.connect(url(server)) as ws:
            ws.send("go")
            ws.wait_closed(10)
        assert ws.close_code == 1011
        assert wait_until(lambda: error.__name__ in caplog.text)
    with syncws.connect(url(server)) as ws:
        ws.send("still here")
        ws.wait_closed(10)
    assert ws.close_code == 1011


@pytest.mark.timeout(10)
def test_handler_return_closes_1000(make_server):
    def handler(ws):
        ws.send("bye")

    server = make_server(handler)
    with syncws.connect(url(server)) as ws:
        assert ws.recv(timeout=5) == "bye"
        with pytest.raises(syncws.ConnectionClosedOK) as excinfo:
            ws.recv(timeout=5)
        assert excinfo.value.code == 1000
        assert ws.close_code == 1000


@pytest.mark.timeout(15)
def test_close_wakes_handlers_blocked_in_recv(make_server):
    entered = threading.Semaphore(0)
    outcomes = []
    lock = threading.Lock()

    def handler(ws):
        entered.release()
        try:
            ws.recv()
        except syncws.ConnectionClosed as exc:
            with lock:
                outcomes.append(exc)
            raise

    server = make_server(handler)
    clients = [syncws.connect(url(server)) for _ in range(3)]
    for _ in clients:
        assert entered.acquire(timeout=5)
    assert len(server.connections) == 3

    server.close()
    server.close()  # idempotent
    server.wait_closed(timeout=5)

    assert len(outcomes) == 3
    for exc in outcomes:
        assert isinstance(exc, syncws.ConnectionClosedOK)
        assert exc.code == 1001
    for ws in clients:
        with pytest.raises(syncws.ConnectionClosedOK) as excinfo:
            ws.recv(timeout=5)
        assert excinfo.value.code == 1001
        assert ws.close_code == 1001
        ws.close()
    # Done with their connections, the threads wait idle, renamed a moment later.
    assert wait_until(lambda: server_thread_names() == [])
    assert server.connections == set()
    with pytest.raises(OSError):
        syncws.connect(url(server), open_timeout=2)


@pytest.mark.timeout(15)
def test_close_from_inside_a_handler(make_server):
    holder = {}
    others_entered = threading.Semaphore(0)

    def handler(ws):
        if ws.path == "/shutdown":
            holder["server"].close()
            holder["server"].close()
            ws.send("closing")  # the own connection is closing: this must not hang
            return
        others_entered.release()
        for message in ws:
            ws.send(message)

    server = make_server(handler)
    holder["server"] = server
    other = syncws.connect(url(server))
    assert others_entered.acquire(timeout=5)
    trigger = syncws.connect(url(server, "/shutdown"))
    server.wait_closed(timeout=5)
    with pytest.raises(syncws.ConnectionClosed) as excinfo:
        other.recv(timeout=5)
    assert excinfo.value.code == 1001
    other.close()
    trigger.close()
    assert trigger.close_code == 1001


@pytest.mark.timeout(10)
def test_serve_forever_returns_when_closed_from_another_thread(make_server):
    server = make_server()
    returned = threading.Event()

    def run():
        server.serve_forever()
        returned.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    with syncws.connect(url(server)) as ws:
        ws.send("during serve_forever")
        assert ws.recv(timeout=5) == "during serve_forever"
    assert not returned.is_set()
    server.close()
    assert returned.wait(5)
    thread.join(5)
    assert not thread.is_alive()


@pytest.mark.timeout(10)
def test_sockets_port_connections(make_server):
    entered = threading.Semaphore(0)

    def handler(ws):
        entered.release()
        echo(ws)

    server = make_server(handler)
    assert server.port != 0
    assert len(server.sockets) == 1
    assert server.sockets[0].getsockname() == (HOST, server.port)
    assert server.connections == set()
    a = syncws.connect(url(server))
    b = syncws.connect(url(server))
    assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
    connections = server.connections
    assert len(connections) == 2
    assert all(isinstance(c, syncws.WebSocketServerProtocol) and c.open for c in connections)
    assert {c.remote_address for c in connections} == {a.local_address, b.local_address}
    a.close()
    assert wait_until(lambda: len(server.connections) == 1)
    assert {c.remote_address for c in server.connections} == {b.local_address}
    b.close()
    assert wait_until(lambda: server.connections == set())


@pytest.mark.timeout(10)
def test_context_manager_closes_and_waits():
    entered = threading.Event()

    def handler(ws):
        entered.set()
        echo(ws)

    with syncws.serve(handler, HOST, 0) as server:
        ws = syncws.connect(url(server))
        assert entered.wait(5)
        assert server_thread_names() != []
    # __exit__ closed the server and waited for every connection to be served.
    assert wait_until(lambda: server_thread_names() == [])
    with pytest.raises(syncws.ConnectionClosedOK) as excinfo:
        ws.recv(timeout=5)
    assert excinfo.value.code == 1001
    ws.close()


@pytest.mark.timeout(10)
def test_close_with_custom_code_and_reason(make_server):
    entered = threading.Event()

    def handler(ws):
        entered.set()
        echo(ws)

    server = make_server(handler)
    ws = syncws.connect(url(server))
    assert entered.wait(5)
    server.close(code=1012, reason="service restart")
    with pytest.raises(syncws.ConnectionClosedError) as excinfo:
        ws.recv(timeout=5)
    assert (excinfo.value.code, excinfo.value.reason) == (1012, "service restart")
    server.wait_closed(timeout=5)
    ws.close()


@pytest.mark.timeout(10)
def test_close_with_invalid_code_raises_before_any_effect(make_server):
    entered = threading.Event()

    def handler(ws):
        entered.set()
        echo(ws)

    server = make_server(handler)
    ws = syncws.connect(url(server))
    assert entered.wait(5)
    with pytest.raises(ValueError):
        server.close(code=999)
    # Nothing happened: the server still serves, and a valid close works.
    ws.send("still open")
    assert ws.recv(timeout=2) == "still open"
    with syncws.connect(url(server)) as other:
        other.send("new client")
        assert other.recv(timeout=5) == "new client"
    server.close()
    with pytest.raises(syncws.ConnectionClosedOK) as excinfo:
        ws.recv(timeout=5)
    assert excinfo.value.code == 1001
    server.wait_closed(timeout=5)
    ws.close()


@pytest.mark.timeout(10)
def test_close_ends_pending_handshakes_promptly(make_server):
    server = make_server()  # the default open_timeout of 10 s
    before = len(server_thread_names())
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert wait_until(lambda: len(server_thread_names()) == before + 1)
        start = time.monotonic()
        server.close()
        # The half-open handshake must not hold wait_closed() for open_timeout.
        server.wait_closed(timeout=2)
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass  # dropped with its request head unread: the kernel resets it
        assert time.monotonic() - start < 2.5
    # Either dropped (FIN or reset) or told 503, as websockets' server does.
    assert data == b"" or data.startswith(b"HTTP/1.1 503 ")


@pytest.mark.timeout(10)
def test_wait_closed_timeout_raises_while_a_handler_is_stuck(make_server):
    release = threading.Event()
    entered = threading.Event()

    def handler(ws):
        entered.set()
        release.wait(10)

    server = make_server(handler)
    ws = syncws.connect(url(server))
    assert entered.wait(5)
    server.close()
    with pytest.raises(TimeoutError):
        server.wait_closed(timeout=0.2)
    release.set()
    server.wait_closed(timeout=5)
    ws.close()


@pytest.mark.timeout(10)
def test_logger_argument(make_server, caplog):
    def handler(ws):
        raise ValueError("custom logger sees this")

    server = make_server(handler, logger="tests.custom")
    with caplog.at_level(logging.ERROR, logger="tests.custom"):
        with syncws.connect(url(server)) as ws:
            with pytest.raises(syncws.ConnectionClosedError):
                ws.recv(timeout=5)
        assert wait_until(lambda: "custom logger sees this" in caplog.text)
    assert any(r.name == "tests.custom" and r.exc_info for r in caplog.records)


@pytest.mark.timeout(10)
def test_modern_aliases_open_timeout_and_additional_headers(make_server):
    server = make_server(additional_headers={"X-Modern": "yes"}, open_timeout=5, close_timeout=5)
    with syncws.connect(url(server)) as ws:
        assert ws.response_headers["X-Modern"] == "yes"
        ws.send("alias")
        assert ws.recv(timeout=5) == "alias"


@pytest.mark.timeout(10)
def test_seed_timeout_bounds_the_opening_handshake(make_server):
    server = make_server(timeout=0.5)
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(b"GET / HT")
        start = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - start < 2.0


# -- timeouts and limits ------------------------------------------------------------


@pytest.mark.timeout(10)
def test_slowloris_is_dropped_after_open_timeout(make_server):
    before = server_thread_names()
    server = make_server(open_timeout=0.5)
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(b"GET / HT")
        assert wait_until(lambda: len(server_thread_names()) == len(before) + 1)
        start = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - start < 2.0
    assert wait_until(lambda: server_thread_names() == before, timeout=2)
    # The server still serves.
    with syncws.connect(url(server)) as ws:
        ws.send("after slowloris")
        assert ws.recv(timeout=5) == "after slowloris"


@pytest.mark.timeout(15)
def test_max_connections_answers_503_without_thread(make_server):
    started = []
    lock = threading.Lock()
    entered = threading.Semaphore(0)

    def handler(ws):
        with lock:
            started.append(ws.path)
        entered.release()
        echo(ws)

    server = make_server(handler, max_connections=2)
    a = syncws.connect(url(server, "/a"))
    b = syncws.connect(url(server, "/b"))
    assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
    threads_before = server_thread_names()
    assert len(threads_before) == 2

    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(url(server, "/c"))
    assert excinfo.value.status_code == 503
    response = raw_exchange(server.port, upgrade_request("/d"))
    assert response.status == 503
    assert response.header("Retry-After") == "1"
    assert server_thread_names() == threads_before
    assert sorted(started) == ["/a", "/b"]

    a.close()
    # Once a's connection thread has ended, new clients get in again.
    assert wait_until(lambda: len(server_thread_names()) == 1)
    with syncws.connect(url(server, "/e")) as c:
        c.send("back in")
        assert c.recv(timeout=5) == "back in"
    assert sorted(started) == ["/a", "/b", "/e"]
    b.close()


# -- listening options --------------------------------------------------------------


def _ipv6_loopback_error():
    if not socket.has_ipv6:
        return "no ipv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return exc
    return None


@pytest.mark.timeout(10)
def test_ipv6_loopback(make_server):
    problem = _ipv6_loopback_error()
    if problem is None:
        server = make_server(host="::1")
        assert server.sockets[0].family == socket.AF_INET6
        with syncws.connect(f"ws://[::1]:{server.port}/v6") as ws:
            ws.send("over ipv6")
            assert ws.recv(timeout=5) == "over ipv6"
        response = raw_exchange(server.port, upgrade_request(), until_head=True, family=socket.AF_INET6, host="::1")
        assert response.status == 101
    elif problem == "no ipv6":
        with pytest.raises(OSError):
            syncws.serve(echo, "::1", 0)
    else:
        # A machine limitation: serve() must report the very error the
        # system gives for binding ::1.
        with pytest.raises(OSError) as excinfo:
            syncws.serve(echo, "::1", 0)
        assert excinfo.value.errno == problem.errno
        assert excinfo.value.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


@pytest.mark.timeout(10)
def test_prebound_listening_socket(make_server):
    sock = socket.create_server((HOST, 0))
    port = sock.getsockname()[1]
    server = make_server(host=None, port=None, sock=sock)
    assert server.sockets == [sock]
    assert server.port == port
    with syncws.connect(f"ws://{HOST}:{port}/") as ws:
        ws.send("pre-bound")
        assert ws.recv(timeout=5) == "pre-bound"
    server.close()
    server.wait_closed(timeout=5)
    assert sock.fileno() == -1


@pytest.mark.timeout(10)
def test_unix_serve(tmp_path):
    path = str(tmp_path / "ws.sock")
    server = syncws.unix_serve(lambda ws: ws.send(f"path={ws.path}"), path)
    try:
        assert server.port is None
        with syncws.unix_connect(path, "ws://localhost/unix?a=1") as ws:
            assert ws.recv(timeout=5) == "path=/unix?a=1"
        with syncws.unix_connect(path) as ws:
            assert ws.recv(timeout=5) == "path=/"
    finally:
        server.close()
        server.wait_closed(timeout=5)


def stale_socket(path: str) -> None:
    """Leave a socket file at ``path`` with nothing listening, as a killed server does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()


@pytest.mark.timeout(10)
def test_unix_serve_removes_its_socket_when_it_closes(tmp_path):
    # As gunicorn and uvicorn do: no stale file left for the next start.
    path = tmp_path / "ws.sock"
    server = syncws.unix_serve(echo, str(path))
    assert path.is_socket()
    server.close()
    assert not os.path.lexists(path)
    server.wait_closed(timeout=5)
    server.close()  # again: nothing more to remove, no error


@pytest.mark.timeout(10)
def test_unix_serve_leaves_a_newer_servers_socket(tmp_path):
    # The file was removed under the first server and a newer one listens
    # at the path: closing the first must not take the newer one's socket.
    path = str(tmp_path / "ws.sock")
    older = syncws.unix_serve(lambda ws: ws.send("older"), path)
    try:
        os.unlink(path)
        with syncws.unix_serve(lambda ws: ws.send("newer"), path):
            older.close()
            older.wait_closed(timeout=5)
            with syncws.unix_connect(path) as ws:
                assert ws.recv(timeout=5) == "newer"
        assert not os.path.lexists(path)
    finally:
        older.close()


@pytest.mark.timeout(10)
def test_unix_serve_leaves_what_replaced_its_socket(tmp_path):
    path = tmp_path / "ws.sock"
    with syncws.unix_serve(echo, str(path)):
        path.unlink()
        path.write_text("precious")
    assert path.read_text() == "precious"


@pytest.mark.timeout(10)
def test_unix_serve_removes_its_socket_when_serve_refuses_the_options(tmp_path):
    path = tmp_path / "ws.sock"
    with pytest.raises(ValueError):
        syncws.unix_serve(echo, str(path), max_pending_handshakes=0)
    assert not os.path.lexists(path)


@pytest.mark.timeout(10)
def test_unix_serve_replaces_a_stale_socket(tmp_path):
    path = str(tmp_path / "ws.sock")
    stale_socket(path)
    with syncws.unix_serve(lambda ws: ws.send("new"), path):
        with syncws.unix_connect(path) as ws:
            assert ws.recv(timeout=5) == "new"


@pytest.mark.timeout(10)
def test_unix_serve_refuses_a_path_a_server_listens_on(tmp_path):
    path = str(tmp_path / "ws.sock")
    with syncws.unix_serve(lambda ws: ws.send("first"), path):
        with pytest.raises(OSError, match="a server is listening on it") as info:
            syncws.unix_serve(echo, path)
        assert info.value.errno == errno.EADDRINUSE
        assert info.value.filename == path
        # The first server still has its socket.
        with syncws.unix_connect(path) as ws:
            assert ws.recv(timeout=5) == "first"


@pytest.mark.timeout(10)
def test_unix_serve_refuses_a_socket_whose_server_is_busy(tmp_path):
    # A listener that never accepts, with its backlog full: connecting
    # would block, yet a server is there.
    path = str(tmp_path / "ws.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(0)
        waiting = []
        try:
            while True:
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                waiting.append(client)
                client.setblocking(False)
                if client.connect_ex(path) != 0:
                    break
            with pytest.raises(OSError, match="a server is listening on it"):
                syncws.unix_serve(echo, path)
        finally:
            for client in waiting:
                client.close()
    assert os.path.exists(path)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("kind", ["file", "directory", "symlink", "fifo"])
def test_unix_serve_refuses_what_is_not_a_socket(tmp_path, kind):
    path = tmp_path / "ws.sock"
    target = tmp_path / "target"
    if kind == "file":
        path.write_text("precious")
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        stale_socket(str(target))
        path.symlink_to(target)
    else:
        os.mkfifo(path)
    with pytest.raises(FileExistsError, match="not a socket") as info:
        syncws.unix_serve(echo, str(path))
    assert info.value.filename == str(path)
    assert os.path.lexists(path)
    if kind == "file":
        assert path.read_text() == "precious"


@pytest.mark.timeout(10)
def test_unix_serve_on_an_abstract_address():
    # Linux's abstract namespace: no file, nothing to check or remove.
    if not hasattr(socket, "AF_UNIX") or os.uname().sysname != "Linux":
        pytest.skip("abstract Unix addresses are Linux's")
    path = f"\0syncws-test-{os.getpid()}"
    with syncws.unix_serve(lambda ws: ws.send("abstract"), path):
        with syncws.unix_connect(path) as ws:
            assert ws.recv(timeout=5) == "abstract"


# -- TLS ------------------------------------------------------------------------------
# -- TLS ------------------------------------------------------------------------------


@pytest.fixture
def tls_contexts(tmp_path):
    openssl = find_program("openssl")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=30,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    return server_ctx, client_ctx


@pytest.mark.timeout(30)
def test_tls_echo(make_server, tls_contexts):
    server_ctx, client_ctx = tls_contexts
    server = make_server(ssl=server_ctx)
    with syncws.connect(f"wss://localhost:{server.port}/tls", ssl=client_ctx) as ws:
        ws.send("secret")
        assert ws.recv(timeout=5) == "secret"
        ws.send(b"\x00" * 200000)
        assert ws.recv(timeout=5) == b"\x00" * 200000
    # websockets' client reads in a thread of its own while it sends its
    # request; with TLS 1.3 that thread reads the server's session tickets,
    # and one SSL object read and written at once (which OpenSSL doesn't
    # support) can lose the request: seen on free-threaded CPython, and with
    # websockets' own server too. TLS 1.2 sends nothing after its handshake.
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with websockets.sync.client.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_ctx, open_timeout=5) as ws:
        ws.send("independent tls client")
        assert ws.recv(timeout=5) == "independent tls client"
    # A client that doesn't trust the certificate fails the TLS handshake.
    with pytest.raises(ssl.SSLCertVerificationError):
        syncws.connect(f"wss://localhost:{server.port}/", ssl=ssl.create_default_context(), open_timeout=5)


@pytest.mark.timeout(30)
def test_tls_client_that_never_starts_tls_is_dropped(make_server, tls_contexts):
    server_ctx, client_ctx = tls_contexts
    before = server_thread_names()
    server = make_server(ssl=server_ctx, open_timeout=0.5)
    with socket.create_connection((HOST, server.port), timeout=5) as idle:
        start = time.monotonic()
        # Others are accepted and served while the idle one holds its thread.
        with syncws.connect(f"wss://localhost:{server.port}/", ssl=client_ctx) as ws:
            ws.send("not blocked")
            assert ws.recv(timeout=5) == "not blocked"
        assert time.monotonic() - start < 0.5 + 1.0
        assert idle.recv(1024) == b""
        assert time.monotonic() - start < 2.0
    assert wait_until(lambda: server_thread_names() == before, timeout=2)


# -- load and leaks ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_no_thread_or_fd_leak_after_500_connections():
    threads_before = {t.ident for t in threading.enumerate()}
    fds_before = fd_count()
    server = syncws.serve(echo, HOST, 0, compression=None)
    try:
        for i in range(500):
            with syncws.connect(url(server), compression=None) as ws:
                ws.send(str(i))
                assert ws.recv(timeout=5) == str(i)
    finally:
        server.close()
        server.wait_closed(timeout=10)

    def leftover():
        return [
            t.name for t in threading.enumerate()
            if t.ident not in threads_before and t.name != "syncws-timers"
        ]

    assert wait_until(lambda: leftover() == [], timeout=5), leftover()
    assert wait_until(lambda: fd_count() <= fds_before, timeout=5), (fd_count(), fds_before)


@pytest.mark.timeout(60)
def test_200_concurrent_clients_100_messages_each(make_server):
    server = make_server()
    clients, messages = 200, 100
    errors = []
    done = threading.Semaphore(0)
    start = threading.Barrier(clients)

    def client(n):
        try:
            with syncws.connect(url(server, f"/{n}"), open_timeout=20) as ws:
                start.wait(30)
                for i in range(messages):
                    payload = f"client {n} message {i} " + "x" * (i % 17)
                    if i % 2:
                        ws.send(payload.encode())
                        assert ws.recv(timeout=20) == payload.encode()
                    else:
                        ws.send(payload)
                        assert ws.recv(timeout=20) == payload
        except BaseException as exc:  # noqa: B902 - reported below
            errors.append((n, repr(exc)))
        finally:
            done.release()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert done.acquire(timeout=50)
    assert errors == []


class _Handlers:
    def one(self, ws: Any) -> None: ...
    def two(self, ws: Any, path: str) -> None: ...
    def __call__(self, ws: Any, path: Optional[str] = None) -> None: ...
    @staticmethod
    def static_two(ws: Any, path: str) -> None: ...


def _one(ws: Any) -> None: ...
def _two(ws: Any, path: str) -> None: ...
def _star(*args: Any) -> None: ...
def _one_star(ws: Any, *args: Any) -> None: ...
def _defaulted(ws: Any, path: Optional[str] = None) -> None: ...
def _two_kwonly(ws: Any, path: str, *, x: int = 0) -> None: ...


@pytest.mark.parametrize(
    "handler",
    [
        _one, _two, _star, _one_star, _defaulted, _two_kwonly,
        _Handlers().one, _Handlers().two, _Handlers(), _Handlers.static_two,
        functools.partial(_two, None), lambda ws: None, lambda ws, path: None, print,
    ],
)
def test_takes_path_agrees_with_inspect(handler: Any) -> None:
    # The server reads plain functions from their code object; whatever it
    # reads must be what inspect.signature says.
    import inspect

    from syncws.handlers import takes_path

    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        expected = True
    else:
        positional = [
            p for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        variadic = any(p.kind is p.VAR_POSITIONAL for p in parameters)
        expected = len(positional) >= 2 or (variadic and len(positional) < 2)
    assert takes_path(handler) is expected
