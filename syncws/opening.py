"""The opening handshake's policy, server and client side, with no I/O.

Theory of operation: :mod:`syncws.handshake` holds the rules of RFC 6455 §4
(the headers a request and a response must carry, and their grammars); this
module holds the decisions around them. It reads parsed heads
(:class:`~syncws.http.Request`, :class:`~syncws.http.Response`) and returns
responses or raises, and it never touches a socket nor a connection:
:func:`~syncws.serve`, :func:`syncws.wsgi.accept` and :func:`~syncws.connect`
read and write the heads, and call it in between.

The server's side is :func:`accept`: a request in, a response out, the 101
or a refusal. It checks, in this order: the method (405), what any request
must satisfy (one ``Host``, one origin, no body: 400), the application's
``process_request`` (which may answer instead), the WebSocket headers (426
or 400), the allowed origins (403); then it picks the subprotocol and
permessage-deflate, lets ``get_response_status`` refuse, and builds the 101
with ``extra_headers`` and ``Server``. Every response it decides, refusals
included, goes through ``process_response`` once, which has the last word.
The application's hooks are the methods of a :class:`ServerHooks`:
:class:`~syncws.WebSocketServerProtocol` is one, whose methods run the hooks
given to :func:`~syncws.serve`, and a subclass of it overrides them as the
seed allows; :class:`RequestHooks` is one that no connection carries, for
negotiating before a connection is made. :func:`http_answer` maps a failure to its HTTP refusal, and
:func:`serialize_answer` writes a refusal that closes the connection.

The client's side is :class:`ClientOpening`: the request's headers (the key,
the offered subprotocols and permessage-deflate, the caller's headers), then
the check of the server's answer: the status, the key's answer, and that the
subprotocol and extensions chosen were offered.
"""

from __future__ import annotations

import base64
import http
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from . import handshake
from .auth import BasicAuth
from .datastructures import Headers, HeadersLike, ServerResponse
from .exceptions import (
    AbortHandshake,
    HeadersTooLarge,
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidOrigin,
    InvalidStatusCode,
    InvalidUpgrade,
    NegotiationError,
)
from .extensions import permessage_deflate
from .hooks import Origins, as_response, origin_allowed
from .http import Request, Response, serialize_response
from .paths import decode_target
from .uri import WebSocketURI, host_header

__all__ = [
    "ServerPolicy",
    "ServerHooks",
    "RequestHooks",
    "call_process_request",
    "accept",
    "hook_bug",
    "http_answer",
    "serialize_answer",
    "ClientOpening",
]

# Read once: every http.HTTPStatus.SWITCHING_PROTOCOLS is a lookup through
# the enum's metaclass, and every handshake reads it.
_SWITCHING_PROTOCOLS = http.HTTPStatus.SWITCHING_PROTOCOLS

_INTERNAL_ERROR_BODY = b"Failed to open a WebSocket connection: internal server error.\n"


# -- the server's side ------------------------------------------------------


class ServerPolicy(NamedTuple):
    """What a server accepts, as :func:`~syncws.serve` was told.

    Attributes:
        origins: allowed ``Origin`` values (see :data:`syncws.hooks.Origins`);
            ``None`` allows any.
        subprotocols: the server's subprotocols, in order of preference.
        extra_headers: headers added to the 101: a mapping, pairs, or a
            callable ``(path, request_headers)`` returning either.
        compression: ``"deflate"``, ``None`` or a
            :class:`~syncws.extensions.permessage_deflate.DeflateSettings`.
        server_header: the ``Server`` header; ``None`` omits it.
        select_subprotocol: the ``select_subprotocol`` hook given to
            :func:`~syncws.serve`, if any: with one, the hooks'
            :meth:`~ServerHooks.select_subprotocol` is asked even when the
            server lists no subprotocols.
    """

    origins: Optional[Origins] = None
    subprotocols: Optional[Sequence[str]] = None
    extra_headers: Any = None
    compression: Any = "deflate"
    server_header: Optional[str] = None
    select_subprotocol: Any = None


