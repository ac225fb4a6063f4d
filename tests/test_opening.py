"""Tests for syncws.opening: the opening handshake's policy, with sockets disabled.

Every test here runs with the socket module's constructors replaced by a
function that fails the test (the ``no_sockets`` fixture): the negotiation,
server and client side, takes heads in and gives heads out.
"""

from __future__ import annotations

import base64
import io
import re
import socket
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import pytest

from syncws import WebSocketServerProtocol
from syncws.datastructures import Headers, ServerResponse
from syncws.exceptions import (
    AbortHandshake,
    HeadersTooLarge,
    InvalidHeader,
    InvalidMessage,
    InvalidOrigin,
    InvalidStatusCode,
    InvalidUpgrade,
    NegotiationError,
)
from syncws.extensions.permessage_deflate import DeflateSettings, PerMessageDeflate
from syncws.handshake import accept_key
from syncws.http import Request, Response, read_request, read_response, serialize_request, serialize_response
from syncws.auth import basic_auth
from syncws.opening import (
    ClientOpening, RequestHooks, ServerHooks, ServerPolicy, accept, hook_bug, http_answer, serialize_answer,
)
from syncws.serverprotocol import runs_own_hooks
from syncws.uri import parse_uri

# RFC 6455 §1.3.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


class SocketTouched(AssertionError):
    """The code under test made a socket."""


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make every way of getting a socket fail the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise SocketTouched("the opening handshake touched a socket")

    for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
        monkeypatch.setattr(socket, name, refuse)
    yield


def test_sockets_are_disabled() -> None:
    with pytest.raises(SocketTouched):
        socket.socket()
    with pytest.raises(SocketTouched):
        socket.create_connection(("127.0.0.1", 9))


