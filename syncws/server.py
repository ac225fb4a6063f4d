"""The threaded server: :func:`serve` and :class:`WebSocketServer`.

Theory of operation: one accept thread per listening socket
(:mod:`syncws.admission`); each accepted connection gets a thread of its own
that performs TLS and the opening handshake under ``open_timeout`` (a
stalled client only ever holds its own thread), then runs the application's
handler with the open connection. The thread comes from
:mod:`syncws.threadpool`, as readers' do: usually one that an ended
connection left idle, so a new connection's handshake begins with a queue
hand-off rather than a thread start. This module counts those connections
and ends them: :meth:`WebSocketServer.close` stops accepting, cancels the
handshakes under way and closes the open connections.

The connection the thread serves is a
:class:`~syncws.serverprotocol.WebSocketServerProtocol`, which performs the
opening handshake (:mod:`syncws.serverprotocol`); the addresses come from
:mod:`syncws.ports`, the handler's call from :mod:`syncws.handlers`.
"""

from __future__ import annotations

import http
import logging
import selectors
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Set, Tuple, Type, Union

from . import admission, metrics, ports, sockopts, threadpool, timers
from .framing import CloseCode, serialize_close
from .hooks import Origins, ProcessResponse, check_origins
from .handlers import takes_path
from .metrics import ServerMetrics
from .logs import format_address, set_connection
from .opening import ServerPolicy
from .serverprotocol import ProcessRequest, SelectSubprotocol, send_http_answer
from .settings import SizeSetting, check_settings
from .transport import Transport

# Names this module held before their modules of their own; still exported.
from .handlers import run_handler as run_handler
from .opening import http_answer as http_answer
from .serverprotocol import SERVER_HEADER as SERVER_HEADER
from .serverprotocol import WebSocketServerProtocol as WebSocketServerProtocol

if TYPE_CHECKING:  # ssl costs megabytes of memory: imported only for wss://
    import ssl as ssl_module

__all__ = ["serve", "unix_serve", "WebSocketServer", "WebSocketServerProtocol", "SERVER_HEADER"]

