"""The client (syncws.client): connect(), unix_connect(), reconnect().

Against the ``websockets`` servers, and a raw TCP server (tests/conftest.py)
for handshakes that go wrong. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import queue
import socket
import ssl
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed as WSConnectionClosed

import syncws
from syncws import (
    ConnectionClosedError,
    InvalidHeader,
    InvalidStatusCode,
    InvalidURI,
    WebSocketClientProtocol,
)
from syncws.handshake import accept_key

from conftest import CERT_FILE, KEY_FILE, basic_auth_value

pytestmark = pytest.mark.timeout(20)


def echo(ws):
    try:
        for message in ws:
            ws.send(message)
    except WSConnectionClosed:
        pass


def request_recorder(results):
    """A handler that reports the request path and headers, then echoes."""

    def handler(ws):
        headers = {}
        for name, value in ws.request.headers.raw_items():
            headers.setdefault(name.lower(), []).append(value)
        results.put((ws.request.path, headers, ws.subprotocol))
        echo(ws)

    return handler


def check_echo(ws):
    ws.send("ping?")
    assert ws.recv(timeout=5) == "ping?"
    ws.send(b"\x00bin")
    assert ws.recv(timeout=5) == b"\x00bin"


# -- happy paths -----------------------------------------------------------------


def test_connect_echo_and_context_manager(ws_serve):
    with syncws.connect(ws_serve(echo)) as ws:
        assert isinstance(ws, WebSocketClientProtocol)
        assert ws.open
        check_echo(ws)
    assert ws.closed and ws.close_code == 1000


def test_path_query_and_host_header(ws_serve):
    results = queue.Queue()
    uri = ws_serve(request_recorder(results))
    with syncws.connect(uri + "/chat/room?id=7&x=y") as ws:
        path, headers, _ = results.get(timeout=5)
        check_echo(ws)
    assert path == "/chat/room?id=7&x=y"
    assert headers["host"] == [uri.split("//", 1)[1]]
    assert ws.path == "/chat/room?id=7&x=y"


def test_headers_origin_and_user_agent(ws_serve):
    results = queue.Queue()
    uri = ws_serve(request_recorder(results))
    with syncws.connect(
        uri,
        additional_headers={"X-Token": "abc"},
        user_agent_header="test-agent/1.0",
        origin="https://example.com",
    ) as ws:
        _, headers, _ = results.get(timeout=5)
        assert ws.request_headers["X-Token"] == "abc"
        assert ws.response_headers["Upgrade"].lower() == "websocket"
    assert headers["x-token"] == ["abc"]
    assert headers["user-agent"] == ["test-agent/1.0"]
    assert headers["origin"] == ["https://example.com"]

    # The seed's name, with pairs; no User-Agent at all.
    with syncws.connect(uri, extra_headers=[("X-Multi", "1"), ("X-Multi", "2")], user_agent_header=None):
        _, headers, _ = results.get(timeout=5)
    assert headers["x-multi"] == ["1", "2"]
    assert "user-agent" not in headers
    assert "origin" not in headers

    # The default User-Agent names syncws.
    with syncws.connect(uri):
        _, headers, _ = results.get(timeout=5)
    assert "syncws" in headers["user-agent"][0]

    with pytest.raises(TypeError):
        syncws.connect(uri, extra_headers={"A": "1"}, additional_headers={"B": "2"})


def test_user_info_becomes_basic_auth(ws_serve):
    results = queue.Queue()
    uri = ws_serve(request_recorder(results))
    with syncws.connect(uri.replace("ws://", "ws://alice:s3cret@")):
        _, headers, _ = results.get(timeout=5)
    assert headers["authorization"] == [basic_auth_value("alice", "s3cret")]


def test_subprotocol_negotiation(ws_serve):
    results = queue.Queue()
    uri = ws_serve(request_recorder(results), subprotocols=["chat", "superchat"])
    with syncws.connect(uri, subprotocols=["superchat", "other"]) as ws:
        _, headers, server_side = results.get(timeout=5)
        assert ws.subprotocol == "superchat"
        check_echo(ws)
    assert server_side == "superchat"
    assert headers["sec-websocket-protocol"] == ["superchat, other"]


def test_no_subprotocol_by_default(ws_serve):
    with syncws.connect(ws_serve(echo)) as ws:
        assert ws.subprotocol is None


def test_create_protocol_subclass(ws_serve):
    class Custom(WebSocketClientProtocol):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.custom = True

    with syncws.connect(ws_serve(echo), create_protocol=Custom) as ws:
        assert type(ws) is Custom and ws.custom
        check_echo(ws)


def test_preconnected_sock(ws_serve):
    uri = ws_serve(echo)
    port = int(uri.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    with syncws.connect(uri, sock=sock) as ws:
        check_echo(ws)
    assert sock.fileno() == -1  # the connection closed the socket it was given


def test_unix_connect(ws_unix_serve):
    results = queue.Queue()
    path = ws_unix_serve(request_recorder(results))
    with syncws.unix_connect(path) as ws:
        check_echo(ws)
    assert results.get(timeout=5)[0] == "/"
    with syncws.unix_connect(path, "ws://localhost/over/unix") as ws:
        check_echo(ws)
    assert results.get(timeout=5)[0] == "/over/unix"


# -- handshake failures ----------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1/", "ws://", "not a uri", "ws://127.0.0.1:99999/", "wss:/127.0.0.1/"],
)
def test_invalid_uri(uri):
    with pytest.raises(InvalidURI):
        syncws.connect(uri)


def test_invalid_status_code_with_body(raw_serve):
    def handler(conn):
        conn.read_head()
        conn.send(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 14\r\nConnection: close\r\n\r\nnot for you :("
        )

    with pytest.raises(InvalidStatusCode) as excinfo:
        syncws.connect(raw_serve(handler, handshake=False))
    assert excinfo.value.status_code == 403
    assert excinfo.value.body == b"not for you :("
    assert str(excinfo.value) == "server rejected WebSocket connection: HTTP 403"
    # The whole response in one, as websockets' InvalidStatus.response.
    response = excinfo.value.response
    assert (response.status_code, response.body) == (403, b"not for you :(")
    assert response.headers["Content-Type"] == "text/plain"


def test_invalid_status_code_from_websockets(ws_serve):
    def process_request(connection, request):
        return connection.respond(404, "no such room\n")

    with pytest.raises(InvalidStatusCode) as excinfo:
        syncws.connect(ws_serve(echo, process_request=process_request))
    assert excinfo.value.status_code == 404
    assert excinfo.value.body == b"no such room\n"


def test_wrong_accept_is_invalid_header(raw_serve):
    def handler(conn):
        conn.handshake(accept=accept_key("not the key"))

    with pytest.raises(InvalidHeader) as excinfo:
        syncws.connect(raw_serve(handler, handshake=False))
    assert excinfo.value.name == "Sec-WebSocket-Accept"
    assert "Sec-WebSocket-Accept" in str(excinfo.value)


def test_connection_refused():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        port = holder.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            syncws.connect(f"ws://127.0.0.1:{port}/")
    finally:
        holder.close()


def test_open_timeout_when_server_never_answers(raw_serve):
    def handler(conn):
        try:
            while conn.sock.recv(65536):
                pass
        except OSError:
            pass

    uri = raw_serve(handler, handshake=False)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        syncws.connect(uri, open_timeout=0.5)
    assert 0.4 <= time.monotonic() - started < 2


@pytest.fixture
def full_backlog_port():
    """A port whose listener never accepts and has a full queue: a TCP
    connect to it gets no answer (the kernel drops the SYN) until it times
    out."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        held = []

        def queue_is_full():
            # struct tcp_info of a listener: tcpi_unacked is the length of
            # its queue, tcpi_sacked the backlog; full once it's over it.
            info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
            length, backlog = struct.unpack_from("II", info, 24)
            return length > backlog

        try:
            while not queue_is_full():
                assert len(held) < 16, "the listener's queue doesn't fill up"
                held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            yield port
        finally:
            for sock in held:
                sock.close()