class ServerHooks:
    """One server-side opening handshake as the application sees it.

    Its methods are the hooks of the handshake, with their defaults: a
    subclass overrides them (:class:`~syncws.WebSocketServerProtocol` is
    one). :func:`accept` sets the attributes as it goes, before it calls the
    hooks that may read them (as the seed's ``get_response_status`` reads
    ``origin`` and ``path``).

    Attributes:
        request: the request.
        path: its path, decoded (see :mod:`syncws.paths`), and its query.
        request_headers: its headers.
        origin: its ``Origin`` header, ``None`` when absent.
        subprotocol: the subprotocol chosen, ``None`` for none.
        extensions: the extensions accepted (the permessage-deflate codec).
    """

    request: Optional[Request]
    path: str
    request_headers: Any
    origin: Optional[str]
    subprotocol: Optional[str]
    extensions: List[Any]

    def process_request(self, path: str, request_headers: Headers) -> Any:
        """Intercept the request before the WebSocket handshake.

        Args:
            path: the request path, decoded, with its query.
            request_headers: the request headers.

        Returns:
            ``None`` to go on with the handshake, or ``(status, headers,
            body)`` to answer with plain HTTP. By default ``None``.
        """
        return None

    def select_subprotocol(self, client_protos: Sequence[str], server_protos: Sequence[str]) -> Optional[str]:
        """Pick the subprotocol: by default the server's most preferred one the client offers.

        Args:
            client_protos: the client's subprotocols, in its order.
            server_protos: the server's subprotocols, in order of preference.

        Returns:
            The chosen subprotocol (one the client offered), or ``None``.
        """
        for protocol in server_protos:
            if protocol in client_protos:
                return protocol
        return None

    def get_response_status(self, set_header: handshake.SetHeader) -> int:
        """Decide the handshake's HTTP status; 101 (the default) goes on with WebSocket.

        Override it to refuse requests (401, 403, 404...): any other status
        is answered as plain HTTP and the connection is closed. Headers set
        with ``set_header`` are sent either way.

        Args:
            set_header: ``set_header(name, value)`` adds a response header.

        Returns:
            The status.
        """
        return _SWITCHING_PROTOCOLS

    def process_response(self, request: Request, response: ServerResponse) -> ServerResponse:
        """Have the last word on every response of the handshake, the 101 and refusals.

        Args:
            request: the request.
            response: the response about to be sent.

        Returns:
            The response to send; by default ``response``.
        """
        return response

    def copy_outcome(self, other: "ServerHooks") -> None:
        """Give ``other`` what :func:`accept` set here: the request and what was chosen.

        Args:
            other: the hooks, a connection, that carry on with the handshake's
                outcome.
        """
        for name in _OUTCOME:
            setattr(other, name, getattr(self, name))


# The attributes of ServerHooks that accept() sets.
_OUTCOME = ("request", "path", "request_headers", "origin", "subprotocol", "extensions")


class RequestHooks(ServerHooks):
    """The hooks of a handshake negotiated before any connection exists.

    :func:`syncws.wsgi.accept` negotiates with one when the connection's
    class keeps :class:`~syncws.WebSocketServerProtocol`'s hooks, then makes
    the connection only for a 101 and gives it the outcome
    (:meth:`~ServerHooks.copy_outcome`, and :attr:`username`). The only
    hook an application gives it is a ``process_request`` function.

    Args:
        process_request: ``(path, request_headers)`` returning ``None`` or
            an answer, as for :func:`~syncws.serve`; ``None`` for none.
    """

    def __init__(self, process_request: Optional[Callable[[str, Headers], Any]] = None) -> None:
        self._process_request = process_request
        #: The user name :func:`~syncws.basic_auth` authenticated, or ``None``.
        self.username: Optional[str] = None

    def process_request(self, path: str, request_headers: Headers) -> Any:
        """Call the ``process_request`` function, if any (see :func:`call_process_request`)."""
        answer, self.username = call_process_request(self._process_request, path, request_headers)
        return answer


def call_process_request(
    function: Optional[Callable[[str, Headers], Any]], path: str, request_headers: Headers
) -> Tuple[Any, Optional[str]]:
    """Call a server's ``process_request`` function.

    Args:
        function: the function given to the server, or ``None``.
        path: the request's decoded path, with its query.
        request_headers: the request's headers.

    Returns:
        Its answer (``None`` to go on with the handshake), and the user name
        when the function is a :class:`~syncws.auth.BasicAuth` that let the
        request through, else ``None``.
    """
    if function is None:
        return None, None
    answer = function(path, request_headers)
    if answer is None and isinstance(function, BasicAuth):
        return None, BasicAuth.username(request_headers)
    return answer, None


