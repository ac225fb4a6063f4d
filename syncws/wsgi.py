"""WebSocket endpoints inside WSGI applications (Flask, Django, any WSGI app).

Theory of operation: a WSGI server parses the upgrade request and calls the
application with its ``environ``. :func:`accept` checks that request with the
rules and options of :func:`~syncws.serve` (the negotiation is
:func:`syncws.opening.accept`, which the server calls too), writes the 101
response on the server's own socket, and starts a
:class:`~syncws.WebSocketServerProtocol` on it: the same connection as
``serve()`` gives, with its reader thread, bounded queue, keepalive,
compression, limits and close codes. The handler then runs in the WSGI
server's thread, inside the framework's request (Flask's request context,
Django's ``request``, sessions and login included).

The hand-over, server by server (see ``docs/wsgi.rst``):

* the socket comes from ``environ["gunicorn.socket"]`` (gunicorn's sync and
  gthread workers) or ``environ["werkzeug.socket"]`` (werkzeug's dev server,
  ``flask run``); other servers (waitress, Django's ``runserver``...) don't
  give it to applications and get :exc:`ServerNotSupported`;
* the connection works on a ``dup()`` of that socket: it shuts the TCP
  connection down and closes its own descriptor when it ends;
* the server's own descriptor is then pointed at a socket that is already
  shut down (``os.dup2``): whatever the server writes afterwards (the head of
  :class:`HandedOver`, a framework's error page, a response returned after
  :func:`accept`) fails with a broken pipe instead of reaching the
  WebSocket, and it reads an end of stream. gunicorn and werkzeug take that
  as a client that left: they log nothing above debug, close their
  descriptor (not the connection, which the dup holds) and free the thread;
* bytes the server read past the request head (a client that didn't wait for
  the 101) are handed to the frame reader first;
* a refused upgrade is answered the way :func:`~syncws.serve` answers it:
  syncws writes the answer with ``Connection: close`` on the server's
  socket, then its FIN, so the server's own write fails and it closes the
  connection: a keep-alive server (gunicorn's gthread worker) reads no
  further request from it;
* the application returns :class:`HandedOver` (or, for a refusal, a
  response like it): the status for the access log, and an empty body.

Under gunicorn, :func:`gunicorn_post_worker_init` (or the config module
``syncws.gunicorn_conf``) closes the open WebSockets with 1001 on SIGTERM, so
the worker stops within its graceful timeout, and keeps a sync worker's
heartbeat going while it serves a WebSocket.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import http
import logging
import os
import queue
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import weakref
from typing import (
    Any, Callable, Dict, Iterable, Iterator, List, Mapping, MutableMapping, Optional, Sequence, Tuple, Type, Union,
)

from . import metrics, opening, sockopts
from .exceptions import AbortHandshake, InvalidHandshake, InvalidMessage
from .framing import CloseCode
from .hooks import ServerResponse
from .http import Headers, Request, check_version, serialize_response
from .paths import check_path, decode_path
from .opening import RequestHooks, ServerHooks, ServerPolicy, hook_bug, http_answer
from .handlers import run_handler
from .serverprotocol import SERVER_HEADER, WebSocketServerProtocol, runs_own_hooks, send_http_answer
from .settings import check_settings
from .transport import Transport

__all__ = [
    "ACCEPTED",
    "SOCKET",
    "RFILE",
    "accept",
    "websocket_app",
    "WebSocketMiddleware",
    "close_refused_upgrades",
    "flask_websocket",
    "flask_route",
    "django_websocket",
    "django_live_server_thread",
    "HandedOver",
    "ServerNotSupported",
    "close_all",
    "gunicorn_post_worker_init",
]

logger = logging.getLogger("syncws.wsgi")

#: The ``environ`` key where :func:`accept` puts the connection it opened:
#: a request upgrades once, so a second call raises.
ACCEPTED = "syncws.websocket"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[Dict[str, Any], StartResponse], Iterable[bytes]]
Handler = Callable[[WebSocketServerProtocol], Any]

# Headers a WSGI application must not send (PEP 3333, wsgiref asserts it).
_HOP_BY_HOP = {"connection", "upgrade", "keep-alive", "transfer-encoding", "te", "trailer",
               "proxy-authenticate", "proxy-authorization"}


class ServerNotSupported(RuntimeError):
    """The WSGI server doesn't hand its client socket to applications.

    Raised by :func:`accept` (so a WebSocket route answers 500 and the
    server's log says why). The message names the server and what to run
    instead.
    """


class _Answered:
    """A WSGI response whose answer syncws wrote on the server's socket itself.

    Calling it calls ``start_response`` with the answer's status and
    end-to-end headers, for the server's access log only. Its body is empty,
    and the server's attempt to send the head fails with a broken pipe (the
    socket is shut down, or detached by :func:`accept`), which gunicorn and
    werkzeug take as a client that left: they write nothing, log nothing
    above debug and close their descriptor.
    """

    def __init__(self, status: str, headers: List[Tuple[str, str]]) -> None:
        self.status = status
        self._headers = headers

    def headers(self) -> List[Tuple[str, str]]:
        """The answer's headers a WSGI application may pass on.

        Returns:
            ``(name, value)`` pairs without hop-by-hop headers.
        """
        return list(self._headers)

    def __call__(self, start_response: StartResponse) -> "_Answered":
        start_response(self.status, self.headers())
        return self

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        """WSGI's ``close()``: nothing left to release."""


def _end_to_end(headers: Headers) -> List[Tuple[str, str]]:
    """Headers without those a WSGI application must not send (PEP 3333)."""
    return [(k, v) for k, v in headers.items() if k.lower() not in _HOP_BY_HOP]