def test_open_timeout_when_tcp_connect_gets_no_answer(full_backlog_port):
    # socket.timeout isn't a TimeoutError before Python 3.10: it comes out
    # as the TimeoutError open_timeout promises, on every Python.
    uri = f"ws://127.0.0.1:{full_backlog_port}/"
    with pytest.raises(TimeoutError) as excinfo:
        syncws.connect(uri, open_timeout=0.5)
    assert str(excinfo.value) == f"the opening handshake with {uri} didn't finish within 0.5 seconds"
    assert isinstance(excinfo.value.__cause__, socket.timeout)  # from the TCP connect


def test_open_timeout_when_the_http_proxy_never_answers():
    # The proxy accepts TCP (into its queue) and never reads the CONNECT.
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        with pytest.raises(TimeoutError) as excinfo:
            syncws.connect("ws://example.com/", proxy=proxy_url, open_timeout=0.5)
    assert str(excinfo.value) == "the opening handshake with ws://example.com/ didn't finish within 0.5 seconds"
    assert isinstance(excinfo.value.__cause__, socket.timeout)


# -- TLS ---------------------------------------------------------------------------


@pytest.fixture
def tls_uri(ws_serve):
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(CERT_FILE, KEY_FILE)
    return ws_serve(echo, ssl=server_context)