def accept(request: Request, policy: ServerPolicy, hooks: ServerHooks, *, path: Optional[str] = None) -> ServerResponse:
    """Decide a server's answer to an opening request: the 101, or a refusal.

    Sets ``hooks``' attributes and calls its hooks (see :class:`ServerHooks`
    and the module's docstring for the order of the checks).

    Args:
        request: the request's method, target and headers.
        policy: what the server accepts.
        hooks: the application's hooks, and where the handshake's state goes.
        path: the request's decoded path when the caller decoded it already,
            as a WSGI server does; ``None`` decodes ``request.path``.

    Returns:
        The 101 response, after ``process_response``.

    Raises:
        AbortHandshake: the request is refused: the exception holds the
            answer, after ``process_response``; its ``__cause__`` says why:
            the :exc:`~syncws.InvalidHandshake` of a failed check, or what a
            hook raised (a bug, answered with 500).
        Exception: what ``process_response`` raised.
    """
    hooks.request = request
    hooks.request_headers = request.headers
    hooks.path = "" if path is None else path  # decoded first thing, if need be
    error: Optional[Exception] = None
    try:
        response = _upgrade(request, policy, hooks, decode=path is None)
    except InvalidHandshake as exc:
        error, response = exc, _refusal(exc)
    except Exception as exc:  # a bug in a hook: answer 500, keep the traceback
        # A response of its own: process_response may change its headers.
        error, response = exc, ServerResponse(http.HTTPStatus.INTERNAL_SERVER_ERROR, Headers(), _INTERNAL_ERROR_BODY)
    final = hooks.process_response(request, response)
    if final.status_code != _SWITCHING_PROTOCOLS:
        raise AbortHandshake(final.status_code, final.headers.items(), final.body) from error
    if error is not None:  # process_response can't make a refusal a 101
        raise AbortHandshake(response.status_code, response.headers.items(), response.body) from error
    return final


def _upgrade(request: Request, policy: ServerPolicy, hooks: ServerHooks, *, decode: bool) -> ServerResponse:
    """:func:`accept`'s checks and negotiation, before ``process_response``.

    Raises:
        InvalidHandshake: a check failed (an :exc:`AbortHandshake` when the
            answer is decided already).
    """
    if decode:
        hooks.path = decode_target(request.path)
    if request.method != "GET":
        raise AbortHandshake(
            http.HTTPStatus.METHOD_NOT_ALLOWED,
            [("Allow", "GET")],
            f"Failed to open a WebSocket connection: {request.method} isn't allowed; "
            f"a WebSocket handshake is a GET request.\n".encode(),
        )
    headers = request.headers
    # Before the hooks: they read Host and Origin as single values.
    handshake.check_request_head(headers.get_joined)
    hooks.origin = headers.get_joined("Origin")
    answer = hooks.process_request(hooks.path, headers)
    if answer is not None:
        answered = as_response(answer, "process_request")
        raise AbortHandshake(answered.status_code, answered.headers.items(), answered.body)

    key = handshake.check_request(headers.get_joined)
    if policy.origins is not None and not origin_allowed(hooks.origin, policy.origins):
        raise InvalidOrigin(hooks.origin)

    response_headers = Headers()
    hooks.subprotocol = _negotiate_subprotocol(headers, policy, hooks)
    if hooks.subprotocol is not None:
        response_headers["Sec-WebSocket-Protocol"] = hooks.subprotocol
    deflate = _negotiate_deflate(headers, policy.compression, response_headers)
    hooks.extensions = [] if deflate is None else [deflate]

    status = hooks.get_response_status(response_headers.__setitem__)
    if status != _SWITCHING_PROTOCOLS:
        status = http.HTTPStatus(status)
        raise AbortHandshake(status, response_headers.items(), f"{status.phrase}\n".encode())

    handshake.build_response(response_headers.__setitem__, key)
    extra_headers = policy.extra_headers
    if callable(extra_headers):
        extra_headers = extra_headers(hooks.path, headers)
    if extra_headers is not None:
        response_headers.update(extra_headers)
    if policy.server_header is not None and "Server" not in response_headers:
        response_headers["Server"] = policy.server_header
    return ServerResponse(_SWITCHING_PROTOCOLS, response_headers, b"")


def _negotiate_subprotocol(headers: Headers, policy: ServerPolicy, hooks: ServerHooks) -> Optional[str]:
    """The subprotocol to use, or ``None``.

    Raises:
        InvalidHeader: ``Sec-WebSocket-Protocol`` is malformed.
        ValueError: ``select_subprotocol`` chose one the client didn't offer.
    """
    offered = headers.get_joined("Sec-WebSocket-Protocol")
    if offered is None or not (policy.subprotocols or policy.select_subprotocol is not None):
        return None
    client_protos = handshake.parse_subprotocol_list(offered)
    chosen = hooks.select_subprotocol(client_protos, policy.subprotocols or [])
    if chosen is not None and chosen not in client_protos:
        raise ValueError(f"select_subprotocol chose {chosen!r}, which the client didn't offer ({client_protos})")
    return chosen