class HandedOver(_Answered):
    """The WSGI response of a request whose connection became a WebSocket.

    Return it from the WSGI application once the WebSocket is closed, or
    handed to a thread of yours::

        ws = syncws.wsgi.accept(environ)
        ...
        return syncws.wsgi.HandedOver(ws)(start_response)

    Calling it calls ``start_response`` with ``101 Switching Protocols`` and
    the end-to-end response headers, for the server's access log only: the
    101 went out already, and the server's own write fails harmlessly
    (:func:`accept` detached its socket).

    Args:
        websocket: the connection :func:`accept` returned.
    """

    def __init__(self, websocket: WebSocketServerProtocol) -> None:
        super().__init__("101 Switching Protocols", _end_to_end(websocket.response_headers or Headers()))
        self.websocket = websocket


# -- finding the server's socket ------------------------------------------------

def _server_socket(environ: Mapping[str, Any]) -> Tuple[socket.socket, bytes]:
    """Return the client socket of the WSGI server and the bytes it read ahead.

    Raises:
        ServerNotSupported: the server doesn't give its socket.
    """
    software = str(environ.get("SERVER_SOFTWARE") or "this WSGI server")
    for key, input_key, read_ahead in _SOCKET_SOURCES:
        sock = environ.get(key)
        if sock is None:
            continue
        if isinstance(sock, ssl.SSLSocket):
            raise ServerNotSupported(
                f"syncws.wsgi can't take over a TLS connection from {software} (an SSLSocket "
                "can't be shared): terminate TLS in a proxy such as nginx in front of it."
            )
        if not isinstance(sock, socket.socket):
            raise ServerNotSupported(
                f"syncws.wsgi can't take over the connection from {software}: its socket is a "
                f"{type(sock).__module__}.{type(sock).__qualname__}, not a blocking socket (an "
                "async worker such as gevent or eventlet). Use gunicorn -k gthread or -k sync."
            )
        return sock, read_ahead(sock, environ.get(input_key))
    if software.startswith("waitress"):
        raise _not_supported(software, _WAITRESS)
    if software.startswith("WSGIServer/"):
        raise _not_supported(software, _WSGIREF)
    raise _not_supported(software, "it doesn't put its client socket in the WSGI environ")


_WAITRESS = "waitress keeps its sockets to itself and buffers responses"
_WSGIREF = "wsgiref (Django's runserver) doesn't give its socket to applications"


def _not_supported(server: str, why: str) -> ServerNotSupported:
    return ServerNotSupported(
        f"syncws.wsgi can't take over the connection from {server}: {why}. "
        "Serve WebSocket routes with gunicorn (-k gthread --threads N, or the sync worker) "
        "or werkzeug's development server (flask run, werkzeug.serving.run_simple)."
    )


def _refuse_unsupported_server() -> None:
    """Refuse, when it starts, a WSGI server that can't hand its sockets over.

    A server imports the application as it starts, and with it the
    definitions of its WebSocket endpoints, which call this: the mistake
    stops the server there, rather than answering 500 to the first
    WebSocket. Recognized from the command that started the process:
    ``waitress-serve`` and ``python -m waitress``, and Django's
    ``runserver`` (``manage.py``, ``django-admin``, ``python -m django``).
    Other cases are only known at the first upgrade (:func:`accept`):
    ``waitress.serve()`` or ``call_command("runserver")`` from code,
    gunicorn's async workers and TLS.

    Raises:
        ServerNotSupported: this process runs such a server.
    """
    argv = sys.argv
    program = argv[0] if argv else ""
    if os.path.basename(program) == "waitress-serve" or program.endswith(os.path.join("waitress", "__main__.py")):
        raise _not_supported("waitress", _WAITRESS)
    if len(argv) > 1 and argv[1] == "runserver" and "django" in sys.modules:
        raise _not_supported("Django's runserver", _WSGIREF)


def _gunicorn_read_ahead(sock: socket.socket, body: Any) -> bytes:
    """Take what gunicorn's parser read past the request head."""
    unreader = getattr(getattr(body, "reader", None), "unreader", None)
    if unreader is None:
        return b""
    take = getattr(unreader, "take_buffered", None)
    if take is not None:
        return bytes(take())
    buf = getattr(unreader, "buf", None)  # gunicorn < 25: an io.BytesIO
    if buf is None:
        return b""
    data = bytes(buf.getvalue())
    buf.seek(0)
    buf.truncate()
    return data


def _buffered_read_ahead(sock: socket.socket, stream: Any) -> bytes:
    """Take what a buffered ``wsgi.input`` (werkzeug's rfile) holds, without blocking."""
    read1 = getattr(stream, "read1", None)
    if read1 is None:
        return b""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # read1 returns the buffer, or b"" when none
    try:
        return bytes(read1(1 << 16) or b"")
    except OSError:
        return b""
    finally:
        sock.settimeout(timeout)


#: The ``environ`` key where a WSGI server that wants to hand its sockets to
#: syncws puts the connected socket of the request (gunicorn and werkzeug
#: have keys of their own); :data:`RFILE` then holds the buffered reader it
#: read the request with, if any, so that bytes it read past the head reach
#: the WebSocket.
SOCKET = "syncws.socket"
#: See :data:`SOCKET`.
RFILE = "syncws.rfile"
# Set in the environ once syncws answered a refusal on the socket itself.
_REFUSED = "syncws.refused"
# Set in the environ once a refusal is counted in the metrics.
_COUNTED = "syncws.refusal_counted"

# Where each server gives its socket: (socket key, key of the stream that may
# hold bytes read past the head, how to take them).
_SOCKET_SOURCES = (
    ("gunicorn.socket", "wsgi.input", _gunicorn_read_ahead),
    ("werkzeug.socket", "wsgi.input", _buffered_read_ahead),
    (SOCKET, RFILE, _buffered_read_ahead),
)


# -- the connections this process has open, for SIGTERM ------------------------------
#
# close_all() runs in signal handlers, which interrupt the main thread
# anywhere, inside a `with lock:` included: a lock it took would deadlock a
# sync worker whose only thread held it. So the registry takes no lock: each
# step below is one operation on a dict or a SimpleQueue, atomic under the
# GIL and safe to interrupt. Ordering does the rest: accept() registers a
# connection, then reads _shutting_down; close_all() sets _shutting_down,
# then takes its snapshot. Whatever the interleaving, a new connection is in
# the snapshot or sees the flag (or both: closing twice is harmless).

