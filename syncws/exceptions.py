"""Every exception syncws raises, in one hierarchy.

All of them derive from :exc:`WebSocketException`, so ``except
syncws.WebSocketException`` catches anything the library raises on purpose.
Timeouts are the built-in :exc:`TimeoutError` and network failures the
built-in :exc:`OSError`, as everywhere else in Python.

The tree::

    WebSocketException
    ├── InvalidHandshake
    │   ├── AbortHandshake
    │   ├── InvalidMessage
    │   │   └── HeadersTooLarge
    │   ├── InvalidHeader
    │   │   ├── InvalidOrigin
    │   │   └── InvalidUpgrade
    │   ├── InvalidStatusCode
    │   ├── NegotiationError
    │   └── ProxyError
    ├── ConcurrencyError (also a RuntimeError)
    ├── InvalidState
    │   └── ConnectionClosed
    │       ├── ConnectionClosedOK
    │       └── ConnectionClosedError
    ├── InvalidURI
    ├── PayloadTooBig
    ├── PublishError
    └── WebSocketProtocolError
"""

from __future__ import annotations

import http
from typing import Any, Iterable, Optional, Tuple

from .close_codes import describe_close
from .datastructures import Headers, ServerResponse
from .safetext import redact_invalid_uri

__all__ = [
    "WebSocketException",
    "InvalidHandshake",
    "AbortHandshake",
    "InvalidMessage",
    "HeadersTooLarge",
    "InvalidHeader",
    "InvalidOrigin",
    "InvalidUpgrade",
    "InvalidStatusCode",
    "NegotiationError",
    "ProxyError",
    "ConcurrencyError",
    "InvalidState",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "InvalidURI",
    "PayloadTooBig",
    "PublishError",
    "WebSocketProtocolError",
]


class WebSocketException(Exception):
    """Base class of every exception syncws raises on purpose."""


class InvalidHandshake(WebSocketException):
    """The opening handshake failed: the peer is not a valid WebSocket peer."""


class AbortHandshake(InvalidHandshake):
    """Raised on the server to answer plain HTTP instead of upgrading.

    Args:
        status: the HTTP status to answer with.
        headers: response headers, as a mapping or as ``(name, value)`` pairs.
        body: the response body.
    """

    def __init__(
        self,
        status: int,
        headers: Optional[Iterable[Tuple[str, str]]] = None,
        body: bytes = b"",
    ) -> None:
        self.status = http.HTTPStatus(status)
        self.headers = headers if headers is not None else []
        self.body = body
        super().__init__(
            f"HTTP {self.status.value} {self.status.phrase}, "
            f"{len(body)} bytes of body"
        )


class InvalidMessage(InvalidHandshake):
    """The HTTP request or response of the handshake is malformed."""


class HeadersTooLarge(InvalidMessage):
    """The HTTP head exceeds a limit (line length or number of headers).

    Args:
        message: what was too large, with the limit.
        limit: the limit that was hit.
    """

    def __init__(self, message: str, limit: int) -> None:
        self.limit = limit
        super().__init__(message)


class InvalidHeader(InvalidHandshake):
    """A handshake header is missing or has a wrong value.

    Args:
        name: the header's name.
        value: the value seen, ``None`` when the header is missing.
        reason: why the value is wrong, when it says more than "invalid".
    """

    def __init__(
        self, name: str, value: Optional[str] = None, reason: str = ""
    ) -> None:
        self.name = name
        self.value = value
        if value is None:
            message = f"missing {name} header"
        elif value == "":
            message = f"empty {name} header"
        else:
            message = f"invalid {name} header: {value!r}"
        if reason:
            message = f"{message} ({reason})"
        super().__init__(message)


class InvalidOrigin(InvalidHeader):
    """The ``Origin`` header of a request is not allowed by the server."""

    def __init__(self, origin: Optional[str]) -> None:
        super().__init__("Origin", origin, "not in the allowed origins")


class InvalidUpgrade(InvalidHeader):
    """The ``Upgrade`` or ``Connection`` header does not ask for WebSocket."""


