"""How syncws writes its log lines, so that every module writes them alike.

Loggers: ``syncws.server`` and ``syncws.client`` (or the ``logger=`` given
to :func:`~syncws.serve` / :func:`~syncws.connect`). Levels:

INFO
    The life of servers and connections, never anything per message::

        server listening on 127.0.0.1:8765
        connection 1a2b3c4d opened: peer 127.0.0.1:53210, path /chat, subprotocol chat, permessage-deflate
        connection 1a2b3c4d refused with 403 (Forbidden): peer 127.0.0.1:53210, path /chat: invalid Origin header: ...
        connection 1a2b3c4d closed: 1000 (OK) bye, after 12.34 s

DEBUG
    The handshake's heads and each frame::

        connection 1a2b3c4d request: GET /chat
          Host: localhost:8765
          ...

A connection is always named ``connection <the first 8 hex digits of its
id>``, an address ``host:port`` (``[v6]:port``, or the Unix socket's path),
and a close code with :func:`syncws.framing.describe_close`: ``1000 (OK)``.

No line carries a secret or raw peer text: paths and URIs go through
:func:`syncws.safetext.redact_uri` (query values and passwords left out),
and what the peer sent (close reasons, header values, subprotocols) through
:func:`syncws.safetext.escape`.
"""

from __future__ import annotations

import http
import logging
import threading
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from .framing import describe_close
from .safetext import REDACTED, escape, is_secret_header, redact_uri

__all__ = ["side_logger", "connection_label", "current_connection", "set_connection", "LazyLabel", "format_address", "format_head", "format_status", "opened_line", "closed_line"]


# The default loggers, looked up once (getLogger takes a lock).
_DEFAULT_LOGGERS = {side: logging.getLogger(f"syncws.{side}") for side in ("client", "server")}


def side_logger(logger: Union[logging.Logger, str, None], side: str) -> logging.Logger:
    """The logger a connection writes to.

    Args:
        logger: a logger, a logger's name, or ``None`` for ``syncws.<side>``.
        side: ``"client"`` or ``"server"``.
    """
    if logger is None:
        return _DEFAULT_LOGGERS.get(side) or logging.getLogger(f"syncws.{side}")
    return logging.getLogger(logger) if isinstance(logger, str) else logger


def connection_label(connection: Any) -> str:
    """Name a connection in log lines: ``connection 1a2b3c4d``.

    Args:
        connection: anything with a :class:`uuid.UUID` ``id``.

    Returns:
        The label.
    """
    return f"connection {connection.id.hex[:8]}"


class LazyLabel:
    """:func:`connection_label` of a connection, worked out when a line is logged.

    For a component that logs about a connection (its reader thread): passed
    as a ``%s`` argument, the label costs nothing unless the line is
    emitted. A connection draws its id on first use, so a connection that
    logs nothing never draws one.

    Args:
        connection: anything with a :class:`uuid.UUID` ``id``.
    """

    __slots__ = ("connection",)

    def __init__(self, connection: Any) -> None:
        #: The connection.
        self.connection = connection

    def __str__(self) -> str:
        return connection_label(self.connection)


# The connection each thread works for, by thread ident: see set_connection().
# A dict, not a threading.local, which costs each thread that sets it about
# 500 bytes more (a dict of its own).
_by_thread: Dict[int, Any] = {}


def set_connection(connection: Any) -> None:
    """Note the connection the calling thread now works for, ``None`` for none.

    A server's connection thread (handshake and handler) and a connection's
    reader thread call it as they start and end serving a connection, so
    that a log filter can tell which connection any line of theirs is about,
    a handler's own lines included (:class:`syncws.logconfig.ConnectionFilter`).
    Once per connection, never per message.

    Args:
        connection: the connection, or ``None``.
    """
    if connection is None:
        _by_thread.pop(threading.get_ident(), None)
    else:
        _by_thread[threading.get_ident()] = connection