# The connections accept() opened and whose handlers haven't ended, as weak
# references (the values are unused): a connection an accept() caller
# dropped without closing leaves when it is collected.
_open: Dict["weakref.ref[WebSocketServerProtocol]", None] = {}
# Set by close_all(): further upgrades get 503.
_shutting_down = False
# What close_all() asks the closer thread to do: (connections, code,
# reason). SimpleQueue.put is reentrant, safe in a signal handler, where
# closing a connection is not (it takes the connection's write lock, which
# the interrupted thread may hold).
_to_close: "queue.SimpleQueue[Tuple[List[WebSocketServerProtocol], int, str]]" = queue.SimpleQueue()
# Guards starting the closer thread; never taken by close_all().
_closer_lock = threading.Lock()
_closer_started = False
# A sync gunicorn worker's notify(), called while a handler holds its only
# thread (see gunicorn_post_worker_init); None elsewhere.
_heartbeat: Optional[Tuple[Callable[[], None], float]] = None


def close_all(code: int = CloseCode.GOING_AWAY, reason: str = "") -> int:
    """Close every WebSocket :func:`accept` opened in this process.

    Never blocks, takes no lock, and is safe to call from a signal handler:
    it hands the connections to a thread of syncws's, which starts each
    closing handshake without waiting for it (a stalled client holds up
    nobody). Handlers blocked in ``recv()`` get
    :exc:`~syncws.ConnectionClosed` and return. Upgrades that arrive
    afterwards are refused with 503.

    Args:
        code: the close code, 1001 (going away) by default.
        reason: the close reason.

    Returns:
        How many connections were being closed.
    """
    global _shutting_down
    _shutting_down = True
    connections = _open_connections()
    if connections:
        _to_close.put((connections, code, reason))
    return len(connections)


def _open_connections() -> List[WebSocketServerProtocol]:
    """The registry's connections, from one atomic copy of its keys."""
    return [connection for connection in (ref() for ref in list(_open)) if connection is not None]


def _register(protocol: WebSocketServerProtocol) -> bool:
    """Add an open connection to the registry; return False if close_all() ran."""
    _start_closer()
    _open[weakref.ref(protocol, _unregister)] = None
    return not _shutting_down


def _unregister(ref: "weakref.ref[WebSocketServerProtocol]") -> None:
    _open.pop(ref, None)


def _forget(websocket: WebSocketServerProtocol) -> None:
    _unregister(weakref.ref(websocket))  # equal to the registered one while alive


def _start_closer() -> None:
    """Start the thread that closes what close_all() hands over, once.

    Also arranges for the WebSockets still open when the interpreter exits
    to be closed with 1001 (see :func:`_close_at_exit`).
    """
    global _closer_started
    with _closer_lock:
        if _closer_started:
            return
        threading.Thread(target=_closer, name="syncws-wsgi-closer", daemon=True).start()
        atexit.register(_close_at_exit)
        _closer_started = True


# How long the interpreter's exit waits for the clients' close frames: a
# healthy client answers within milliseconds; one that doesn't is dropped.
_EXIT_GRACE = 5.0


