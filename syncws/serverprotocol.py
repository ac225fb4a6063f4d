"""The server's side of a connection: :class:`WebSocketServerProtocol`.

Theory of operation: a server's connection thread (:mod:`syncws.server`),
or :func:`syncws.wsgi.accept`, makes one per connection. Over the
connection's transport, :meth:`~WebSocketServerProtocol.handshake` reads the
request, has :func:`syncws.opening.accept` decide the answer (the
connection's methods are the application's hooks: see
:class:`~syncws.opening.ServerHooks`), and writes the 101, ordered against
the server's shutdown; a failed handshake is answered with plain HTTP and the
connection dropped. Once open, the connection is the
:class:`~syncws.protocol.WebSocketCommonProtocol` both sides share.
"""

from __future__ import annotations

import http
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Sequence, Tuple, Type

from . import metrics, opening, timers
from .exceptions import AbortHandshake, InvalidHandshake
from .extensions import permessage_deflate
from .hooks import Origins, ProcessResponse, ServerResponse, as_response, respond
from .http import Headers, HeadersLike, Request, read_request, serialize_response
from .logs import connection_label, format_address, format_head, format_status, opened_line
from .opening import ServerHooks, ServerPolicy, call_process_request, hook_bug, http_answer, serialize_answer
from .protocol import WebSocketCommonProtocol
from .safetext import redact_uri
from .transport import Transport, send_last
from .version import __version__

if TYPE_CHECKING:
    import ssl as ssl_module  # ssl costs megabytes of memory: imported only for wss://

    from .server import WebSocketServer

__all__ = ["WebSocketServerProtocol", "SERVER_HEADER", "runs_own_hooks", "send_http_answer"]

#: The default ``Server`` header.
SERVER_HEADER = f"Python syncws/{__version__}"

ProcessRequest = Callable[[str, Headers], Optional[Tuple[int, HeadersLike, bytes]]]
SelectSubprotocol = Callable[["WebSocketServerProtocol", Sequence[str]], Optional[str]]