def current_connection() -> Any:
    """The connection the calling thread works for (see :func:`set_connection`), or ``None``."""
    return _by_thread.get(threading.get_ident())


def format_address(address: Any) -> str:
    """Render a socket address: ``127.0.0.1:8765``, ``[::1]:8765``, a Unix path.

    Args:
        address: what ``getsockname()`` / ``getpeername()`` returned, or
            ``None`` when unknown.

    Returns:
        The address as text (``?`` when unknown, ``unix`` for an unnamed
        Unix socket).
    """
    if address is None:
        return "?"
    if isinstance(address, (str, bytes)):
        text = address.decode(errors="replace") if isinstance(address, bytes) else address
        return text or "unix"
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def format_status(status: int) -> str:
    """Render an HTTP status with its phrase: ``403 (Forbidden)``.

    Args:
        status: the status code.

    Returns:
        The status as text.
    """
    try:
        return f"{int(status)} ({http.HTTPStatus(status).phrase})"
    except ValueError:
        return str(int(status))


def format_head(start_line: str, headers: Iterable[Tuple[str, str]]) -> str:
    """Render an HTTP head for a DEBUG line, one header per indented line.

    Credentials are replaced by ``[redacted]``: ``Authorization`` and
    ``Proxy-Authorization`` (their scheme is kept when credentials follow
    it), cookies, and any header whose name says it holds one
    (``X-Api-Key``, ``X-Auth-Token``, ``Private-Token``, ...;
    ``Sec-WebSocket-Key`` is no secret). URIs in
    ``Location``, ``Content-Location`` and ``Referer`` go through
    :func:`~syncws.safetext.redact_uri`. Every value is escaped.

    Args:
        start_line: e.g. ``GET /chat`` or ``101 (Switching Protocols)``; a
            request target in it must be redacted already (``GET`` +
            :func:`~syncws.safetext.redact_uri` of the path).
        headers: ``(name, value)`` pairs.

    Returns:
        The head as text.
    """
    return "\n".join([escape(start_line)] + [f"  {name}: {_redacted(name, value)}" for name, value in headers])


_URI_HEADERS = frozenset({"location", "content-location", "referer"})


def _redacted(name: str, value: str) -> str:
    lowered = name.lower()
    if lowered in _URI_HEADERS:
        return redact_uri(value)
    if not is_secret_header(lowered):
        return escape(value)
    if lowered.endswith("authorization"):
        # "<scheme> <credentials>": a value without credentials after a
        # space is a bare token (sent without a scheme by many APIs).
        scheme, _, credentials = value.partition(" ")
        if credentials.strip():
            return f"{escape(scheme)} {REDACTED}"
    return REDACTED


def opened_line(connection: Any, path: str, subprotocol: Optional[str], extensions: Iterable[str] = ()) -> str:
    """The INFO line for a connection that completed its opening handshake.

    Args:
        connection: the connection (its ``id`` and ``remote_address``).
        path: the request path, shown without its query values.
        subprotocol: the negotiated subprotocol, if any.
        extensions: names of the negotiated extensions.

    Returns:
        The line (see the module's examples).
    """
    parts = [f"peer {format_address(connection.remote_address)}", f"path {redact_uri(path)}"]
    parts.append(f"subprotocol {escape(subprotocol)}" if subprotocol is not None else "no subprotocol")
    parts.extend(extensions)
    return f"{connection_label(connection)} opened: {', '.join(parts)}"


def closed_line(connection: Any, code: int, reason: str, duration: float) -> str:
    """The INFO line for a connection that closed (for the protocol layer).

    Args:
        connection: the connection.
        code: the close code (1006 when the TCP connection just dropped).
        reason: the close reason.
        duration: seconds since the connection opened.

    Returns:
        The line (see the module's examples).
    """
    return f"{connection_label(connection)} closed: {describe_close(code, reason)}, after {duration:.2f} s"
