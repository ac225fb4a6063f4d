"""Server handshake hooks (syncws.hooks): process_response, respond(),
basic_auth's username, origins as regular expressions, select_subprotocol=.

Clients: syncws and the ``websockets`` sync client, over 127.0.0.1.
"""

from __future__ import annotations

import http
import queue
import re
from typing import Any, Iterator, List

import pytest
import websockets.sync.client
from websockets.exceptions import InvalidStatus

import syncws
from syncws import InvalidStatusCode
from syncws.hooks import ServerResponse, as_response, origin_allowed
from syncws.http import Headers, Request

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def start() -> Iterator[Any]:
    servers: List[syncws.WebSocketServer] = []

    def start(handler: Any, **kwargs: Any) -> str:
        server = syncws.serve(handler, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return f"ws://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.close()
        server.wait_closed(10)


def echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


# -- respond() ---------------------------------------------------------------------------


def test_respond_from_process_request(start: Any) -> None:
    def health(path: str, headers: Headers) -> Any:
        if path == "/healthz":
            return syncws.respond(http.HTTPStatus.OK, "OK\n")
        if path == "/teapot":
            return syncws.respond(418, "short and stout\n")
        return None

    uri = start(echo, process_request=health)
    with pytest.raises(InvalidStatusCode) as excinfo:
        syncws.connect(uri + "/teapot")
    assert excinfo.value.status_code == 418
    assert excinfo.value.body == b"short and stout\n"
    assert excinfo.value.headers["Content-Type"] == "text/plain; charset=utf-8"
    with pytest.raises(InvalidStatus) as ws_excinfo:
        websockets.sync.client.connect(uri + "/healthz", open_timeout=5)
    assert ws_excinfo.value.response.status_code == 200
    assert ws_excinfo.value.response.body == b"OK\n"
    with syncws.connect(uri + "/chat") as ws:
        ws.send("still a websocket")
        assert ws.recv(timeout=5) == "still a websocket"


def test_respond_checks_its_arguments() -> None:
    with pytest.raises(ValueError):
        syncws.respond(999, "x")
    with pytest.raises(TypeError, match="text must be a str"):
        syncws.respond(200, b"x")  # type: ignore[arg-type]
    response = syncws.respond(404, "gone")
    status, headers, body = response  # unpacks like process_request's triple
    assert (status, headers["Content-Length"], body, response.reason) == (404, "4", b"gone", "Not Found")
    with pytest.raises(TypeError, match="process_request must return"):
        as_response("nope", "process_request")


def test_connection_respond_method(start: Any) -> None:
    seen: "queue.Queue[Any]" = queue.Queue()

    def process_response(connection: Any, request: Request, response: ServerResponse) -> Any:
        seen.put(connection)
        return connection.respond(403, "no websockets today\n")

    uri = start(echo, process_response=process_response)
    with pytest.raises(InvalidStatusCode) as excinfo:
        syncws.connect(uri)
    assert excinfo.value.status_code == 403
    assert excinfo.value.body == b"no websockets today\n"
    assert isinstance(seen.get(timeout=5), syncws.WebSocketServerProtocol)


# -- process_response ---------------------------------------------------------------------


def test_process_response_edits_the_101_in_place(start: Any) -> None:
    calls: "queue.Queue[Any]" = queue.Queue()

    def process_response(connection: Any, request: Request, response: ServerResponse) -> None:
        calls.put((connection, request, response.status_code))
        response.headers["X-Request-Path"] = request.path

    uri = start(echo, process_response=process_response)
    with syncws.connect(uri + "/room?x=1") as ws:
        assert ws.response_headers["X-Request-Path"] == "/room?x=1"
    with websockets.sync.client.connect(uri + "/other", open_timeout=5) as ws2:
        assert ws2.response.headers["X-Request-Path"] == "/other"
    connection, request, status = calls.get(timeout=5)
    assert status == 101 and request.method == "GET" and connection.request is request


def test_process_response_sees_refusals(start: Any) -> None:
    statuses: "queue.Queue[int]" = queue.Queue()

    def process_response(connection: Any, request: Request, response: ServerResponse) -> None:
        statuses.put(response.status_code)
        response.headers["Retry-After"] = "30"

    uri = start(
        echo,
        process_response=process_response,
        process_request=syncws.basic_auth(("alice", "secret")),
    )
    with pytest.raises(InvalidStatusCode) as excinfo:
        syncws.connect(uri)
    assert excinfo.value.status_code == 401
    assert excinfo.value.headers["Retry-After"] == "30"
    assert statuses.get(timeout=5) == 401
    assert statuses.empty()  # once per handshake


def test_process_response_that_raises_gives_500(start: Any, caplog: pytest.LogCaptureFixture) -> None:
    def process_response(connection: Any, request: Request, response: ServerResponse) -> None:
        raise RuntimeError("bug in the hook")

    uri = start(echo, process_response=process_response)
    with pytest.raises(InvalidStatusCode) as excinfo:
        syncws.connect(uri)
    assert excinfo.value.status_code == 500
    assert "bug in the hook" in caplog.text


# -- basic_auth sets connection.username ---------------------------------------------------


def test_basic_auth_sets_username(start: Any) -> None:
    def whoami(ws: Any) -> None:
        ws.send(repr(ws.username))

    uri = start(whoami, process_request=syncws.basic_auth([("alice", "secret"), ("bob", "pw")]))
    with syncws.connect(uri.replace("ws://", "ws://bob:pw@")) as ws:
        assert ws.recv(timeout=5) == "'bob'"
    with websockets.sync.client.connect(uri.replace("ws://", "ws://alice:secret@"), open_timeout=5) as ws2:
        assert ws2.recv(timeout=5) == "'alice'"


def test_username_is_none_without_basic_auth(start: Any) -> None:
    uri = start(lambda ws: ws.send(repr(ws.username)))
    with syncws.connect(uri.replace("ws://", "ws://carol:x@")) as ws:
        assert ws.recv(timeout=5) == "None"


# -- origins ------------------------------------------------------------------------------


def test_origin_allowed_rules() -> None:
    pattern = re.compile(r"https://([a-z]+\.)?example\.com")
    origins = ["https://exact.org", pattern, None]
    assert origin_allowed("https://exact.org", origins)
    assert origin_allowed("https://example.com", origins)
    assert origin_allowed("https://chat.example.com", origins)
    assert origin_allowed(None, origins)
    # fullmatch, not search: a suffix or prefix doesn't sneak in.
    assert not origin_allowed("https://example.com.evil.net", origins)
    assert not origin_allowed("xhttps://example.com", origins)
    assert not origin_allowed("https://exact.org.evil", origins)
    assert not origin_allowed(None, ["https://exact.org", pattern])


def test_origins_with_patterns(start: Any) -> None:
    uri = start(echo, origins=[re.compile(r"https://[a-z]+\.example\.com"), "http://localhost"])
    with syncws.connect(uri, origin="https://chat.example.com") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    with websockets.sync.client.connect(uri, origin="http://localhost", open_timeout=5):  # type: ignore[arg-type]
        pass
    for origin in ("https://example.com.evil.net", "https://example.com"):
        with pytest.raises(InvalidStatusCode) as excinfo:
            syncws.connect(uri, origin=origin)
        assert excinfo.value.status_code == 403
    with pytest.raises(InvalidStatusCode):
        syncws.connect(uri)  # no Origin, and None isn't allowed


def test_bad_origins_refused_at_serve() -> None:
    with pytest.raises(TypeError, match="origins"):
        syncws.serve(echo, "127.0.0.1", 0, origins="https://example.com")
    with pytest.raises(TypeError, match="origins"):
        syncws.serve(echo, "127.0.0.1", 0, origins=[b"https://example.com"])


# -- select_subprotocol= -------------------------------------------------------------------


def test_select_subprotocol_argument(start: Any) -> None:
    seen: "queue.Queue[Any]" = queue.Queue()

    def select(connection: Any, subprotocols: Any) -> Any:
        seen.put((connection.path, list(subprotocols)))
        # Versioned protocols: the highest the client speaks.
        versions = [p for p in subprotocols if p.startswith("chat.v")]
        return max(versions, key=lambda p: int(p[len("chat.v"):])) if versions else None

    uri = start(lambda ws: ws.send(str(ws.subprotocol)), select_subprotocol=select)
    with syncws.connect(uri + "/x", subprotocols=["chat.v1", "chat.v3", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v3"
        assert ws.recv(timeout=5) == "chat.v3"
    assert seen.get(timeout=5) == ("/x", ["chat.v1", "chat.v3", "chat.v2"])
    with websockets.sync.client.connect(uri, subprotocols=["chat.v2"], open_timeout=5) as ws2:  # type: ignore[list-item]
        assert ws2.subprotocol == "chat.v2"
    with syncws.connect(uri, subprotocols=["other"]) as ws:
        assert ws.subprotocol is None


def test_select_subprotocol_choosing_unoffered_is_500(start: Any) -> None:
    uri = start(echo, select_subprotocol=lambda connection, subprotocols: "never-offered")
    with pytest.raises(InvalidStatusCode) as excinfo:
        syncws.connect(uri, subprotocols=["chat"])
    assert excinfo.value.status_code == 500