class WebSocketServerProtocol(WebSocketCommonProtocol, ServerHooks):
    """The server side of a connection, as handlers receive it.

    Args:
        ws_handler: the application's handler; ``None`` when the caller runs
            its own (as :mod:`syncws.wsgi` does).
        ws_server: the :class:`WebSocketServer` the connection belongs to;
            ``None`` for a connection a WSGI server accepted
            (:mod:`syncws.wsgi`).
        origins: allowed ``Origin`` values (``None`` in the list admits a
            request without ``Origin``); ``None`` allows any.
        subprotocols: the server's subprotocols, in order of preference.
        extra_headers: headers added to the 101 response: a mapping, pairs,
            or a callable ``(path, request_headers)`` returning either.
        compression: ``"deflate"``, ``None`` or a ``DeflateSettings``.
        process_request: ``(path, request_headers)`` returning ``None`` to go
            on with the handshake or ``(status, headers, body)`` to answer
            plain HTTP.
        server_header: the ``Server`` header; ``None`` omits it.
        select_subprotocol: ``(connection, client_subprotocols)`` returning
            the subprotocol to use or ``None``, instead of
            :meth:`select_subprotocol`'s policy.
        process_response: ``(connection, request, response)``, called with
            every response of the handshake (see :mod:`syncws.hooks`).
        policy: the :class:`~syncws.opening.ServerPolicy` of ``origins``,
            ``subprotocols``, ``extra_headers``, ``compression``,
            ``server_header`` and ``select_subprotocol``, when the server
            built it once for all its connections; ``None`` builds it here.
        **kwargs: the keyword arguments of
            :class:`~syncws.protocol.WebSocketCommonProtocol`.

    Inside :meth:`get_response_status` (and after the handshake), ``origin``,
    ``path`` (decoded: see :mod:`syncws.paths`), ``request_target`` (as
    received), ``raw_request_headers`` and ``request_headers`` are set.

    Its methods :meth:`process_request`, :meth:`select_subprotocol`,
    :meth:`get_response_status` and :meth:`process_response` are the hooks
    that :func:`syncws.opening.accept` calls (see
    :class:`~syncws.opening.ServerHooks`); a subclass passed as
    ``create_protocol`` overrides them.
    """

    is_client = False
    side = "server"

    # As WebSocketCommonProtocol's, for the same reason.
    __slots__ = (
        "ws_handler", "ws_server", "origins", "available_subprotocols", "extra_headers", "compression",
        "_process_request", "server_header", "_select_subprotocol", "_process_response_hook", "request",
        "username", "origin", "_handshake_lock", "_handshake_answered",
        "_handshake_cancelled", "policy",
    )

    def __init__(
        self,
        ws_handler: Optional[Callable[..., Any]],
        ws_server: Optional["WebSocketServer"],
        *,
        origins: Optional[Origins] = None,
        subprotocols: Optional[Sequence[str]] = None,
        extra_headers: Any = None,
        compression: Any = "deflate",
        process_request: Optional[ProcessRequest] = None,
        server_header: Optional[str] = SERVER_HEADER,
        select_subprotocol: Optional[SelectSubprotocol] = None,
        process_response: Optional[ProcessResponse] = None,
        policy: Optional[ServerPolicy] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ws_handler = ws_handler
        self.ws_server = ws_server
        self.counters = metrics.wsgi_counters if ws_server is None else ws_server.counters
        self.origins = origins
        self.available_subprotocols = subprotocols
        self.extra_headers = extra_headers
        self.compression = compression
        self._process_request = process_request
        self.server_header = server_header
        self._select_subprotocol = select_subprotocol
        self._process_response_hook = process_response
        #: What the server accepts, as :func:`syncws.opening.accept` reads it.
        self.policy = policy or ServerPolicy(
            origins, subprotocols, extra_headers, compression, server_header, select_subprotocol
        )
        #: The opening handshake's request, once read.
        self.request: Optional[Request] = None
        #: The user name :func:`~syncws.basic_auth` authenticated, or ``None``.
        self.username: Optional[str] = None
        #: The ``Origin`` header of the request, or ``None``.
        self.origin: Optional[str] = None
        # Orders the 101 response against WebSocketServer.close(): the
        # server either cancels the handshake before the 101 goes out, or
        # lets it through and then closes the open connection. The flags
        # below are set under it.
        self._handshake_lock = threading.Lock()
        self._handshake_answered = False
        self._handshake_cancelled = False

    @property
    def request_target(self) -> str:
        """The request-target as received (``/%70rivate?x=1``); empty before the request.

        Not what decisions use: :attr:`path` is its decoded form (see
        :mod:`syncws.paths`), which ``process_request``, ``extra_headers``
        and the handler get (without an encoded ``?`` or ``#``: refused).
        """
        return "" if self.request is None else self.request.path

    @property
    def raw_request_headers(self) -> List[Tuple[str, str]]:
        """The request headers as ``(name, value)`` pairs, as received; empty before the request."""
        return [] if self.request is None else self.request.headers.items()

    def process_request(self, path: str, request_headers: Headers) -> Optional[Tuple[int, HeadersLike, bytes]]:
        """Intercept a request before the WebSocket handshake.

        By default, calls the ``process_request`` given to :func:`serve`.

        Args:
            path: the request path, decoded (:mod:`syncws.paths`), with its
                query as received; :attr:`request_target` holds the
                request-target as received.
            request_headers: the request headers.

        Returns:
            ``None`` to go on with the handshake, or ``(status, headers,
            body)`` to answer with plain HTTP (health checks, 401s).
        """
        answer: Optional[Tuple[int, HeadersLike, bytes]]
        answer, self.username = call_process_request(self._process_request, path, request_headers)
        return answer

    def respond(self, status: int, text: str) -> ServerResponse:
        """Build a plain-text HTTP response (see :func:`syncws.hooks.respond`).

        Args:
            status: the HTTP status.
            text: the body.

        Returns:
            The response, to return from ``process_request`` or
            ``process_response``.
        """
        return respond(status, text)

    def process_response(self, request: Request, response: ServerResponse) -> ServerResponse:
        """Give the ``process_response`` hook of :func:`serve` the last word.

        Called once per handshake, with the 101 or with the plain HTTP
        answer (refusals included).

        Args:
            request: the request.
            response: the response about to be sent.

        Returns:
            The response to send: the hook's, or ``response`` (its headers
            possibly changed in place).
        """
        if self._process_response_hook is None:
            return response
        answer = self._process_response_hook(self, request, response)
        return response if answer is None else as_response(answer, "process_response")

    def select_subprotocol(
        self, client_protos: Sequence[str], server_protos: Sequence[str]
    ) -> Optional[str]:
        """Pick the subprotocol: the server's most preferred one the client offers.

        Override it for another policy, or pass ``select_subprotocol`` to
        :func:`serve`, which is then called instead.

        Args:
            client_protos: the client's subprotocols, in its order.
            server_protos: the server's subprotocols, in order of preference.

        Returns:
            The chosen subprotocol, or ``None`` to use none.
        """
        if self._select_subprotocol is not None:
            return self._select_subprotocol(self, client_protos)
        return super().select_subprotocol(client_protos, server_protos)

    def handshake(
        self,
        origins: Optional[Origins] = None,
        subprotocols: Optional[Sequence[str]] = None,
        extra_headers: Any = None,
    ) -> str:
        """Read the client's request and answer it with 101.

        Args:
            origins: allowed origins, as for :func:`serve`.
            subprotocols: the server's subprotocols.
            extra_headers: headers for the 101 response.

        Returns:
            The request path, decoded (see :attr:`path`).

        Raises:
            AbortHandshake: the request is answered with plain HTTP
                instead (the status, headers and body are on the exception).
            InvalidHandshake: the request isn't a valid handshake (the
                server answers 400, 403, 405, 426 or 431 from it).
        """
        transport = self.transport
        assert transport is not None, "connection_made() must come first"
        request = read_request(transport.read_line, read_head=transport.read_head)
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(
                "%s request: %s", connection_label(self),
                format_head(f"{request.method} {redact_uri(request.path)}", request.headers.items()),
            )
        response_headers = self.negotiate(request, origins, subprotocols, extra_headers)
        self.response_headers = response_headers
        # Ordered against _cancel_handshake(): a server that is closing
        # either cancels the handshake before the 101 goes out, or lets it
        # through and then closes the open connection with its close code.
        with self._handshake_lock:
            if self._handshake_cancelled:
                raise AbortHandshake(
                    http.HTTPStatus.SERVICE_UNAVAILABLE, [],
                    b"Failed to open a WebSocket connection: the server is shutting down.\n",
                )
            transport.write(serialize_response(101, response_headers), None)
            self._handshake_answered = True
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(
                "%s response: %s", connection_label(self), format_head(format_status(101), response_headers.items())
            )
        if self.logger.isEnabledFor(logging.INFO):
            extensions = [permessage_deflate.EXTENSION_NAME] if self.extensions else []
            self.logger.info("%s", opened_line(self, request.path, self.subprotocol, extensions))
        return self.path

    def negotiate(
        self,
        request: Request,
        origins: Optional[Origins] = None,
        subprotocols: Optional[Sequence[str]] = None,
        extra_headers: Any = None,
        *,
        path: Optional[str] = None,
    ) -> Headers:
        """Decide the answer to a parsed handshake request, writing nothing.

        :func:`syncws.opening.accept` with this connection's options and
        hooks: it checks the request (method, :meth:`process_request`, the
        WebSocket headers, origins, :meth:`get_response_status`), negotiates
        the subprotocol and permessage-deflate, runs
        :meth:`process_response`, and sets ``request``, ``path``,
        ``request_headers``, ``origin``, ``subprotocol`` and ``extensions``.

        Args:
            request: the request's method, path and headers.
            origins: allowed origins, as for :func:`serve`.
            subprotocols: the server's subprotocols.
            extra_headers: headers for the 101 response.
            path: the request's decoded path (see :mod:`syncws.paths`) when
                the caller decoded it already, as a WSGI server does;
                ``None`` decodes ``request.path``, the request-target.

        Returns:
            The headers of the 101 response.

        Raises:
            AbortHandshake: the request is to be answered with plain HTTP
                instead (the status, headers and body are on the exception,
                after :meth:`process_response`; its ``__cause__`` says why).
            Exception: what :meth:`process_response` raised.
        """
        policy = self.policy
        if origins is not policy.origins or subprotocols is not policy.subprotocols or (
            extra_headers is not policy.extra_headers
        ):
            # A handshake() called with other options than the connection's.
            policy = policy._replace(origins=origins, subprotocols=subprotocols, extra_headers=extra_headers)
        return opening.accept(request, policy, self, path=path).headers

    def _cancel_handshake(self) -> None:
        """Drop a connection whose opening handshake isn't answered yet.

        Called by :meth:`WebSocketServer.close`; never blocks for long (the
        lock is held only while a 101 response is written).
        """
        with self._handshake_lock:
            if not self._handshake_answered:
                self._handshake_cancelled = True
                if self.transport is not None:
                    self.transport.abort()

    def _run(self, transport: Transport, ssl_context: Optional[ssl_module.SSLContext],
             open_timeout: Optional[float]) -> bool:
        """Set the connection up; return whether the handler should run."""
        with self._handshake_lock:
            self.connection_made(transport)
            if self._handshake_cancelled:  # the server closed before the transport was known
                transport.abort()
        # The deadline shuts the socket down, which ends whatever step of
        # the handshake is blocked; `expired` tells that from a real error.
        with timers.deadline(open_timeout, transport.abort) as handshake_deadline:
            try:
                if ssl_context is not None:
                    transport.start_tls(ssl_context, server_side=True)
                self.handshake(self.origins, self.available_subprotocols, self.extra_headers)
            except (OSError, InvalidHandshake) as exc:
                if handshake_deadline.expired:
                    self.logger.info("%s: opening handshake timed out", self)
                    self.abort("the opening handshake timed out")
                    return False
                self._refuse(exc)
                return False
            except Exception:
                # A bug in process_response (syncws.opening.accept answers
                # the other hooks' with 500 itself): answer 500 and keep
                # serving.
                self.logger.exception("%s: the opening handshake raised", self)
                self._refuse(AbortHandshake(
                    http.HTTPStatus.INTERNAL_SERVER_ERROR, [],
                    b"Failed to open a WebSocket connection: internal server error.\n",
                ))
                return False
        if handshake_deadline.expired:
            self.abort("the opening handshake timed out")
            return False
        self.connection_open()
        return True

    def _refuse(self, exc: Exception) -> None:
        """Answer a failed handshake with plain HTTP, then close.

        ``exc`` is what reading the request or :meth:`handshake` raised; a
        refusal of :func:`syncws.opening.accept` holds its final answer,
        and why in its ``__cause__``.
        """
        answer = http_answer(exc)
        cause = exc.__cause__ if isinstance(exc, AbortHandshake) and exc.__cause__ is not None else exc
        bug = hook_bug(exc)
        if bug is not None:
            self.logger.error("%s: the opening handshake raised", self, exc_info=bug)
        if answer is None:
            # Nothing worth answering: the client left, or TLS failed.
            self.logger.debug("%s: handshake failed: %r", self, exc)
        else:
            status, headers, body = answer
            if status >= 400 and self.counters is not None:
                self.counters.refused(status)
            # A page process_request serves (a health check, a chat page)
            # is no refusal: only errors are logged at INFO.
            self.logger.log(
                logging.INFO if status >= 400 else logging.DEBUG,
                "%s %s with %s: peer %s, path %s: %s", connection_label(self),
                "refused" if status >= 400 else "answered", format_status(status),
                format_address(self.remote_address), redact_uri(self.request.path) if self.request else "?", cause,
            )
            assert self.transport is not None
            self.transport.send_last(serialize_answer(status, headers, body, self.server_header))
        self.abort(f"the opening handshake failed: {exc}")


# The methods of WebSocketServerProtocol that syncws.opening.accept() calls.
_HOOKS = ("process_request", "select_subprotocol", "get_response_status", "process_response")


def runs_own_hooks(protocol_class: Type[WebSocketServerProtocol]) -> bool:
    """Whether a ``create_protocol`` class overrides a hook of the opening handshake.

    When it doesn't, a handshake can be negotiated before its connection is
    made, with :class:`~syncws.opening.RequestHooks`.

    Args:
        protocol_class: :class:`WebSocketServerProtocol` or a subclass.

    Returns:
        ``True`` when one of its hooks isn't :class:`WebSocketServerProtocol`'s.
    """
    return any(getattr(protocol_class, name) is not getattr(WebSocketServerProtocol, name) for name in _HOOKS)


def send_http_answer(
    sock: socket.socket,
    status: int,
    headers: Iterable[Tuple[str, str]],
    body: bytes,
    server_header: Optional[str],
) -> None:
    """Answer with plain HTTP on a socket that has no transport, then our FIN.

    The server's accept thread answers 503 with it, and :mod:`syncws.wsgi`
    its refusals, on the WSGI server's socket: every refusal says
    ``Connection: close`` and ends the connection (a keep-alive server would
    otherwise read the next request, or the client's first frames, from it).
    Errors writing are ignored: the client left.

    Args:
        sock: the connected socket.
        status, headers, body, server_header: the answer, as for
            :func:`syncws.opening.serialize_answer`.
    """
    send_last(sock, serialize_answer(status, headers, body, server_header))