def test_tls_echo(tls_uri):
    client_context = ssl.create_default_context(cafile=CERT_FILE)
    with syncws.connect(tls_uri, ssl=client_context) as ws:
        assert ws.secure
        check_echo(ws)
        ws.send(b"x" * 300_000)  # bigger than a TLS record and write_limit
        assert ws.recv(timeout=5) == b"x" * 300_000
    assert ws.close_code == 1000


def test_tls_default_context_verifies_certificate(tls_uri):
    with pytest.raises(ssl.SSLCertVerificationError):
        syncws.connect(tls_uri)


# -- reconnect ------------------------------------------------------------------------


def test_reconnect_after_server_drops_connection(ws_serve):
    attempts = []

    def handler(ws):
        attempts.append(ws)
        if len(attempts) == 1:
            ws.socket.shutdown(socket.SHUT_RDWR)
        else:
            echo(ws)

    connections = syncws.reconnect(ws_serve(handler), initial_delay=0.01, max_delay=0.05)
    first = next(connections)
    with pytest.raises(ConnectionClosedError) as excinfo:
        first.recv(timeout=5)
    assert excinfo.value.code == 1006
    second = next(connections)
    assert second is not first and second.id != first.id
    assert second.open
    check_echo(second)
    connections.close()
    assert first.closed and second.closed
    assert len(attempts) == 2


def test_reconnect_retries_transient_status(ws_serve):
    attempts = []

    def process_request(connection, request):
        attempts.append(request)
        if len(attempts) < 3:
            return connection.respond(503, "busy\n")
        return None

    connections = syncws.reconnect(
        ws_serve(echo, process_request=process_request), initial_delay=0.01, max_delay=0.05
    )
    ws = next(connections)
    check_echo(ws)
    connections.close()
    assert len(attempts) == 3
    assert ws.closed


def test_reconnect_raises_on_4xx(ws_serve):
    attempts = []

    def process_request(connection, request):
        attempts.append(request)
        return connection.respond(403, "go away\n")

    connections = syncws.reconnect(
        ws_serve(echo, process_request=process_request), initial_delay=0.01, max_delay=0.05
    )
    with pytest.raises(InvalidStatusCode) as excinfo:
        next(connections)
    assert excinfo.value.status_code == 403
    assert len(attempts) == 1


def test_reconnect_raises_on_invalid_uri():
    with pytest.raises(InvalidURI):
        next(syncws.reconnect("http://127.0.0.1/", initial_delay=0.01))


# -- TCP: addresses connected to directly, names resolved ------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_connect_to_an_address_or_a_name(host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server(("::1" if ":" in host else "127.0.0.1", 0), family=family)
    except OSError:
        pytest.skip(f"no {family.name} loopback")
    with listener:
        server = syncws.serve(lambda ws: ws.send(ws.path), sock=listener, compression=None)
        with server:
            port = listener.getsockname()[1]
            name = f"[{host}]" if ":" in host else host
            with syncws.connect(f"ws://{name}:{port}/here", proxy=None, source_address=(host.replace("localhost", "127.0.0.1"), 0)) as ws:
                assert ws.recv(timeout=5) == "/here"
                assert ws.transport.sock.family == family


def test_connect_to_an_address_refused():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        syncws.connect(f"ws://127.0.0.1:{port}/", proxy=None, open_timeout=5)


# -- no secret in exception texts or log lines ----------------------------------


def test_invalid_uri_text_leaves_the_password_and_query_values_out():
    uri = "ws://bob:hunter2@example.com:99999/feed?access_token=tok123"
    with pytest.raises(InvalidURI) as excinfo:
        syncws.connect(uri)
    assert excinfo.value.uri == uri  # the attribute keeps it whole
    assert str(excinfo.value) == (
        "'ws://bob:[redacted]@example.com:99999/feed?access_token=[redacted]' "
        "isn't a valid WebSocket URI: port 99999 is out of range 1-65535"
    )


def test_open_timeout_text_leaves_the_password_and_query_values_out():
    # A server that accepts and never answers the handshake.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(TimeoutError) as excinfo:
            syncws.connect(f"ws://bob:hunter2@127.0.0.1:{port}/?access_token=tok123", open_timeout=0.3)
    text = str(excinfo.value)
    assert "hunter2" not in text and "tok123" not in text
    assert f"ws://bob:[redacted]@127.0.0.1:{port}/?access_token=[redacted]" in text