def _negotiate_deflate(headers: Headers, compression: Any, response_headers: Headers) -> Any:
    """Accept permessage-deflate when the client offers it acceptably.

    Returns:
        The codec, or ``None``; the response's header is added when there is one.
    """
    factory = permessage_deflate.ServerDeflateFactory.from_compression(compression)
    value = headers.get_joined("Sec-WebSocket-Extensions")
    if factory is None or value is None:
        return None
    offers = [
        params for name, params in handshake.parse_extension_list(value) if name == permessage_deflate.EXTENSION_NAME
    ]
    accepted = factory.accept(offers) if offers else None
    if accepted is None:
        return None
    params, deflate = accepted
    response_headers["Sec-WebSocket-Extensions"] = handshake.build_extension_list(
        [(permessage_deflate.EXTENSION_NAME, params)]
    )
    return deflate


def hook_bug(exc: BaseException) -> Optional[BaseException]:
    """What a hook raised, when :func:`accept` refused with 500 because of it.

    Args:
        exc: what :func:`accept` raised.

    Returns:
        The hook's exception, with its traceback, for the server's log;
        ``None`` for a refusal that comes from the request.
    """
    cause = exc.__cause__ if isinstance(exc, AbortHandshake) else None
    return None if cause is None or isinstance(cause, InvalidHandshake) else cause


def http_answer(exc: Exception) -> Optional[Tuple[int, List[Tuple[str, str]], bytes]]:
    """Map a handshake failure to the HTTP answer it deserves.

    Args:
        exc: what reading the request or :func:`accept` raised.

    Returns:
        ``(status, headers, body)``, or ``None`` when nobody is left to
        answer (the client went away, a network or TLS error).
    """
    if isinstance(exc, AbortHandshake):
        return exc.status, list(Headers(exc.headers).items()), exc.body
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        return None  # the client closed before finishing its request
    if not isinstance(exc, InvalidHandshake):
        return None  # a network or TLS error: nobody to answer
    # The text quotes the peer's values with repr(); the body is ASCII:
    # bytes 0x80-0xFF of a header value come out as escapes.
    body = f"Failed to open a WebSocket connection: {exc}.\n".encode("ascii", "backslashreplace")
    if isinstance(exc, HeadersTooLarge):
        return http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, [], body
    if isinstance(exc, InvalidOrigin):
        return http.HTTPStatus.FORBIDDEN, [], body
    if isinstance(exc, InvalidUpgrade):
        return http.HTTPStatus.UPGRADE_REQUIRED, [("Upgrade", "websocket"), ("Connection", "Upgrade")], body
    if isinstance(exc, InvalidHeader) and exc.name == "Sec-WebSocket-Version" and "," not in (exc.value or ""):
        # A client speaking another version learns ours (RFC 6455 §4.4); one
        # that sent the header twice (joined with a comma) made a bad request.
        return http.HTTPStatus.UPGRADE_REQUIRED, [("Sec-WebSocket-Version", handshake.WEBSOCKET_VERSION)], body
    return http.HTTPStatus.BAD_REQUEST, [], body


def _refusal(exc: InvalidHandshake) -> ServerResponse:
    """:func:`http_answer` of a failed check, as a response."""
    answer = http_answer(exc)
    assert answer is not None  # every InvalidHandshake but the end of the request has one
    status, headers, body = answer
    return ServerResponse(status, Headers(headers), body)


def serialize_answer(
    status: int, headers: Iterable[Tuple[str, str]], body: bytes, server_header: Optional[str]
) -> bytes:
    """Write a plain HTTP answer to an opening request, one that ends the connection.

    Every refusal says ``Connection: close``, and the server then ends the
    connection: a keep-alive server would otherwise read the next request,
    or the client's first frames, from it.

    Args:
        status: the HTTP status.
        headers: the response headers; ``Content-Length``, ``Connection``
            and (unless given) ``Content-Type`` and ``Server`` are set here.
        body: the body.
        server_header: the ``Server`` header; ``None`` omits it.

    Returns:
        The head and the body.
    """
    response_headers = Headers(headers)
    if server_header is not None and "Server" not in response_headers:
        response_headers["Server"] = server_header
    if "Content-Type" not in response_headers:
        response_headers["Content-Type"] = "text/plain; charset=utf-8"
    if "Content-Length" in response_headers:
        del response_headers["Content-Length"]  # the body decides it
    response_headers["Content-Length"] = str(len(body))
    response_headers["Connection"] = "close"
    return serialize_response(status, response_headers) + body


