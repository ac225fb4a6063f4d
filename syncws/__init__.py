"""syncws: a thread-based, synchronous WebSocket client and server.

Everything public is importable from here, except the low-level modules,
which are imported by module: :mod:`syncws.framing`, :mod:`syncws.handshake`,
:mod:`syncws.uri` and :mod:`syncws.http`.

*The seed*, in docstrings and comments, is the API syncws adapts to threads:
that of websockets' legacy (asyncio) implementation, whose names and
signatures syncws keeps (``serve(ws_handler, host, port)``,
``WebSocketServerProtocol.get_response_status(set_header)``, ``timeout``,
``extra_headers``...) beside the modern ones. A "seed name" is such a name.
"""

from .broadcast import broadcast
from .auth import basic_auth
from .client import Reconnect, WebSocketClientProtocol, connect, reconnect, unix_connect
from .exceptions import (
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
from .extensions.permessage_deflate import DeflateSettings
from .hooks import ServerResponse, respond
from .datastructures import Headers
from .protocol import State, Stats, WebSocketCommonProtocol
from .server import WebSocketServer, serve, unix_serve
from .serverprotocol import WebSocketServerProtocol
from .version import __version__

__all__ = [
    "AbortHandshake",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DeflateSettings",
    "Headers",
    "HeadersTooLarge",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidMessage",
    "InvalidOrigin",
    "ConcurrencyError",
    "InvalidState",
    "InvalidStatusCode",
    "InvalidUpgrade",
    "InvalidURI",
    "NegotiationError",
    "PayloadTooBig",
    "ServerResponse",
    "ProxyError",
    "PublishError",
    "Reconnect",
    "State",
    "Stats",
    "WebSocketClientProtocol",
    "WebSocketCommonProtocol",
    "WebSocketException",
    "WebSocketProtocolError",
    "WebSocketServer",
    "WebSocketServerProtocol",
    "__version__",
    "basic_auth",
    "broadcast",
    "connect",
    "reconnect",
    "respond",
    "serve",
    "unix_connect",
    "unix_serve",
]