class InvalidStatusCode(InvalidHandshake):
    """The server answered the handshake with a status other than 101.

    Raised as well for a redirect that :func:`~syncws.connect` won't follow
    (``wss://`` to ``ws://``, too many of them, no ``Location``), so that the
    caller has the whole response: ``Location``, ``Retry-After``...

    The message says the status (and why a redirect wasn't followed), never
    the body: an application that shows the error to whoever gave it the
    URI would show them what a server (an internal one, reached through a
    redirect) answered. The body is on :attr:`body` and :attr:`response`, as
    the server sent it: escape it (:func:`syncws.safetext.escape`) before
    printing it.

    Args:
        status_code: the HTTP status the server answered with.
        body: the start of the response body, when the server sent one.
        headers: the response headers (a :class:`syncws.http.Headers`); the
            seed's ``InvalidStatusCode(status_code, headers)`` is accepted
            too.
        detail: why a redirect wasn't followed, added to the message.

    Attributes:
        status_code: the HTTP status.
        headers: the response headers, empty when unknown.
        body: the start of the response body (at most 64 KiB).
        response: the three in one :class:`~syncws.ServerResponse`
            (``status_code``, ``headers``, ``body``), as websockets'
            ``InvalidStatus.response`` has them.
    """

    def __init__(
        self,
        status_code: int,
        body: Any = b"",
        headers: Any = None,
        *,
        detail: Optional[str] = None,
    ) -> None:
        if not isinstance(body, (bytes, bytearray, memoryview)):
            # The seed's form: InvalidStatusCode(status_code, headers).
            body, headers = b"", body
        self.status_code = status_code
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or ())
        self.body = bytes(body)
        self.response = ServerResponse(status_code, self.headers, self.body)
        message = f"server rejected WebSocket connection: HTTP {status_code}"
        if detail:
            message = f"{message} ({detail})"
        super().__init__(message)


class NegotiationError(InvalidHandshake):
    """An extension or subprotocol negotiation failed."""


class ProxyError(InvalidHandshake):
    """The HTTP proxy refused to open a tunnel (or isn't an HTTP proxy).

    Args:
        message: what went wrong, with the proxy's status when it sent one.
        status_code: the proxy's HTTP status, if it answered.
    """

    def __init__(self, message: str, status_code: Optional[int] = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class ConcurrencyError(WebSocketException, RuntimeError):
    """A connection was used from threads in a way that can't work.

    Raised by ``recv()`` / ``recv_streaming()`` while another thread is
    receiving (each would get a random share of the messages), and by a
    ``send()`` called from the iterable of a fragmented ``send()`` in the same
    thread (it would wait for itself): a bug in the caller, reported instead
    of silently sharing messages or hanging. ``send()`` from several threads
    is fine: each message waits for the one before.
    """


class InvalidState(WebSocketException):
    """An operation is not allowed in the connection's current state."""


class ConnectionClosed(InvalidState):
    """The connection is closed; raised by operations on it.

    Args:
        code: the connection's close code: the code of the close frame
            received (1005 if it had none), or 1006 when none was received
            or ours wasn't sent.
        reason: the connection's close reason: the reason of the close frame
            received, or else what ended the connection.

    ``code`` and ``reason`` always equal the connection's ``close_code`` and
    ``close_reason``; the close frame this side sent, if any, is the
    connection's ``close_sent``.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed: {describe_close(code, reason)}")


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally (1000, 1001, or 1005: a close frame without a code)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error (any code but 1000, 1001 and 1005)."""


class InvalidURI(WebSocketException):
    """A URI is not a valid ``ws://`` or ``wss://`` URI.

    The message shows the URI without its user info's password and query
    values (:func:`syncws.safetext.redact_invalid_uri`: where the password of
    an invalid URI ends can't be known, so everything before its last ``@``
    is left out), and the reason quotes no part that may hold one;
    :attr:`uri` holds the URI whole.

    Args:
        uri: the URI.
        reason: what is wrong with it.
    """

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"'{redact_invalid_uri(uri)}' isn't a valid WebSocket URI: {reason}")


class PayloadTooBig(WebSocketException):
    """A frame or message exceeds ``max_size`` (close code 1009)."""


class PublishError(WebSocketException):
    """A message couldn't be handed to the message broker (it is not sent).

    Raised by :meth:`syncws.fanout.RedisFanout.publish`; importable from
    :mod:`syncws.fanout` too.
    """


class WebSocketProtocolError(WebSocketException):
    """The peer broke RFC 6455 (close code 1002, or 1007 for bad UTF-8).

    Args:
        message: what the peer did wrong.
        code: the close code this failure calls for.
    """

    def __init__(self, message: str, code: int = 1002) -> None:
        self.code = code
        super().__init__(message)