# -- the client's side ------------------------------------------------------


class ClientOpening:
    """One client-side opening handshake: the request to send, then the check of the answer.

    Args:
        wsuri: the URI to connect to; its user info, if any, is sent as
            HTTP Basic authentication.
        origin: the ``Origin`` header to send, if any.
        subprotocols: subprotocols to offer, in order of preference.
        extra_headers: more request headers (a mapping or pairs); a
            ``User-Agent`` here replaces ``user_agent``.
        compression: ``"deflate"`` offers permessage-deflate; ``None`` doesn't;
            a :class:`~syncws.extensions.permessage_deflate.DeflateSettings`
            tunes it.
        user_agent: the ``User-Agent`` header; ``None`` omits it.

    Raises:
        ValueError: a subprotocol or a header isn't valid.

    Attributes:
        request_headers: the request's headers, to send with its path
            (``wsuri.resource_name``).
        key: the ``Sec-WebSocket-Key`` sent, which the answer must match.
    """

    def __init__(
        self,
        wsuri: WebSocketURI,
        *,
        origin: Optional[str] = None,
        subprotocols: Optional[Sequence[str]] = None,
        extra_headers: Optional[HeadersLike] = None,
        compression: Any = "deflate",
        user_agent: Optional[str] = None,
    ) -> None:
        headers = Headers()
        headers["Host"] = host_header(wsuri)
        if wsuri.user_info is not None:
            credentials = ":".join(wsuri.user_info).encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        if origin is not None:
            headers["Origin"] = origin
        self.key = handshake.build_request(headers.__setitem__)
        self._deflate_factory = permessage_deflate.ClientDeflateFactory.from_compression(compression)
        if self._deflate_factory is not None:
            headers["Sec-WebSocket-Extensions"] = handshake.build_extension_list([self._deflate_factory.offer()])
        self._subprotocols = subprotocols
        if subprotocols:
            headers["Sec-WebSocket-Protocol"] = handshake.build_subprotocol_list(subprotocols)
        if extra_headers is not None:
            headers.update(extra_headers)
        if user_agent is not None and "User-Agent" not in headers:
            headers["User-Agent"] = user_agent
        self.request_headers = headers

    def check(self, response: Response, body: bytes = b"") -> Tuple[Optional[str], List[Any]]:
        """Check the server's answer.

        Args:
            response: the response's head.
            body: the start of its body, for the error of a refusal.

        Returns:
            The subprotocol the server chose (``None`` for none) and the
            extensions it accepted (the permessage-deflate codec).

        Raises:
            InvalidStatusCode: the status isn't 101.
            InvalidUpgrade: ``Upgrade`` or ``Connection`` doesn't accept the
                upgrade.
            InvalidHeader: a header is missing or wrong (the exception
                names it).
            NegotiationError: the server chose an extension or subprotocol
                that wasn't offered.
        """
        if response.status_code != _SWITCHING_PROTOCOLS:
            raise InvalidStatusCode(response.status_code, body, response.headers)
        headers = response.headers
        handshake.check_response(headers.get_joined, self.key)
        deflate = self._accepted_deflate(headers)
        return self._chosen_subprotocol(headers), [] if deflate is None else [deflate]

    def _chosen_subprotocol(self, headers: Headers) -> Optional[str]:
        """The subprotocol the server chose, checking it was offered."""
        value = headers.get_joined("Sec-WebSocket-Protocol")
        if value is None:
            return None
        chosen = handshake.parse_subprotocol_list(value)
        if len(chosen) != 1:
            raise InvalidHeader("Sec-WebSocket-Protocol", value, "the server must choose one subprotocol")
        offered = self._subprotocols
        if not offered or chosen[0] not in offered:
            raise NegotiationError(
                f"the server chose subprotocol {chosen[0]!r}, which wasn't offered (offered: {list(offered or [])})"
            )
        return chosen[0]

    def _accepted_deflate(self, headers: Headers) -> Any:
        """The codec of the extensions the server accepted, if any."""
        value = headers.get_joined("Sec-WebSocket-Extensions")
        if value is None:
            return None
        deflate = None
        for name, params in handshake.parse_extension_list(value):
            if name != permessage_deflate.EXTENSION_NAME or self._deflate_factory is None:
                raise NegotiationError(f"the server accepted extension {name!r}, which wasn't offered")
            if deflate is not None:
                raise NegotiationError(f"the server accepted {name} twice")
            deflate = self._deflate_factory.accept(params)
        return deflate