class WebSocketServer:
    """A running server, as :func:`serve` returns it.

    Use it as a context manager, or call :meth:`close` then
    :meth:`wait_closed`; :meth:`serve_forever` blocks until it is closed.
    """

    def __init__(
        self,
        sockets: List[socket.socket],
        make_protocol: Callable[["WebSocketServer"], WebSocketServerProtocol],
        handler: Callable[..., Any],
        *,
        ssl_context: Optional[ssl_module.SSLContext],
        open_timeout: Optional[float],
        max_connections: Optional[int],
        server_header: Optional[str],
        logger: logging.Logger,
        max_pending_handshakes: Optional[int] = None,
        first_byte_timeout: Optional[float] = None,
        ping_interval: Optional[float] = None,
        ping_timeout: Optional[float] = None,
        counters: Optional[metrics.ConnectionCounters] = None,
    ) -> None:
        #: The listening sockets.
        self.sockets = sockets
        self._port: Optional[int] = next(
            (int(sock.getsockname()[1]) for sock in sockets if sock.family in (socket.AF_INET, socket.AF_INET6)),
            None,
        )
        self._make_protocol = make_protocol
        self._handler = handler
        self._handler_takes_path = takes_path(handler)
        self._ssl_context = ssl_context
        self._open_timeout = open_timeout
        self._max_connections = max_connections
        # Connections in their opening handshake: counted here, not against
        # max_connections (see syncws.admission).
        self._handshake_pool = admission.HandshakePool(max_pending_handshakes)
        self._first_byte_timeout = first_byte_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        # Whether accepted connections inherit the listeners' TCP options
        # (Linux), or each must be tuned (see syncws.sockopts).
        self._tuned_by_listener = all([
            sockopts.tune_listener(sock, ping_interval=ping_interval, ping_timeout=ping_timeout)
            for sock in sockets
        ])
        self._server_header = server_header
        self.logger = logger
        #: The server's :class:`~syncws.metrics.ConnectionCounters`; see :meth:`metrics`.
        self.counters = metrics.track(metrics.ConnectionCounters()) if counters is None else counters
        # Guards _serving, _connections and _closing; taken briefly, never
        # while blocking on a socket.
        self._lock = threading.Lock()
        # How many connections a thread serves, from accept to the
        # handler's end; notified, under _lock, when it drops to 0.
        self._serving = 0
        self._all_served = threading.Condition(self._lock)
        self._connections: Set[WebSocketServerProtocol] = set()
        # Connections still in their opening handshake.
        self._pending: Set[WebSocketServerProtocol] = set()
        self._closing = False
        self._close_args: Tuple[int, str] = (CloseCode.GOING_AWAY, "")
        self._closed = threading.Event()
        # The socket file unix_serve() bound for this server, removed by
        # close() (see syncws.ports.remove_socket_file).
        self._socket_file: Optional[ports.SocketFile] = None
        # One socket pair per accept thread: close() writes to the second
        # socket to wake the thread up.
        self._wakeups = [socket.socketpair() for _ in sockets]
        self._accept_threads = [
            threading.Thread(
                target=self._accept_loop, args=(sock, admission.watch(sock, wakeup[0]), wakeup[0]),
                name=f"syncws-accept-{_describe_address(sock)}", daemon=True,
            )
            for sock, wakeup in zip(sockets, self._wakeups)
        ]
        for thread in self._accept_threads:
            thread.start()

    @property
    def port(self) -> Optional[int]:
        """The port of the first TCP listening socket (useful with ``port=0``);
        ``None`` on a Unix socket. Still known after :meth:`close`."""
        return self._port

    def metrics(self) -> ServerMetrics:
        """What the server's connections did so far, and how many are open.

        Cheap enough for every scrape: the open connections' counts are read,
        nothing is locked for long (see :mod:`syncws.metrics`);
        :func:`syncws.metrics.render` writes it in Prometheus' format.

        Returns:
            A :class:`~syncws.metrics.ServerMetrics` snapshot.
        """
        return self.counters.snapshot()

    @property
    def connections(self) -> Set[WebSocketServerProtocol]:
        """The connections that are open, as a new set."""
        with self._lock:
            return {c for c in self._connections if c.open}

    def _accept_loop(self, listener: socket.socket, selector: selectors.BaseSelector, wakeup: socket.socket) -> None:
        """An accept thread: admit new connections to their opening handshake."""
        admission.accept_loop(
            listener,
            selector=selector,
            wakeup=wakeup,
            pool=self._handshake_pool,
            # A silent connection is dropped by whichever deadline is first.
            first_byte_timeout=min(
                (t for t in (self._first_byte_timeout, self._open_timeout) if t is not None), default=None
            ),
            queue_timeout=self._open_timeout,
            is_closing=lambda: self._closing,
            at_capacity=self._at_capacity,
            refuse_busy=self._refuse_busy,
            start_handshake=self._start_handshake,
            logger=self.logger,
        )

    def _at_capacity(self) -> bool:
        """Whether max_connections WebSocket connections are open."""
        with self._lock:
            return self._max_connections is not None and len(self._connections) >= self._max_connections

    def _start_handshake(self, sock: socket.socket, address: Any) -> None:
        """Give an admitted connection its thread."""
        if not self._tuned_by_listener:
            try:
                sockopts.tune_connection(sock, ping_interval=self._ping_interval, ping_timeout=self._ping_timeout)
            except OSError as exc:  # the client has already gone
                self.logger.debug("%s: %s", address, exc)
                sock.close()
                return
        name = f"syncws-server-{format_address(address)}"  # as the reader thread's
        with self._lock:
            if self._closing:
                sock.close()
                return
            self._serving += 1
        self._handshake_pool.add(sock)
        try:
            # A closure, not functools.partial: called from Python, the
            # connection's whole life doesn't run in a frame re-entered from C.
            threadpool.start(lambda: self._serve_connection(sock, address), name)
        except RuntimeError as exc:  # "can't start new thread": out of threads or memory
            self.logger.error("%s: dropped: %s", address, exc)
            self._handshake_pool.remove(sock)
            self._served()
            sock.close()

    def _served(self) -> None:
        """Count a connection whose thread is done with it."""
        with self._lock:
            self._serving -= 1
            if self._serving == 0:
                self._all_served.notify_all()

    def _refuse_busy(self, sock: socket.socket) -> None:
        """Answer 503 without starting a thread, then let the client go."""
        self.logger.warning("max_connections (%s) reached: answering 503", self._max_connections)
        self.counters.refused(http.HTTPStatus.SERVICE_UNAVAILABLE)
        sock.setblocking(False)
        send_http_answer(
            sock, http.HTTPStatus.SERVICE_UNAVAILABLE, [("Retry-After", "1")],
            b"Failed to open a WebSocket connection: the server is at its connection limit.\n",
            self._server_header,
        )
        # Leave the client a moment to read the answer before the close;
        # closing at once could reset its unread request bytes.
        timers.call_later(1.0, sock.close)

    def _serve_connection(self, sock: socket.socket, address: Any) -> None:
        """A connection thread: handshake, handler, close."""
        try:
            protocol = self._make_protocol(self)
            set_connection(protocol)
            transport = Transport(sock, read_limit=protocol.read_limit, remote_address=address)
            with self._lock:
                # close() cancels the handshakes in _pending: one that
                # registers after it must not start.
                closing = self._closing
                if not closing:
                    self._pending.add(protocol)
            if closing:
                sock.close()
                return
            self._handshake_pool.cancellable(sock, protocol._cancel_handshake)
            try:
                opened = protocol._run(transport, self._ssl_context, self._open_timeout)
            finally:
                self._handshake_pool.remove(sock)
                with self._lock:
                    self._pending.discard(protocol)
            if not opened:
                return
            with self._lock:
                # Handshakes don't count against max_connections, so more
                # may finish than there are free places.
                full = self._max_connections is not None and len(self._connections) >= self._max_connections
                if not full:
                    self._connections.add(protocol)
                closing = self._closing
            try:
                if closing:
                    protocol.close(*self._close_args)
                    return
                if full:
                    protocol.logger.warning("max_connections (%s) reached: closing with 1013", self._max_connections)
                    protocol.close(CloseCode.TRY_AGAIN_LATER, "the server is at its connection limit")
                    return
                self._run_handler(protocol)
            finally:
                with self._lock:
                    self._connections.discard(protocol)
        except Exception:
            self.logger.exception("connection from %s failed", address)
            sock.close()
        finally:
            self._handshake_pool.remove(sock)  # if it failed before its handshake
            set_connection(None)
            self._served()

    def _run_handler(self, protocol: WebSocketServerProtocol) -> None:
        """Run the application's handler, then close the connection."""
        try:
            if self._handler_takes_path:
                run_handler(protocol, lambda: self._handler(protocol, protocol.path))
            else:
                run_handler(protocol, lambda: self._handler(protocol))
        except BaseException:
            # SystemExit and the like, which run_handler logged, answered
            # with 1011 and raised again: this thread was all they could end.
            pass

    def is_serving(self) -> bool:
        """Whether the server accepts new connections: until :meth:`close`.

        Its connections may still be closing after that: a readiness check
        (``ready`` of :func:`syncws.admin.serve_admin`) fails meanwhile.
        """
        return not self._closing

    def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Stop accepting and close every connection.

        Idempotent; safe from any thread, handlers included. Returns without
        waiting: use :meth:`wait_closed` for that. Handlers blocked in
        ``recv()`` get :exc:`~syncws.ConnectionClosed` once the closing
        handshake is over.

        Args:
            code: the close code sent to every client (1001, going away).
            reason: the close reason.

        Raises:
            ValueError: a code that can't be sent or a reason over 123 bytes.
        """
        serialize_close(code, reason)  # validates before any effect
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._close_args = (code, reason)
            connections = list(self._connections)
            pending = list(self._pending)
        if self._socket_file is not None:
            # While the socket still listens: a newer unix_serve() can't
            # have replaced the file meanwhile (it refuses a live socket).
            ports.remove_socket_file(self._socket_file, self.logger)
        for sock in self.sockets:
            try:
                # Wakes the accept thread blocked on this socket.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for _, wakeup in self._wakeups:
            try:
                wakeup.send(b"\0")
            except OSError:
                pass
            wakeup.close()
        for connection in pending:
            # Still in the opening handshake: nothing to close politely.
            connection._cancel_handshake()
        for connection in connections:
            connection.start_closing(code, reason)
        self._closed.set()

    def wait_closed(self, timeout: Optional[float] = None) -> None:
        """Wait until the accept threads ended and every connection was served.

        A connection is served once its handler returned and its connection
        closed (or its handshake failed); its thread may then wait idle for
        another connection (see :mod:`syncws.threadpool`).

        Args:
            timeout: seconds to wait; ``None`` for as long as it takes.

        Raises:
            TimeoutError: connections are still being served after ``timeout``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._accept_threads:
            thread.join(_remaining(deadline))
        with self._lock:
            if not self._all_served.wait_for(lambda: self._serving == 0, _remaining(deadline)):
                count = self._serving
                raise TimeoutError(
                    f"{count} connection{'' if count == 1 else 's'} still being served after {timeout} seconds"
                )

    def serve_forever(self) -> None:
        """Block until the server is closed; Ctrl-C closes it gracefully."""
        try:
            while not self._closed.wait(1.0):
                pass  # waking up now and then lets KeyboardInterrupt in
        except KeyboardInterrupt:
            self.close()
        self.wait_closed()

    def __enter__(self) -> "WebSocketServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
        self.wait_closed()


