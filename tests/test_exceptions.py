"""Tests for syncws.exceptions: the hierarchy, attributes and messages."""

from __future__ import annotations

import http

import pytest

import syncws
from syncws import exceptions
from syncws.exceptions import (
    AbortHandshake,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HeadersTooLarge,
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidOrigin,
    ConcurrencyError,
    InvalidState,
    InvalidStatusCode,
    InvalidUpgrade,
    InvalidURI,
    NegotiationError,
    PayloadTooBig,
    ProxyError,
    PublishError,
    WebSocketException,
    WebSocketProtocolError,
)
from syncws.hooks import ServerResponse
from syncws.http import Headers

# Each exception and its direct parent, as the module docstring draws the tree.
PARENTS = {
    InvalidHandshake: WebSocketException,
    AbortHandshake: InvalidHandshake,
    InvalidMessage: InvalidHandshake,
    HeadersTooLarge: InvalidMessage,
    InvalidHeader: InvalidHandshake,
    InvalidOrigin: InvalidHeader,
    InvalidUpgrade: InvalidHeader,
    InvalidStatusCode: InvalidHandshake,
    NegotiationError: InvalidHandshake,
    ProxyError: InvalidHandshake,
    InvalidState: WebSocketException,
    ConcurrencyError: WebSocketException,
    ConnectionClosed: InvalidState,
    ConnectionClosedOK: ConnectionClosed,
    ConnectionClosedError: ConnectionClosed,
    InvalidURI: WebSocketException,
    PayloadTooBig: WebSocketException,
    PublishError: WebSocketException,
    WebSocketProtocolError: WebSocketException,
}


def test_all_lists_every_exception() -> None:
    assert set(exceptions.__all__) == {cls.__name__ for cls in PARENTS} | {"WebSocketException"}
    for name in exceptions.__all__:
        assert getattr(syncws, name) is getattr(exceptions, name)


@pytest.mark.parametrize("cls, parent", PARENTS.items(), ids=lambda c: getattr(c, "__name__", ""))
def test_direct_parent(cls: type, parent: type) -> None:
    # ConcurrencyError is also a RuntimeError: a bug in the caller.
    assert cls.__bases__ == ((parent, RuntimeError) if cls is ConcurrencyError else (parent,))
    assert issubclass(cls, WebSocketException)
    assert issubclass(cls, Exception)


def test_base_is_a_plain_exception() -> None:
    assert WebSocketException.__bases__ == (Exception,)


def test_timeouts_and_network_errors_are_builtins() -> None:
    # Nothing in the tree pretends to be a timeout or an OSError.
    for cls in PARENTS:
        assert not issubclass(cls, (TimeoutError, OSError))


def test_connection_closed_message() -> None:
    exc = ConnectionClosed(1000, "bye")
    assert exc.code == 1000
    assert exc.reason == "bye"
    assert str(exc) == "connection closed: 1000 (OK) bye"
    for part in ("1000", "OK", "bye"):
        assert part in str(exc)


def test_connection_closed_without_reason() -> None:
    assert str(ConnectionClosedError(1006)) == "connection closed: 1006 (abnormal closure)"
    assert ConnectionClosedError(1006).reason == ""


def test_connection_closed_other_codes() -> None:
    assert str(ConnectionClosedError(4001, "custom")) == "connection closed: 4001 (private use) custom"
    assert str(ConnectionClosedError(3000)) == "connection closed: 3000 (registered)"
    assert str(ConnectionClosedOK(1001, "shutdown")) == "connection closed: 1001 (going away) shutdown"
    assert str(ConnectionClosedError(1009, "")) == "connection closed: 1009 (message too big)"


def test_connection_closed_caught_as_invalid_state() -> None:
    with pytest.raises(InvalidState):
        raise ConnectionClosedOK(1000)
    with pytest.raises(ConnectionClosed):
        raise ConnectionClosedError(1011, "oops")


def test_invalid_status_code() -> None:
    exc = InvalidStatusCode(403)
    assert exc.status_code == 403
    assert exc.body == b""
    assert str(exc) == "server rejected WebSocket connection: HTTP 403"


def test_invalid_status_code_keeps_the_body_out_of_its_message() -> None:
    # What a server answered is no message for whoever sees the error: it
    # may be an internal service's answer, reached through a redirect.
    body = b"\x1b]0;pwned\x07AccessKeyId: AKIA...\n"
    exc = InvalidStatusCode(200, body)
    assert exc.status_code == 200
    assert exc.body == body
    assert str(exc) == "server rejected WebSocket connection: HTTP 200"