def _close_at_exit() -> None:
    """Close the WebSockets still open when the interpreter exits, with 1001.

    werkzeug's server (``flask run``) runs requests in daemon threads: on
    Ctrl-C the process used to exit under the open WebSockets, whose clients
    saw 1006. Runs before logging's own exit handler (registered earlier),
    while daemon threads still run.
    """
    connections = _open_connections()
    close_all(CloseCode.GOING_AWAY, "server shutting down")
    deadline = time.monotonic() + _EXIT_GRACE
    for connection in connections:
        try:
            connection.wait_closed(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return


def _closer() -> None:
    while True:
        connections, code, reason = _to_close.get()
        logger.info("closing %d WebSocket connections with %d", len(connections), code)
        for connection in connections:
            connection.start_closing(code, reason)


# -- accepting ---------------------------------------------------------------------

def _request_headers(environ: Mapping[str, Any]) -> Headers:
    """Rebuild the request headers from the CGI-style ``HTTP_*`` keys."""
    headers = Headers()
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers[key[5:].replace("_", "-").title()] = value
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").title()] = environ[key]
    return headers


def _wsgi_path(native: str) -> str:
    """Decode a WSGI path (PEP 3333: its bytes as latin-1) as frameworks do.

    Raises:
        InvalidMessage: see :func:`syncws.paths.decode_path`.
    """
    try:
        raw = native.encode("latin-1")
    except UnicodeEncodeError:  # a server that broke PEP 3333's rule
        raise InvalidMessage("the WSGI server gave a request path that isn't latin-1") from None
    return decode_path(raw)


def _request_path(environ: Mapping[str, Any], routed: Optional[str]) -> str:
    """The request's decoded path and its query: what hooks and handlers see.

    ``routed`` (a framework's decoded path), or else ``SCRIPT_NAME`` +
    ``PATH_INFO`` decoded as werkzeug and Django decode them (routers match
    ``PATH_INFO``, the part after the application's mount point); then
    ``?`` and ``QUERY_STRING`` as received.

    Raises:
        InvalidMessage: see :func:`syncws.paths.decode_path`.
    """
    if routed is not None:
        path = check_path(routed)
    else:
        path = _wsgi_path(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))) or "/"
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def _request_target(environ: Mapping[str, Any]) -> str:
    """The request-target as the server received it, for ``request_target``."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")  # gunicorn, werkzeug
    if raw:
        return str(raw)
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    target = urllib.parse.quote(path.encode("latin-1", "replace"), safe="/") or "/"
    query = environ.get("QUERY_STRING")
    return f"{target}?{query}" if query else target


def accept(
    environ: Mapping[str, Any],
    *,
    create_protocol: Optional[Type[WebSocketServerProtocol]] = None,
    timeout: Optional[float] = 10,
    max_size: Optional[int] = 2**20,
    max_queue: Optional[int] = 2**5,
    read_limit: int = 2**16,
    write_limit: int = 2**16,
    origins: Optional[Sequence[Optional[str]]] = None,
    subprotocols: Optional[Sequence[str]] = None,
    extra_headers: Any = None,
    compression: Any = "deflate",
    ping_interval: Optional[float] = 20,
    ping_timeout: Optional[float] = 20,
    process_request: Optional[Callable[[str, Headers], Any]] = None,
    open_timeout: Optional[float] = None,
    close_timeout: Optional[float] = None,
    write_timeout: Optional[float] = 60,
    server_header: Optional[str] = SERVER_HEADER,
    logger: Union[logging.Logger, str, None] = None,
    path: Optional[str] = None,
) -> WebSocketServerProtocol:
    """Accept the WebSocket upgrade of a WSGI request on the server's socket.

    Checks the request like :func:`~syncws.serve` does, writes the 101
    response and returns the open connection. When done with it, close it
    and return :class:`HandedOver` from the application (or use
    :func:`websocket_app`, which does all that).

    Args:
        environ: the WSGI environ of the request.
        create_protocol: a :class:`~syncws.WebSocketServerProtocol` subclass.
        timeout: seconds for the closing handshake (and the 101's write).
        max_size: the largest incoming message; bigger ones close with 1009.
        max_queue: received messages buffered before reading pauses.
        read_limit: bytes asked of the socket per read.
        write_limit: payloads up to this size go out with their header.
        origins: allowed ``Origin`` values; others get 403.
        subprotocols: the server's subprotocols, in order of preference.
        extra_headers: headers for the 101 response, as for ``serve()``.
        compression: ``"deflate"`` (default), ``None`` or ``DeflateSettings``.
        ping_interval: seconds between keepalive pings; ``None`` disables.
        ping_timeout: seconds to wait for a pong; ``None`` waits forever.
        process_request: ``(path, request_headers)`` returning ``None`` or
            ``(status, headers, body)`` to answer plain HTTP. ``path`` is
            the one the framework routed: ``SCRIPT_NAME`` + ``PATH_INFO``
            decoded (see :mod:`syncws.paths`), then ``?`` and the query; the
            connection's ``path`` is the same, and its ``request_target``
            the request-target as received.
        open_timeout: seconds to write the 101 response.
        close_timeout: seconds for the closing handshake.
        write_timeout: seconds a send may take before the connection is
            aborted.
        server_header: the ``Server`` header of the 101; ``None`` omits it.
        logger: a logger or logger name (default ``syncws.server``).
        path: the decoded path (without the query) the framework routed
            the request on, when it rewrote ``PATH_INFO`` as text: Django
            does, so pass ``request.path`` in a Django view
            (:func:`django_websocket` does). ``None`` decodes
            ``SCRIPT_NAME`` + ``PATH_INFO`` as :pep:`3333` has them
            (gunicorn, werkzeug, Flask).

    Returns:
        The open :class:`~syncws.WebSocketServerProtocol`.

    Raises:
        AbortHandshake: the request isn't a WebSocket upgrade this endpoint
            accepts; ``status``, ``headers`` and ``body`` hold the HTTP
            answer ``serve()`` would give (400, 403, 405, 426, 503...).
        ServerNotSupported: the WSGI server can't hand its socket over.
        OSError: the client went away before the 101 was written.
    """
    return _Endpoint(
        create_protocol=create_protocol, timeout=timeout, max_size=max_size, max_queue=max_queue,
        read_limit=read_limit, write_limit=write_limit, origins=origins, subprotocols=subprotocols,
        extra_headers=extra_headers, compression=compression, ping_interval=ping_interval,
        ping_timeout=ping_timeout, process_request=process_request, open_timeout=open_timeout,
        close_timeout=close_timeout, write_timeout=write_timeout, server_header=server_header, logger=logger,
    ).accept(environ, path)


class _Endpoint:
    """One WebSocket endpoint's options, checked once: :func:`accept` for each request.

    :func:`websocket_app`, :class:`WebSocketMiddleware` and the framework
    views make one per endpoint, so that the settings and the
    :class:`~syncws.opening.ServerPolicy` are built once, not per request.

    Args:
        **options: the keyword arguments of :func:`accept` but ``path``.

    Raises:
        TypeError: an unknown option.
        ValueError: a setting out of range.
    """

    def __init__(self, **options: Any) -> None:
        unknown = set(options) - set(_ENDPOINT_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected WebSocket options: {', '.join(sorted(unknown))}")
        options = {**_ENDPOINT_OPTIONS, **options}
        setting_names = check_settings.__kwdefaults__ or {}
        self.settings = check_settings(**{name: options[name] for name in setting_names})
        self.protocol_class: Type[WebSocketServerProtocol] = options["create_protocol"] or WebSocketServerProtocol
        self.process_request: Optional[Callable[[str, Headers], Any]] = options["process_request"]
        self.server_header: Optional[str] = options["server_header"]
        self.policy = ServerPolicy(
            options["origins"], options["subprotocols"], options["extra_headers"], options["compression"],
            self.server_header,
        )
        logger_option = options["logger"]
        self.logger: logging.Logger = (
            logger_option if isinstance(logger_option, logging.Logger)
            else logging.getLogger(logger_option or "syncws.server")
        )

    def accept(self, environ: Mapping[str, Any], path: Optional[str]) -> WebSocketServerProtocol:
        """:func:`accept` with this endpoint's options (see it for what it raises)."""
        if ACCEPTED in environ:
            raise RuntimeError(
                "accept() was called again for a request it already upgraded: use the "
                f"connection the first call returned (environ[{ACCEPTED!r}])"
            )
        # The connection's methods are the hooks when its class overrides
        # one; otherwise it is made only once the request is accepted.
        protocol = self._connection(environ) if runs_own_hooks(self.protocol_class) else None
        hooks: ServerHooks = protocol if protocol is not None else RequestHooks(self.process_request)
        try:
            # As serve() reads the request line: HTTP/1.0 has no Upgrade.
            check_version(str(environ.get("SERVER_PROTOCOL") or "HTTP/1.1"))
            request = Request(
                str(environ.get("REQUEST_METHOD", "GET")), _request_target(environ), _request_headers(environ)
            )
            response = opening.accept(request, self.policy, hooks, path=_request_path(environ, path))
            if _shutting_down:
                raise AbortHandshake(
                    http.HTTPStatus.SERVICE_UNAVAILABLE, [("Retry-After", "1")],
                    b"Failed to open a WebSocket connection: the server is shutting down.\n",
                )
        except InvalidHandshake as exc:
            if isinstance(exc, AbortHandshake):
                bug = hook_bug(exc)
                if bug is not None:  # answered 500, logged here as serve() logs it
                    self.logger.error("the opening handshake raised", exc_info=bug)
                _count_refusal(environ, exc.status)
                raise
            answer = http_answer(exc)
            assert answer is not None  # every InvalidHandshake has an answer
            _count_refusal(environ, answer[0])
            raise AbortHandshake(*answer) from exc
        if protocol is None:
            assert isinstance(hooks, RequestHooks)
            protocol = self._connection(environ)
            hooks.copy_outcome(protocol)
            protocol.username = hooks.username
        protocol.response_headers = response.headers
        self._open(environ, protocol)
        return protocol

    def _connection(self, environ: Mapping[str, Any]) -> WebSocketServerProtocol:
        """A new connection for the request, not opened yet."""
        policy = self.policy
        return self.protocol_class(
            None,  # the caller runs its handler
            None,  # the WSGI server is the server
            host=str(environ.get("SERVER_NAME", "")) or None,
            port=int(environ.get("SERVER_PORT") or 0) or None,
            secure=environ.get("wsgi.url_scheme") == "https",
            settings=self.settings,
            logger=self.logger,
            origins=policy.origins,
            subprotocols=policy.subprotocols,
            extra_headers=policy.extra_headers,
            compression=policy.compression,
            process_request=self.process_request,
            server_header=self.server_header,
            policy=policy,
        )

    def _open(self, environ: Mapping[str, Any], protocol: WebSocketServerProtocol) -> None:
        """Write the 101 on the server's socket and open the connection on it.

        Raises:
            ServerNotSupported: the WSGI server can't hand its socket over.
            OSError: the client went away before the 101 was written.
        """
        settings = self.settings
        server_sock, read_ahead = _server_socket(environ)
        sock = server_sock.dup()
        try:
            _detach(server_sock)
            if isinstance(environ, MutableMapping):
                environ[ACCEPTED] = protocol
            sockopts.tune_connection(sock, ping_interval=settings.ping_interval, ping_timeout=settings.ping_timeout)
            transport = Transport(sock, read_limit=settings.read_limit, buffered=read_ahead)
            protocol.connection_made(transport)
            deadline = None if settings.open_timeout is None else time.monotonic() + settings.open_timeout
            transport.write(serialize_response(101, protocol.response_headers), deadline)
            protocol.connection_open()
        except BaseException:
            sock.close()
            raise
        if not _register(protocol):
            # close_all() ran since the check above, maybe without seeing this
            # connection.
            protocol.close(CloseCode.GOING_AWAY, "server shutting down")


# accept()'s options and their defaults, but the request's path.
_ENDPOINT_OPTIONS = {name: value for name, value in (accept.__kwdefaults__ or {}).items() if name != "path"}


def _detach(server_sock: socket.socket) -> None:
    """Point the WSGI server's descriptor at a socket that is already shut down.

    The connection goes on on our ``dup()``. Whatever the server writes from
    now on fails with a broken pipe instead of reaching the WebSocket, and
    what it reads is an end of stream.
    """
    dead, peer = socket.socketpair()
    peer.close()
    try:
        dead.shutdown(socket.SHUT_RDWR)
        os.dup2(dead.fileno(), server_sock.fileno(), inheritable=False)  # atomic: no moment without a descriptor
    finally:
        dead.close()


def _count_refusal(environ: Mapping[str, Any], status: int) -> None:
    """Count a refused upgrade in :data:`syncws.metrics.wsgi_counters`, once per request.

    :func:`accept` counts its refusals as it raises them, whoever answers
    them; :func:`_answer_refusal` those of the application (a login's 401,
    a router's 404), and skips a request counted already.
    """
    if status < 400 or environ.get(_COUNTED):
        return
    if isinstance(environ, MutableMapping):
        environ[_COUNTED] = True
    metrics.wsgi_counters.refused(status)


def _answer_refusal(
    environ: Mapping[str, Any], status: int, headers: Iterable[Tuple[str, str]], body: bytes,
    server_header: Optional[str],
) -> Optional[_Answered]:
    """Answer a refused upgrade on the server's socket and end the connection.

    As :func:`~syncws.serve` answers: ``Connection: close``, then our FIN.
    The server's own write then fails, and it closes the connection instead
    of reading another request (or the client's first frames) from it.
    A status of 400 or more is counted in the metrics.

    Returns:
        The WSGI response to return, for the server's log; ``None`` when the
        server doesn't give its socket (the caller answers through it).
    """
    _count_refusal(environ, status)
    try:
        sock, _ = _server_socket(environ)  # takes what the server read ahead: no next request
    except ServerNotSupported:
        return None
    headers = list(headers)
    send_http_answer(sock, status, headers, body, server_header)
    if isinstance(environ, MutableMapping):
        environ[_REFUSED] = True
    status_line, wsgi_headers, _ = _wsgi_answer(status, headers, body)
    return _Answered(status_line, wsgi_headers)


def _answer(
    environ: Mapping[str, Any], start_response: StartResponse, status: int, headers: Iterable[Tuple[str, str]],
    body: bytes, server_header: Optional[str],
) -> Iterable[bytes]:
    """Answer a refused upgrade: on the socket if the server gives it, else through the server."""
    headers = list(headers)
    answered = _answer_refusal(environ, status, headers, body, server_header)
    if answered is not None:
        return answered(start_response)
    status_line, wsgi_headers, body = _wsgi_answer(status, headers, body)
    start_response(status_line, wsgi_headers + [("Content-Length", str(len(body)))])
    return [body]


def _wsgi_answer(
    status: int, headers: Iterable[Tuple[str, str]], body: bytes
) -> Tuple[str, List[Tuple[str, str]], bytes]:
    """The WSGI status line, headers and body answering a refused upgrade."""
    # Connection and Upgrade (426) are hop-by-hop: WSGI forbids them.
    wsgi_headers = [(k, v) for k, v in _end_to_end(Headers(headers)) if k.lower() != "content-length"]
    if "content-type" not in {k.lower() for k, _ in wsgi_headers}:
        wsgi_headers.append(("Content-Type", "text/plain; charset=utf-8"))
    return f"{status} {ServerResponse(status, Headers(), b'').reason}", wsgi_headers, body


def _run(handler: Callable[[], Any], websocket: WebSocketServerProtocol) -> None:
    """Run a handler on an open connection, then close it as ``serve()`` does.

    Raises:
        BaseException: what the handler raised if it isn't an
            :exc:`Exception` (gunicorn's worker timeout raises
            :exc:`SystemExit` in it), once the connection is closed with 1011.
    """
    stop_heartbeat = _start_heartbeat()
    try:
        run_handler(websocket, handler)
    finally:
        websocket.close()  # if the handler ended on ConnectionClosed: wait for the end
        _forget(websocket)
        stop_heartbeat()


def _start_heartbeat() -> Callable[[], None]:
    """Keep a sync gunicorn worker's heartbeat while a handler holds it."""
    heartbeat = _heartbeat
    if heartbeat is None:
        return lambda: None
    notify, interval = heartbeat
    done = threading.Event()

    def beat() -> None:
        while not done.wait(interval):
            notify()

    threading.Thread(target=beat, name="syncws-wsgi-heartbeat", daemon=True).start()
    return done.set


def websocket_app(handler: Handler, **options: Any) -> WSGIApp:
    """Make a WSGI application out of a WebSocket handler.

    The application accepts the upgrade (see :func:`accept`), runs
    ``handler(websocket)`` in the server's thread, closes the connection
    with 1000 when the handler returns or 1011 when it raises (the error is
    logged), then returns :class:`HandedOver`. A request that isn't a valid
    upgrade gets the HTTP answer ``serve()`` would give (400, 403, 426...).

    Args:
        handler: ``handler(websocket)``; ``websocket.path`` and
            ``websocket.request_headers`` describe the request.
        **options: the keyword arguments of :func:`accept`.

    Returns:
        A WSGI application.

    Raises:
        TypeError: an unknown option.
        ServerNotSupported: this process runs a WSGI server that can't
            hand its sockets over (``waitress-serve``, Django's ``runserver``).
        ValueError: an invalid ``compression``.
    """
    endpoint = _endpoint(options)

    def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            websocket = endpoint.accept(environ, None)
        except AbortHandshake as exc:
            return _answer(environ, start_response, int(exc.status), Headers(exc.headers).items(), exc.body,
                           endpoint.server_header)
        _run(lambda: handler(websocket), websocket)
        return HandedOver(websocket)(start_response)

    return app


def _endpoint(options: Mapping[str, Any]) -> _Endpoint:
    """Check, when an endpoint is defined, its options and the server.

    Returns:
        The endpoint, to accept its requests with.

    Raises:
        TypeError: an unknown option (or a setting of the wrong type).
        ValueError: a setting out of range.
        ServerNotSupported: see :func:`_refuse_unsupported_server`.
    """
    _refuse_unsupported_server()
    return _Endpoint(**options)


def close_refused_upgrades(app: WSGIApp) -> WSGIApp:
    """Make every refused WebSocket upgrade end its connection, the application's too.

    syncws's own refusals (400, 403, 426...) close the connection already.
    This covers the answers an application gives a WebSocket upgrade before
    syncws sees it: a login decorator's 401, 403 or redirect, a router's 404.
    For a request asking for a WebSocket (``Upgrade: websocket``) that
    doesn't get 101, the answer is written with ``Connection: close`` and
    the connection ends, as :func:`~syncws.serve` does, so that a keep-alive
    server (gunicorn's gthread worker) reads no further request from it.
    A response other than :class:`HandedOver` to a request that
    :func:`accept` upgraded raises :exc:`RuntimeError` (the server logs it;
    nothing reaches the WebSocket). Other requests pass through untouched.

    :func:`flask_route` and :class:`WebSocketMiddleware` apply it to the
    application; for Django, wrap the WSGI application::

        application = close_refused_upgrades(get_wsgi_application())

    Args:
        app: the WSGI application.

    Returns:
        The WSGI application, wrapped (once: wrapping it again returns it).
    """
    return app if isinstance(app, _RefusalsClosed) else _RefusalsClosed(app)


class _RefusalsClosed:
    """A WSGI application whose refusals of WebSocket upgrades end the connection."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        upgrade = str(environ.get("HTTP_UPGRADE", ""))
        if "websocket" not in (token.strip().lower() for token in upgrade.split(",")):
            return self.app(environ, start_response)
        started: List[Any] = []
        written: List[bytes] = []

        def capture(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            started[:] = [status, headers]
            return written.append

        body = self.app(environ, capture)
        if ACCEPTED in environ and not (started and str(started[0]).startswith("101")):
            # Written, it would fail: accept() detached the server's socket.
            raise RuntimeError(
                f"the application answered {str(started[0]) if started else 'nothing'!r} to a request "
                "that accept() upgraded: return HandedOver(websocket)(start_response) instead"
            )
        if ACCEPTED in environ or _REFUSED in environ:  # syncws answered on the socket
            start_response(*started)
            return body
        try:
            written.extend(body)  # a generator calls start_response as it starts
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        status = int(str(started[0]).split(" ", 1)[0])
        return _answer(environ, start_response, status, started[1], b"".join(written), SERVER_HEADER)


class WebSocketMiddleware:
    """WSGI middleware mounting WebSocket handlers on paths, for any WSGI app.

    ::

        app = WebSocketMiddleware(app, {"/ws/echo": echo}, compression=None)

    A request whose ``PATH_INFO``, decoded as frameworks decode it (UTF-8,
    see :mod:`syncws.paths`), is one of the paths goes to its handler (see
    :func:`websocket_app`); every other request to ``app``. Hooks and
    handlers see that same decoded path, after ``SCRIPT_NAME``.

    Args:
        app: the WSGI application.
        handlers: ``{path: handler(websocket)}``.
        **options: the keyword arguments of :func:`accept`, for every path.

    Raises:
        TypeError: an unknown option.
        ServerNotSupported: this process runs a WSGI server that can't
            hand its sockets over (``waitress-serve``, Django's ``runserver``).
    """

    def __init__(self, app: WSGIApp, handlers: Mapping[str, Handler], **options: Any) -> None:
        self.app = close_refused_upgrades(app)
        self.routes: Dict[str, WSGIApp] = {
            path: websocket_app(handler, **options) for path, handler in handlers.items()
        }

    def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            path = _wsgi_path(str(environ.get("PATH_INFO", "")))
        except InvalidMessage:
            path = None  # no route has it: the application answers
        route = None if path is None else self.routes.get(path)
        if route is None:
            return self.app(environ, start_response)
        return route(environ, start_response)


# -- frameworks ------------------------------------------------------------------------

def flask_websocket(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn a Flask view into a WebSocket endpoint; routing stays Flask's.

    ::

        @syncws.wsgi.flask_route(app, "/ws/chat/<room>")
        @syncws.wsgi.flask_websocket(subprotocols=["chat"])
        def chat(websocket, room):
            for message in websocket:
                websocket.send(f"{room}: {message}")

    Register the view with :func:`flask_route` or with
    ``app.route(rule, websocket=True)``: werkzeug's router only matches an
    upgrade request with a WebSocket rule.

    The view gets the open connection first, then the URL parameters. It
    runs inside the request context: ``flask.request``, ``session``,
    ``g`` and login extensions work. Decorators above this one (login
    checks) run before the upgrade and may refuse it with 401/403. The
    response headers are gone with the 101: changes to the session inside
    the handler aren't saved.

    Args:
        **options: the keyword arguments of :func:`accept`.

    Returns:
        A decorator.

    Raises:
        TypeError: an unknown option.
        ServerNotSupported: this process runs a WSGI server that can't
            hand its sockets over (``waitress-serve``, Django's ``runserver``).
    """
    websocket_endpoint = _endpoint(options)

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def endpoint(*args: Any, **kwargs: Any) -> Any:
            import flask  # only when a Flask view runs

            def refuse(status: int, headers: List[Tuple[str, str]], body: bytes) -> Any:
                return flask.Response(body, status=status, headers=headers)

            return _upgrade_view(
                flask.request.environ, websocket_endpoint, None, lambda websocket: view(websocket, *args, **kwargs),
                refuse, flask.Response,
            )

        return endpoint

    return decorator


def flask_route(scaffold: Any, rule: str, **route_options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a :func:`flask_websocket` view on a Flask app or blueprint.

    werkzeug's router matches upgrade requests with WebSocket rules only
    (``websocket=True``), and plain requests with the others. This registers
    the view under ``rule`` both ways, so that a plain request gets the
    answer :func:`~syncws.serve` gives (426 Upgrade Required) rather than
    werkzeug's bare 400. It also wraps the application's ``wsgi_app`` in
    :func:`close_refused_upgrades` (once), so that an upgrade refused by a
    decorator above :func:`flask_websocket` (a login check's 401) ends its
    connection too.

    Args:
        scaffold: a :class:`flask.Flask` or :class:`flask.Blueprint`.
        rule: the URL rule, with its parameters (``/ws/chat/<room>``).
        **route_options: options of ``add_url_rule`` (``endpoint``...).

    Returns:
        A decorator registering the view and returning it unchanged.
    """

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        endpoint = route_options.pop("endpoint", None) or view.__name__
        scaffold.add_url_rule(rule, endpoint, view, websocket=True, **route_options)
        scaffold.add_url_rule(rule, endpoint, view, **route_options)
        if hasattr(scaffold, "wsgi_app"):  # an application
            _close_refusals_of(scaffold)
        else:  # a blueprint: its application, once registered
            scaffold.record_once(lambda state: _close_refusals_of(state.app))
        return view

    return decorator


def _close_refusals_of(flask_app: Any) -> None:
    flask_app.wsgi_app = close_refused_upgrades(flask_app.wsgi_app)


def _upgrade_view(
    environ: Mapping[str, Any],
    endpoint: _Endpoint,
    path: Optional[str],
    handler: Handler,
    refuse: Callable[[int, List[Tuple[str, str]], bytes], Any],
    response_class: type,
) -> Any:
    """The body of a framework's WebSocket view.

    Accepts the upgrade, runs the handler, and returns the framework's
    response: an instance of :func:`_handed_over_class` of
    ``response_class`` for the 101 and for refusals syncws answered on the
    socket, ``refuse(status, headers, body)`` for those it couldn't.
    """
    try:
        websocket = endpoint.accept(environ, path)
    except AbortHandshake as exc:
        status, headers = int(exc.status), Headers(exc.headers).items()
        answered = _answer_refusal(environ, status, headers, exc.body, endpoint.server_header)
        if answered is None:
            _, wsgi_headers, body = _wsgi_answer(status, headers, exc.body)
            return refuse(status, wsgi_headers, body)
        return _framework_response(response_class, status, answered)
    _run(lambda: handler(websocket), websocket)
    return _framework_response(response_class, 101, HandedOver(websocket))


def _framework_response(response_class: type, status: int, answered: _Answered) -> Any:
    """A framework's response standing for an answer syncws wrote itself."""
    response = _handed_over_class(response_class)(status=status)
    response.handed_over = answered
    return response


@functools.lru_cache(maxsize=None)
def _handed_over_class(base: type) -> Any:
    """A subclass of a framework's response class that answers :class:`HandedOver`.

    Flask calls its response as a WSGI application; Django iterates it and
    closes it. Either way the server gets :class:`HandedOver`'s behaviour.
    """

    class HandedOverResponse(base):  # type: ignore[misc]
        handed_over: _Answered

        def __call__(self, environ: Dict[str, Any], start_response: StartResponse) -> _Answered:
            return self.handed_over(start_response)

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.handed_over)

    HandedOverResponse.__qualname__ = HandedOverResponse.__name__ = f"HandedOver{base.__name__}"
    return HandedOverResponse


def django_websocket(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Turn a Django view into a WebSocket endpoint; routing stays Django's.

    ::

        @syncws.wsgi.django_websocket()
        def echo(request, websocket):
            for message in websocket:
                websocket.send(message)

        urlpatterns = [path("ws/echo", echo)]

    The view gets Django's ``request`` (``request.user``, ``session``) and
    the open connection, then the URL parameters. Decorators above this one
    (``login_required``, permission checks) run before the upgrade and may
    refuse it.

    Args:
        **options: the keyword arguments of :func:`accept`.

    Returns:
        A decorator.

    Raises:
        TypeError: an unknown option.
        ServerNotSupported: this process runs a WSGI server that can't
            hand its sockets over (``waitress-serve``, Django's ``runserver``).
    """
    websocket_endpoint = _endpoint(options)

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def endpoint(request: Any, *args: Any, **kwargs: Any) -> Any:
            HttpResponse = importlib.import_module("django.http").HttpResponse  # only when a Django view runs

            def refuse(status: int, headers: List[Tuple[str, str]], body: bytes) -> Any:
                response = HttpResponse(body, status=status)
                for name, value in headers:
                    response[name] = value
                return response

            response = _upgrade_view(
                request.META, websocket_endpoint, request.path,  # Django rewrote PATH_INFO as text
                lambda websocket: view(request, websocket, *args, **kwargs), refuse, HttpResponse,
            )
            answered = getattr(response, "handed_over", None)
            if answered is not None:  # Django passes the response's headers to start_response
                for name, value in answered.headers():
                    response[name] = value
            return response

        return endpoint

    return decorator


def django_live_server_thread() -> type:
    """A server thread for Django's ``LiveServerTestCase`` that serves WebSockets.

    ``LiveServerTestCase`` serves the project with Django's ``runserver``
    machinery (:mod:`wsgiref`), which doesn't hand its sockets over: a
    WebSocket view answers 500 under it. The thread this returns runs the
    same server, but its requests carry their socket (:data:`SOCKET`)::

        from django.test import LiveServerTestCase
        from syncws.wsgi import django_live_server_thread

        class EchoTests(LiveServerTestCase):
            server_thread_class = django_live_server_thread()

            def test_echo(self):
                uri = self.live_server_url.replace("http", "ws", 1) + "/ws/echo"
                with syncws.connect(uri) as websocket:
                    ...

    Returns:
        A subclass of ``django.test.testcases.LiveServerThread``.
    """
    return _django_live_server_thread()


@functools.lru_cache(maxsize=None)
def _django_live_server_thread() -> type:
    testcases = importlib.import_module("django.test.testcases")  # only when a Django test asks

    class WebSocketRequestHandler(testcases.QuietWSGIRequestHandler):  # type: ignore[misc, name-defined]
        def get_environ(self) -> Dict[str, Any]:
            environ: Dict[str, Any] = super().get_environ()
            environ[SOCKET] = self.connection
            environ[RFILE] = self.rfile
            return environ

    class WebSocketLiveServerThread(testcases.LiveServerThread):  # type: ignore[misc, name-defined]
        def _create_server(self, connections_override: Any = None) -> Any:
            return self.server_class(
                (self.host, self.port), WebSocketRequestHandler, allow_reuse_address=False,
                connections_override=connections_override,
            )

    return WebSocketLiveServerThread


# -- gunicorn ---------------------------------------------------------------------------

def gunicorn_post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook: shutdown and heartbeat for WebSockets.

    In the worker process, wraps gunicorn's SIGTERM handler (and SIGINT's
    and SIGQUIT's) so that a graceful stop first closes every open WebSocket with 1001 (going away)
    through :func:`close_all`; their handlers return and the worker exits
    within ``graceful_timeout`` instead of dropping them when it expires.
    In a sync worker, whose only thread runs the handler, it also keeps the
    worker's heartbeat going while a WebSocket is open (otherwise gunicorn
    kills the worker after ``timeout`` seconds). And unless the application
    configured logging, it sends syncws's log lines (a handler's traceback,
    connections opened and closed) to gunicorn's error log, at its
    ``--log-level`` (:func:`syncws.logconfig.use_gunicorn_logging`).

    Call it from your gunicorn config file's own hook::

        from syncws.wsgi import gunicorn_post_worker_init

        def post_worker_init(worker):
            gunicorn_post_worker_init(worker)

    or run ``gunicorn -c python:syncws.gunicorn_conf ...``, which also
    keeps the settings and hooks of ``./gunicorn.conf.py``.

    Args:
        worker: the gunicorn worker.
    """
    global _heartbeat
    # SIGTERM is gunicorn's graceful stop; SIGINT and SIGQUIT stop at once
    # (0.1 s later): the close frames go out if they can.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, functools.partial(_close_then, signal.getsignal(signum)))
    # As gunicorn sets it: SIGTERM must not interrupt system calls.
    signal.siginterrupt(signal.SIGTERM, False)
    if type(worker).__name__ == "SyncWorker":
        timeout = float(getattr(worker, "timeout", 0) or 0)
        if timeout > 0:
            _heartbeat = (worker.notify, max(timeout / 4, 0.5))
    error_log = getattr(getattr(worker, "log", None), "error_log", None)
    if isinstance(error_log, logging.Logger):
        from .logconfig import use_gunicorn_logging  # json and datetime: only under gunicorn

        use_gunicorn_logging(error_log)


def _close_then(previous: Any, signum: int, frame: Any) -> None:
    """A signal handler: close the WebSockets with 1001, then gunicorn's handler."""
    close_all(CloseCode.GOING_AWAY, "server shutting down")  # logs from its own thread
    if callable(previous):
        previous(signum, frame)