def _bound_address(sock: socket.socket) -> Any:
    try:
        return sock.getsockname()
    except OSError:
        return None


def _remaining(deadline: Optional[float]) -> Optional[float]:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _describe_address(sock: socket.socket) -> str:
    try:
        return str(sock.getsockname())
    except OSError:
        return "?"


def serve(
    ws_handler: Callable[..., Any],
    host: Optional[str] = None,
    port: Optional[int] = None,
    *,
    create_protocol: Optional[Type[WebSocketServerProtocol]] = None,
    timeout: Optional[float] = 10,
    max_size: SizeSetting = 2**20,
    max_queue: SizeSetting = 2**5,
    read_limit: int = 2**16,
    write_limit: int = 2**16,
    origins: Optional[Origins] = None,
    subprotocols: Optional[Sequence[str]] = None,
    extra_headers: Any = None,
    compression: Any = "deflate",
    ssl: Optional[ssl_module.SSLContext] = None,
    sock: Optional[socket.socket] = None,
    ping_interval: Optional[float] = 20,
    ping_timeout: Optional[float] = 20,
    process_request: Optional[ProcessRequest] = None,
    open_timeout: Optional[float] = None,
    close_timeout: Optional[float] = None,
    write_timeout: Optional[float] = 60,
    max_connections: Optional[int] = None,
    server_header: Optional[str] = SERVER_HEADER,
    logger: Union[logging.Logger, str, None] = None,
    backlog: Optional[int] = None,
    select_subprotocol: Optional[SelectSubprotocol] = None,
    process_response: Optional[ProcessResponse] = None,
    max_pending_handshakes: Optional[int] = 128,
    first_byte_timeout: Optional[float] = 5,
    counters: Optional[metrics.ConnectionCounters] = None,
    **kwds: Any,
) -> WebSocketServer:
    """Start a WebSocket server; it is listening and accepting on return.

    ::

        def echo(websocket):
            for message in websocket:
                websocket.send(message)

        with syncws.serve(echo, "localhost", 8765) as server:
            server.serve_forever()

    Args:
        ws_handler: ``handler(websocket, path)`` or ``handler(websocket)``,
            run in the connection's thread. When it returns the connection
            closes with 1000; when it raises, the error is logged and the
            connection closes with 1011.
        host: the interface to listen on; ``None`` for all.
        port: the port; 0 picks a free one (see :attr:`WebSocketServer.port`).
        create_protocol: a :class:`WebSocketServerProtocol` subclass.
        timeout: seconds for the opening and closing handshakes (seed name).
        max_size: the largest incoming message in bytes; ``None`` for no
            limit; or ``(message, fragment)`` (see :mod:`syncws.settings`).
        max_queue: received messages buffered per connection before reading
            pauses; or ``(high, low)``: pause at ``high``, resume at ``low``.
        read_limit: the most bytes asked of the socket per read (reads start
            smaller and grow to it while the peer keeps them full).
        write_limit: payloads up to this size go out with their header in
            one system call.
        origins: allowed ``Origin`` values: strings, compiled regular
            expressions (:class:`re.Pattern`, matched against the whole
            value) and ``None`` for a request without ``Origin``; others get
            HTTP 403.
        subprotocols: the server's subprotocols, in order of preference.
        extra_headers: headers for the 101 response (seed name): a mapping,
            pairs, or ``(path, request_headers) -> mapping or pairs``.
        compression: ``"deflate"`` (default), ``None``, or a
            ``DeflateSettings``.
        ssl: an :class:`ssl.SSLContext` to serve ``wss://``.
        sock: a listening socket (TCP or Unix) to use instead of binding.
        ping_interval: seconds between keepalive pings; ``None`` disables.
        ping_timeout: seconds to wait for a pong; ``None`` waits forever.
        process_request: ``(path, request_headers)`` returning ``None`` or
            ``(status, headers, body)`` (e.g. :func:`syncws.respond`) to
            answer plain HTTP.
        open_timeout: seconds for TLS and the opening handshake.
        close_timeout: seconds for the closing handshake.
        write_timeout: seconds a send may take before its connection is
            aborted; ``None`` waits forever.
        max_connections: open WebSocket connections served at once; a new
            client gets HTTP 503 while there are that many (connections
            still in their opening handshake don't count: see
            ``max_pending_handshakes``); ``None`` for no limit.
        server_header: the ``Server`` header; ``None`` omits it.
        logger: a logger or logger name (default ``syncws.server``).
        backlog: the listen backlog; ``None`` asks for the system's maximum
            (``net.core.somaxconn`` on Linux, else 1024), so that a burst of
            clients isn't dropped into seconds of SYN retries.
        select_subprotocol: ``(connection, client_subprotocols)`` returning
            the subprotocol to use (one the client offered) or ``None``;
            called whenever the client offers subprotocols, instead of
            picking among ``subprotocols``.
        process_response: ``(connection, request, response)``, called with
            every handshake response, the 101 and the refusals; it may change
            ``response.headers`` in place and return ``None``, or return
            another response (:func:`syncws.respond`, or ``(status, headers,
            body)``): a status other than 101 refuses the connection.
        max_pending_handshakes: connections in their opening handshake
            (TLS and the HTTP request) served at once, each by a thread, on
            top of ``max_connections``; eight times as many may wait for
            their first byte, without a thread. When the pool is
            full, a newcomer waits for a slot, and a handshake that has
            lasted over a second is dropped to make room for it, so slow
            or idle clients can't keep real ones out. ``None`` for no limit.
        first_byte_timeout: seconds a new connection may stay silent
            before it is dropped (``open_timeout`` if shorter); it holds no
            thread meanwhile, and ``open_timeout`` starts again with its
            first byte. ``None`` for no limit but ``open_timeout``.
        counters: the :class:`~syncws.metrics.ConnectionCounters` to count
            the server's connections in; by default its own, which
            :func:`syncws.metrics.collect` adds up; counters you make are
            added up there once given to :func:`syncws.metrics.track`.
        **kwds: ``additional_headers`` (modern name of ``extra_headers``),
            and ``reuse_port=True`` to share the port between processes:
            with any process of this user that listens there with
            ``SO_REUSEPORT``, syncws or not. To start such a group, reserve
            the port first (:func:`syncws.ports.reserve`, as ``python -m
            syncws serve --processes`` does), which refuses a port already
            served.

    Returns:
        The running :class:`WebSocketServer`.

    Raises:
        OSError: the address can't be bound.
        TypeError: an unknown keyword argument, or a setting of the wrong
            type (see :func:`syncws.settings.check_settings`).
        ValueError: a setting out of range (the message names it), or
            ``max_pending_handshakes`` less than 1.
    """
    reuse_port = kwds.pop("reuse_port", False)
    additional_headers = kwds.pop("additional_headers", None)
    if additional_headers is not None:
        if extra_headers is not None:
            raise TypeError("pass extra_headers or additional_headers, not both")
        extra_headers = additional_headers
    if kwds:
        raise TypeError(f"serve() got unexpected keyword arguments: {', '.join(sorted(kwds))}")
    # Validates before binding.
    check_origins(origins)
    settings = check_settings(
        max_size=max_size, max_queue=max_queue, timeout=timeout, open_timeout=open_timeout,
        close_timeout=close_timeout, write_timeout=write_timeout, read_limit=read_limit,
        write_limit=write_limit, ping_interval=ping_interval, ping_timeout=ping_timeout,
        compression=compression,
    )
    if isinstance(logger, str) or logger is None:
        logger = logging.getLogger(logger or "syncws.server")
    if max_pending_handshakes is not None and max_pending_handshakes < 1:
        raise ValueError(f"max_pending_handshakes must be >= 1 or None, got {max_pending_handshakes}")
    if backlog is None:
        backlog = sockopts.default_backlog()
    if sock is not None:
        sockets = [sock]
    else:
        sockets = ports.listening_sockets(host, port or 0, backlog, reuse_port=bool(reuse_port))
    protocol_class = create_protocol or WebSocketServerProtocol
    open_timeout = settings.open_timeout
    # One for every connection: what the handshakes accept doesn't change.
    policy = ServerPolicy(origins, subprotocols, extra_headers, compression, server_header, select_subprotocol)

    def make_protocol(server: WebSocketServer) -> WebSocketServerProtocol:
        return protocol_class(
            ws_handler,
            server,
            host=host,
            port=port,
            secure=ssl is not None,
            settings=settings,
            logger=logger,
            origins=origins,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
            compression=compression,
            process_request=process_request,
            server_header=server_header,
            select_subprotocol=select_subprotocol,
            process_response=process_response,
            policy=policy,
        )

    logger.info("server listening on %s", ", ".join(format_address(_bound_address(sock)) for sock in sockets))
    return WebSocketServer(
        sockets,
        make_protocol,
        ws_handler,
        ssl_context=ssl,
        open_timeout=open_timeout,
        max_connections=max_connections,
        server_header=server_header,
        logger=logger,
        max_pending_handshakes=max_pending_handshakes,
        first_byte_timeout=first_byte_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        counters=counters,
    )


def unix_serve(ws_handler: Callable[..., Any], path: str, **kwargs: Any) -> WebSocketServer:
    """Start a WebSocket server on a Unix socket.

    Args:
        ws_handler: as for :func:`serve`.
        path: the socket's path. A socket file left there by a server that
            is gone is replaced; anything else is refused. The server
            removes its socket file when it closes (unless another file
            has taken its place since).
        **kwargs: as for :func:`serve`.

    Returns:
        The running :class:`WebSocketServer`.

    Raises:
        FileExistsError: something other than a socket is at ``path``.
        OSError: a server is listening on ``path`` (``EADDRINUSE``), or it
            can't be bound.
    """
    backlog = kwargs.pop("backlog", None)
    sock, socket_file = ports.unix_listener(path, sockopts.default_backlog() if backlog is None else backlog)
    try:
        server = serve(ws_handler, sock=sock, **kwargs)
    except BaseException:
        if socket_file is not None:
            ports.remove_socket_file(socket_file, logging.getLogger("syncws.server"))
        sock.close()
        raise
    server._socket_file = socket_file
    return server