def request(target: str = "/chat", *, method: str = "GET", drop: Sequence[str] = (), **extra: str) -> Request:
    """A request as the server's reader parses it: a valid opening request, changed."""
    headers = {
        "Host": "example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name in drop:
        del headers[name]
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in extra.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return read_request(io.BytesIO(head).readline)


class Hooks(ServerHooks):
    """Hooks that record what they were asked, and answer as told."""

    def __init__(self, *, status: int = 101, answer: Any = None, pick: Optional[str] = None) -> None:
        self.status = status
        self.answer = answer
        self.pick = pick
        self.calls: List[Tuple[str, Any]] = []
        self.seen_in_status: Tuple[Any, ...] = ()

    def process_request(self, path: str, request_headers: Headers) -> Any:
        self.calls.append(("process_request", path))
        return self.answer

    def select_subprotocol(self, client_protos: Sequence[str], server_protos: Sequence[str]) -> Optional[str]:
        self.calls.append(("select_subprotocol", list(client_protos)))
        if self.pick is not None:
            return self.pick
        return super().select_subprotocol(client_protos, server_protos)

    def get_response_status(self, set_header: Any) -> int:
        self.seen_in_status = (self.origin, self.path, self.request_headers["Host"], self.subprotocol)
        if self.status != 101:
            set_header("X-Why", "told so")
        return self.status

    def process_response(self, request: Request, response: ServerResponse) -> ServerResponse:
        self.calls.append(("process_response", response.status_code))
        return response


def refusal(req: Request, policy: ServerPolicy = ServerPolicy(), hooks: Optional[ServerHooks] = None) -> AbortHandshake:
    with pytest.raises(AbortHandshake) as excinfo:
        accept(req, policy, hooks or Hooks())
    return excinfo.value


# -- the server: the 101 --------------------------------------------------------------


def test_a_valid_request_gets_101() -> None:
    hooks = Hooks()
    response = accept(request("/caf%C3%A9?room=1", Origin="https://app.test"), ServerPolicy(server_header="S/1"), hooks)
    assert response.status_code == 101 and response.body == b""
    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Connection"] == "Upgrade"
    assert response.headers["Sec-WebSocket-Accept"] == ACCEPT
    assert response.headers["Server"] == "S/1"
    # The state the hooks read, set before get_response_status ran.
    assert hooks.seen_in_status == ("https://app.test", "/café?room=1", "example.com", None)
    assert hooks.request is not None and hooks.request.path == "/caf%C3%A9?room=1"
    assert hooks.extensions == []
    assert hooks.calls == [("process_request", "/café?room=1"), ("process_response", 101)]


def test_the_101_is_written_as_http() -> None:
    response = accept(request(), ServerPolicy(), Hooks())
    head = serialize_response(response.status_code, response.headers)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


def test_a_path_given_is_used_as_is() -> None:
    hooks = Hooks()
    accept(request("/%70rivate"), ServerPolicy(), hooks, path="/routed")
    assert hooks.path == "/routed"
    assert hooks.calls[0] == ("process_request", "/routed")


def test_extra_headers_and_a_server_header_of_its_own() -> None:
    seen = []

    def extra(path: str, headers: Headers) -> List[Tuple[str, str]]:
        seen.append(path)
        return [("X-Room", "1"), ("Server", "mine")]

    response = accept(request("/a%20b"), ServerPolicy(extra_headers=extra, server_header="S/1"), Hooks())
    assert seen == ["/a b"]
    assert response.headers["X-Room"] == "1"
    assert response.headers.get_all("Server") == ["mine"]


def test_no_server_header() -> None:
    assert "Server" not in accept(request(), ServerPolicy(server_header=None), Hooks()).headers


# -- the server: refusals -------------------------------------------------------------


def test_another_method_gets_405() -> None:
    exc = refusal(request(method="POST"))
    assert exc.status == 405
    assert ("Allow", "GET") in list(exc.headers)
    assert b"POST isn't allowed" in exc.body


@pytest.mark.parametrize(
    "req, fragment",
    [
        (request(drop=["Host"]), "Host"),
        (request(Host="other.test"), "more than one Host"),
        (request(Origin="https://a.test, https://b.test"), "more than one origin"),
        (request(Content_Length="5"), "no body"),
        (request(Sec_WebSocket_Key="c2hvcnQ="), "Sec-WebSocket-Key"),
        (request("/%FF"), "UTF-8"),
    ],
)
def test_bad_requests_get_400(req: Request, fragment: str) -> None:
    hooks = Hooks()
    exc = refusal(req, hooks=hooks)
    assert exc.status == 400
    assert fragment in exc.body.decode()
    assert isinstance(exc.__cause__, (InvalidHeader, InvalidMessage))
    assert hooks.calls[-1] == ("process_response", 400)


def test_the_checks_of_any_request_come_before_process_request() -> None:
    hooks = Hooks(answer=(200, [], b"health"))
    assert refusal(request(Host="two.test"), hooks=hooks).status == 400
    assert ("process_request", "/chat") not in hooks.calls


def test_process_request_answers_instead() -> None:
    hooks = Hooks(answer=(200, [("X-Health", "ok")], b"OK\n"))
    exc = refusal(request(drop=["Upgrade"]), hooks=hooks)  # before the WebSocket headers' checks
    assert (exc.status, exc.body) == (200, b"OK\n")
    assert ("X-Health", "ok") in list(exc.headers)
    assert hooks.calls == [("process_request", "/chat"), ("process_response", 200)]


def test_upgrade_missing_gets_426_saying_what_to_send() -> None:
    exc = refusal(request(drop=["Upgrade"]))
    assert exc.status == 426
    assert dict(exc.headers) == {"Upgrade": "websocket", "Connection": "Upgrade"}
    assert isinstance(exc.__cause__, InvalidUpgrade)


def test_another_version_gets_426_with_ours() -> None:
    exc = refusal(request(Sec_WebSocket_Version="8", drop=["Sec-WebSocket-Version"]))
    assert exc.status == 426
    assert dict(exc.headers) == {"Sec-WebSocket-Version": "13"}


def test_a_repeated_version_gets_400() -> None:
    assert refusal(request(Sec_WebSocket_Version="13")).status == 400


def test_origins() -> None:
    policy = ServerPolicy(origins=["https://good.test", re.compile(r"https://[a-z]+\.app\.test"), None])
    accept(request(Origin="https://good.test"), policy, Hooks())
    accept(request(Origin="https://chat.app.test"), policy, Hooks())
    accept(request(), policy, Hooks())  # None admits a request without Origin
    exc = refusal(request(Origin="https://evil.test"), policy)
    assert exc.status == 403
    assert isinstance(exc.__cause__, InvalidOrigin)
    assert b"evil.test" in exc.body
    assert refusal(request(), ServerPolicy(origins=["https://good.test"])).status == 403


def test_get_response_status_refuses_with_its_headers() -> None:
    hooks = Hooks(status=401)
    exc = refusal(request(), hooks=hooks)
    assert (exc.status, exc.body) == (401, b"Unauthorized\n")
    assert ("X-Why", "told so") in list(exc.headers)
    assert hooks.calls[-1] == ("process_response", 401)


def test_a_bug_in_a_hook_gets_500_with_the_bug_as_cause() -> None:
    class Broken(Hooks):
        def get_response_status(self, set_header: Any) -> int:
            raise RuntimeError("exploded")

    hooks = Broken()
    exc = refusal(request(), hooks=hooks)
    assert exc.status == 500
    assert isinstance(exc.__cause__, RuntimeError)
    assert hooks.calls[-1] == ("process_response", 500)


def test_each_500_has_headers_of_its_own() -> None:
    class Broken(Hooks):
        def get_response_status(self, set_header: Any) -> int:
            raise RuntimeError("exploded")

        def process_response(self, request: Request, response: ServerResponse) -> ServerResponse:
            response.headers["X-Seen"] = "1"  # in place, as the hook may
            return response

    for _ in range(2):
        assert refusal(request(), hooks=Broken()).headers == [("X-Seen", "1")]


def test_hook_bug_tells_a_bug_from_a_refusal() -> None:
    class Broken(Hooks):
        def get_response_status(self, set_header: Any) -> int:
            raise RuntimeError("exploded")

    bug = hook_bug(refusal(request(), hooks=Broken()))
    assert isinstance(bug, RuntimeError) and bug.__traceback__ is not None
    assert hook_bug(refusal(request(drop=["Upgrade"]))) is None
    assert hook_bug(refusal(request(), hooks=Hooks(answer=(401, [], b"")))) is None
    assert hook_bug(OSError("reset")) is None


def test_wsgi_accept_negotiates_without_a_socket(caplog: pytest.LogCaptureFixture) -> None:
    from syncws import wsgi

    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/chat", "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "example.com",
        "HTTP_HOST": "example.com", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY, "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    with pytest.raises(AbortHandshake) as excinfo:
        wsgi.accept(dict(environ, HTTP_ORIGIN="https://evil.test"), origins=["https://good.test"])
    assert excinfo.value.status == 403

    def exploding(path: str, headers: Headers) -> None:
        raise RuntimeError("process_request exploded")

    with pytest.raises(AbortHandshake) as excinfo:
        wsgi.accept(dict(environ), process_request=exploding)
    assert excinfo.value.status == 500
    assert "process_request exploded" in caplog.text  # logged, not lost
    # A valid upgrade gets as far as the WSGI server's socket, which this
    # environ doesn't hold.
    with pytest.raises(wsgi.ServerNotSupported):
        wsgi.accept(dict(environ))


def test_what_process_response_raises_goes_through() -> None:
    class Broken(Hooks):
        def process_response(self, request: Request, response: ServerResponse) -> ServerResponse:
            raise RuntimeError("exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        accept(request(), ServerPolicy(), Broken())


def test_process_response_may_refuse_the_101_but_never_accept_a_refusal() -> None:
    class Refusing(Hooks):
        def process_response(self, request: Request, response: ServerResponse) -> ServerResponse:
            return ServerResponse(403, Headers(), b"no")

    assert (refusal(request(), hooks=Refusing()).status, refusal(request(), hooks=Refusing()).body) == (403, b"no")

    class Accepting(Hooks):
        def process_response(self, request: Request, response: ServerResponse) -> ServerResponse:
            return ServerResponse(101, response.headers, b"")

    exc = refusal(request(drop=["Upgrade"]), hooks=Accepting())
    assert exc.status == 426


# -- the server: subprotocols and extensions ---------------------------------------------


def test_the_servers_preference_wins() -> None:
    hooks = Hooks()
    response = accept(
        request(Sec_WebSocket_Protocol="chat.v1, chat.v2"), ServerPolicy(subprotocols=["chat.v2", "chat.v1"]), hooks
    )
    assert response.headers["Sec-WebSocket-Protocol"] == "chat.v2"
    assert hooks.subprotocol == "chat.v2"
    assert hooks.seen_in_status[3] == "chat.v2"  # set before get_response_status


def test_no_subprotocol_in_common_sends_none() -> None:
    hooks = Hooks()
    response = accept(request(Sec_WebSocket_Protocol="other"), ServerPolicy(subprotocols=["chat"]), hooks)
    assert "Sec-WebSocket-Protocol" not in response.headers and hooks.subprotocol is None


def test_select_subprotocol_is_asked_only_when_the_server_has_a_say() -> None:
    hooks = Hooks(pick="other")
    accept(request(Sec_WebSocket_Protocol="other"), ServerPolicy(), hooks)
    assert hooks.subprotocol is None
    assert not any(name == "select_subprotocol" for name, _ in hooks.calls)
    # With serve()'s select_subprotocol hook, it is asked.
    accept(request(Sec_WebSocket_Protocol="other"), ServerPolicy(select_subprotocol=lambda c, p: None), hooks)
    assert hooks.subprotocol == "other"


def test_a_subprotocol_the_client_didnt_offer_is_a_bug() -> None:
    exc = refusal(request(Sec_WebSocket_Protocol="chat"), ServerPolicy(subprotocols=["chat"]), Hooks(pick="spam"))
    assert exc.status == 500
    assert isinstance(exc.__cause__, ValueError) and "didn't offer" in str(exc.__cause__)


def test_a_malformed_subprotocol_list_gets_400() -> None:
    exc = refusal(request(Sec_WebSocket_Protocol="chat room"), ServerPolicy(subprotocols=["chat"]))
    assert exc.status == 400


def test_permessage_deflate_is_accepted_when_offered() -> None:
    hooks = Hooks()
    response = accept(request(Sec_WebSocket_Extensions="permessage-deflate"), ServerPolicy(), hooks)
    assert response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    assert len(hooks.extensions) == 1 and isinstance(hooks.extensions[0], PerMessageDeflate)


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_no_deflate_unless_both_want_it(compression: Any) -> None:
    hooks = Hooks()
    extensions = "x-unknown" if compression else "permessage-deflate"
    response = accept(request(Sec_WebSocket_Extensions=extensions), ServerPolicy(compression=compression), hooks)
    assert "Sec-WebSocket-Extensions" not in response.headers and hooks.extensions == []


# -- the server's connection: the same negotiation ---------------------------------------


def test_the_servers_connection_negotiates_without_a_socket() -> None:
    class Gatekeeper(WebSocketServerProtocol):
        def get_response_status(self, set_header: Any) -> int:
            return 403 if self.path == "/private" else 101

    connection = Gatekeeper(
        None, None, subprotocols=["chat"], server_header="S/1", compression=None,  # type: ignore[arg-type]
        process_response=lambda conn, req, resp: resp.headers.__setitem__("X-Seen", conn.path),
    )
    headers = connection.negotiate(request("/room", Sec_WebSocket_Protocol="chat"), subprotocols=["chat"])
    assert headers["X-Seen"] == "/room" and headers["Server"] == "S/1"
    assert (connection.path, connection.subprotocol, connection.transport) == ("/room", "chat", None)
    with pytest.raises(AbortHandshake) as excinfo:
        connection.negotiate(request("/private"))
    assert excinfo.value.status == 403


def test_request_hooks_negotiate_before_a_connection_exists() -> None:
    hooks = RequestHooks(basic_auth(credentials=("ann", "secret")))
    token = base64.b64encode(b"ann:secret").decode()
    accept(request("/room", Authorization=f"Basic {token}", Sec_WebSocket_Protocol="chat"),
           ServerPolicy(subprotocols=["chat"]), hooks)
    assert hooks.username == "ann"
    connection = WebSocketServerProtocol(None, None)
    hooks.copy_outcome(connection)
    assert (connection.path, connection.subprotocol, connection.extensions) == ("/room", "chat", [])
    assert connection.request_headers["Host"] == "example.com"
    assert connection.request is hooks.request
    refused = refusal(request("/room"), ServerPolicy(), RequestHooks(basic_auth(credentials=("ann", "secret"))))
    assert refused.status == 401


def test_a_subclass_that_overrides_a_hook_runs_its_own_hooks() -> None:
    class Gatekeeper(WebSocketServerProtocol):
        def get_response_status(self, set_header: Any) -> int:
            return 403

    class Quiet(WebSocketServerProtocol):
        pass

    assert runs_own_hooks(Gatekeeper)
    assert not runs_own_hooks(Quiet) and not runs_own_hooks(WebSocketServerProtocol)


# -- refusals as HTTP ------------------------------------------------------------------


def test_http_answer_maps_failures() -> None:
    assert http_answer(InvalidOrigin("https://evil.test"))[0] == 403  # type: ignore[index]
    assert http_answer(HeadersTooLarge("too long", 8192))[0] == 431  # type: ignore[index]
    assert http_answer(InvalidMessage("bad line"))[0] == 400  # type: ignore[index]
    ended = InvalidMessage("connection closed")
    ended.__cause__ = EOFError()
    assert http_answer(ended) is None  # nobody left to answer
    assert http_answer(OSError("reset")) is None


def test_an_answer_ends_the_connection() -> None:
    data = serialize_answer(403, [("Content-Length", "999"), ("X-A", "1")], b"no\n", "S/1")
    response = read_response(io.BytesIO(data).readline)
    assert response.status_code == 403
    assert response.headers["Connection"] == "close"
    assert response.headers.get_all("Content-Length") == ["3"]
    assert response.headers["Server"] == "S/1"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert data.endswith(b"\r\n\r\nno\n")
    assert b"Server" not in serialize_answer(400, [], b"", None)


# -- the client ------------------------------------------------------------------------


def test_the_clients_request() -> None:
    client = ClientOpening(
        parse_uri("wss://u:p@example.com:8443/chat?x=1"), origin="https://app.test", subprotocols=["a", "b"],
        extra_headers={"X-Token": "t"}, compression="deflate", user_agent="UA/1",
    )
    headers = client.request_headers
    assert headers["Host"] == "example.com:8443"
    assert headers["Authorization"] == "Basic dTpw"
    assert headers["Origin"] == "https://app.test"
    assert headers["Sec-WebSocket-Key"] == client.key
    assert headers["Sec-WebSocket-Protocol"] == "a, b"
    assert headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
    assert (headers["X-Token"], headers["User-Agent"]) == ("t", "UA/1")


def test_the_callers_user_agent_wins_and_none_omits() -> None:
    uri = parse_uri("ws://example.com/")
    assert ClientOpening(uri, extra_headers=[("User-Agent", "mine")], user_agent="UA/1").request_headers.get_all(
        "User-Agent"
    ) == ["mine"]
    headers = ClientOpening(uri, compression=None).request_headers
    assert "User-Agent" not in headers and "Sec-WebSocket-Extensions" not in headers


def answer(client: ClientOpening, status: int = 101, **extra: str) -> Response:
    headers = Headers([("Upgrade", "websocket"), ("Connection", "Upgrade")])
    headers["Sec-WebSocket-Accept"] = accept_key(client.key)
    for name, value in extra.items():
        headers[name.replace("_", "-")] = value
    return Response(status, "", headers)


def test_the_client_checks_the_answer() -> None:
    client = ClientOpening(parse_uri("ws://example.com/"), subprotocols=["chat"])
    assert client.check(answer(client, Sec_WebSocket_Protocol="chat")) == ("chat", [])
    assert client.check(answer(client)) == (None, [])
    with pytest.raises(InvalidHeader, match="Sec-WebSocket-Accept"):
        client.check(Response(101, "", Headers([("Upgrade", "websocket"), ("Connection", "Upgrade")])))
    with pytest.raises(NegotiationError, match="wasn't offered"):
        client.check(answer(client, Sec_WebSocket_Protocol="other"))
    with pytest.raises(InvalidHeader, match="one subprotocol"):
        client.check(answer(client, Sec_WebSocket_Protocol="chat, chat"))
    with pytest.raises(NegotiationError, match="x-unknown"):
        client.check(answer(client, Sec_WebSocket_Extensions="x-unknown"))


def test_the_client_refuses_deflate_it_didnt_offer_or_twice() -> None:
    without = ClientOpening(parse_uri("ws://example.com/"), compression=None)
    with pytest.raises(NegotiationError, match="wasn't offered"):
        without.check(answer(without, Sec_WebSocket_Extensions="permessage-deflate"))
    client = ClientOpening(parse_uri("ws://example.com/"))
    with pytest.raises(NegotiationError, match="twice"):
        client.check(answer(client, Sec_WebSocket_Extensions="permessage-deflate, permessage-deflate"))


def test_a_refusal_is_an_invalid_status_code_with_its_body() -> None:
    client = ClientOpening(parse_uri("ws://example.com/"))
    with pytest.raises(InvalidStatusCode) as excinfo:
        client.check(Response(403, "Forbidden", Headers([("X-Why", "no")])), b"go away")
    assert (excinfo.value.status_code, excinfo.value.body, excinfo.value.headers["X-Why"]) == (403, b"go away", "no")


# -- both sides, head to head -----------------------------------------------------------------


@pytest.mark.parametrize("compression", ["deflate", None, DeflateSettings(client_max_window_bits=10)])
def test_a_whole_opening_handshake_in_bytes(compression: Any) -> None:
    uri = parse_uri("ws://example.com/caf%C3%A9?room=1")
    client = ClientOpening(uri, subprotocols=["v2", "v1"], compression=compression)
    request_bytes = serialize_request(uri.resource_name, client.request_headers)

    hooks = ServerHooks()
    server_response = accept(
        read_request(io.BytesIO(request_bytes).readline),
        ServerPolicy(subprotocols=["v1", "v2"], compression=compression),
        hooks,
    )
    response_bytes = serialize_response(server_response.status_code, server_response.headers)

    subprotocol, extensions = client.check(read_response(io.BytesIO(response_bytes).readline))
    assert subprotocol == hooks.subprotocol == "v1"
    assert hooks.path == "/café?room=1"
    assert len(extensions) == len(hooks.extensions) == (0 if compression is None else 1)