def test_invalid_status_code_has_the_response() -> None:
    # As websockets' InvalidStatus.response: status, headers and body in one.
    body = b"\x1b]0;pwned\x07AccessKeyId: AKIA...\n"
    exc = InvalidStatusCode(403, body, Headers([("Content-Type", "text/plain")]))
    assert isinstance(exc.response, ServerResponse)
    assert exc.response.status_code == 403
    assert exc.response.headers["Content-Type"] == "text/plain"
    assert exc.response.body == body
    status, headers, response_body = exc.response  # as process_request's triple
    assert (status, headers, response_body) == (403, exc.headers, body)
    assert str(exc) == "server rejected WebSocket connection: HTTP 403"
    assert "AKIA" not in repr(exc)
    # The seed's form, InvalidStatusCode(status_code, headers).
    seed = InvalidStatusCode(404, Headers([("Server", "x")]))
    assert seed.response == (404, seed.headers, b"")
    assert seed.response.headers["Server"] == "x"


def test_invalid_header_missing() -> None:
    exc = InvalidHeader("Sec-WebSocket-Key")
    assert (exc.name, exc.value) == ("Sec-WebSocket-Key", None)
    assert str(exc) == "missing Sec-WebSocket-Key header"


def test_invalid_header_empty() -> None:
    exc = InvalidHeader("Upgrade", "")
    assert exc.value == ""
    assert str(exc) == "empty Upgrade header"


def test_invalid_header_invalid() -> None:
    assert str(InvalidHeader("Upgrade", "h2c")) == "invalid Upgrade header: 'h2c'"
    assert str(InvalidHeader("Sec-WebSocket-Version", "12", "expected 13")) == (
        "invalid Sec-WebSocket-Version header: '12' (expected 13)"
    )
    assert str(InvalidHeader("Host", None, "required")) == "missing Host header (required)"


def test_invalid_origin() -> None:
    exc = InvalidOrigin("https://evil.example")
    assert exc.name == "Origin"
    assert exc.value == "https://evil.example"
    assert str(exc) == "invalid Origin header: 'https://evil.example' (not in the allowed origins)"
    assert str(InvalidOrigin(None)) == "missing Origin header (not in the allowed origins)"


def test_invalid_upgrade() -> None:
    exc = InvalidUpgrade("Connection", "close")
    assert isinstance(exc, InvalidHeader)
    assert str(exc) == "invalid Connection header: 'close'"


def test_invalid_uri() -> None:
    exc = InvalidURI("http://example.com/", "scheme isn't ws or wss")
    assert exc.uri == "http://example.com/"
    assert exc.reason == "scheme isn't ws or wss"
    assert str(exc) == "'http://example.com/' isn't a valid WebSocket URI: scheme isn't ws or wss"


def test_abort_handshake_attributes() -> None:
    exc = AbortHandshake(403, [("Content-Type", "text/plain")], b"forbidden")
    assert exc.status is http.HTTPStatus.FORBIDDEN
    assert exc.status == 403
    assert exc.headers == [("Content-Type", "text/plain")]
    assert exc.body == b"forbidden"
    assert str(exc) == "HTTP 403 Forbidden, 9 bytes of body"


def test_abort_handshake_defaults() -> None:
    exc = AbortHandshake(http.HTTPStatus.SERVICE_UNAVAILABLE)
    assert exc.status is http.HTTPStatus.SERVICE_UNAVAILABLE
    assert exc.headers == []
    assert exc.body == b""
    assert str(exc) == "HTTP 503 Service Unavailable, 0 bytes of body"
    # Each instance gets its own list.
    assert AbortHandshake(503).headers is not exc.headers


def test_abort_handshake_headers_mapping_kept() -> None:
    headers = {"Retry-After": "5"}
    assert AbortHandshake(429, headers).headers is headers


def test_headers_too_large() -> None:
    exc = HeadersTooLarge("too many headers (limit 128)", 128)
    assert exc.limit == 128
    assert str(exc) == "too many headers (limit 128)"
    assert isinstance(exc, InvalidMessage)


def test_proxy_error() -> None:
    exc = ProxyError("proxy refused CONNECT: HTTP 407", 407)
    assert exc.status_code == 407
    assert str(exc) == "proxy refused CONNECT: HTTP 407"
    assert ProxyError("not an HTTP proxy").status_code is None


def test_protocol_error_codes() -> None:
    exc = WebSocketProtocolError("bad frame")
    assert exc.code == 1002
    assert str(exc) == "bad frame"
    assert WebSocketProtocolError("bad UTF-8", code=1007).code == 1007


def test_payload_too_big_message() -> None:
    assert str(PayloadTooBig("frame of 11 bytes exceeds max_size=10")) == "frame of 11 bytes exceeds max_size=10"
