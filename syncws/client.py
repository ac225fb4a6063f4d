"""The client: :func:`connect` and :class:`WebSocketClientProtocol`.

This module only sets a connection up: it opens TCP (and TLS), performs the
opening handshake (:mod:`syncws.opening` decides what to send and what to
accept; this module writes and reads the heads), then
hands the socket to :class:`~syncws.protocol.WebSocketCommonProtocol`, which
runs the connection. It holds no framing logic.
"""

from __future__ import annotations

import functools
import logging
import random
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

from . import sockopts, timers
from .exceptions import InvalidHandshake, InvalidMessage, InvalidStatusCode, InvalidURI
from .extensions import permessage_deflate
from .http import Headers, HeadersLike, read_response, serialize_request
from .opening import ClientOpening
from .protocol import WebSocketCommonProtocol
from .logs import connection_label, format_head, format_status, opened_line
from .proxy import open_proxy, proxy_for, proxy_target
from .redirects import REDIRECT_STATUSES, AddressSpace, RedirectChain, address_space, host_address_space
from .safetext import redact_uri
from .settings import SizeSetting, check_settings
from .transport import Transport
from .uri import WebSocketURI, parse_uri
from .version import __version__

# connect() parses its URI on every call, and applications connect to the
# same few URIs again and again: parsed once (a parsed URI is immutable;
# an invalid one raises every time, as errors aren't remembered).
_parse_uri = functools.lru_cache(maxsize=64)(parse_uri)

if TYPE_CHECKING:  # ssl costs megabytes of memory: imported only for wss://
    import ssl as ssl_module

__all__ = [
    "connect", "unix_connect", "reconnect", "Reconnect", "retry_transient",
    "WebSocketClientProtocol", "USER_AGENT", "REDIRECT_STATUSES",
]

#: The default ``User-Agent`` header.
USER_AGENT = f"Python/{'.'.join(map(str, __import__('sys').version_info[:2]))} syncws/{__version__}"

# The most bytes of a refused handshake's body kept for InvalidStatusCode.
_MAX_ERROR_BODY = 2**16


class WebSocketClientProtocol(WebSocketCommonProtocol):
    """The client side of a connection, as :func:`connect` returns it.

    Takes the keyword arguments of
    :class:`~syncws.protocol.WebSocketCommonProtocol`. Subclass it and pass
    the subclass as ``create_protocol`` to :func:`connect` to customize it.
    """

    is_client = True
    side = "client"

    # As WebSocketCommonProtocol's, for the same reason.
    __slots__ = ("compression", "user_agent_header")

    def __init__(
        self, *, compression: Any = "deflate", user_agent_header: Optional[str] = USER_AGENT, **kwargs: Any
    ) -> None:
        self.compression: Any = compression
        self.user_agent_header: Optional[str] = user_agent_header
        super().__init__(**kwargs)

    def handshake(
        self,
        wsuri: WebSocketURI,
        origin: Optional[str] = None,
        subprotocols: Optional[Sequence[str]] = None,
        extra_headers: Optional[HeadersLike] = None,
    ) -> None:
        """Perform the opening handshake on the connected socket.

        On success, ``subprotocol``, ``extensions``, ``request_headers`` and
        ``response_headers`` are set; :func:`connect` then starts the
        connection.

        Args:
            wsuri: the URI connected to.
            origin: the ``Origin`` header to send, if any.
            subprotocols: subprotocols to offer, in order of preference.
            extra_headers: more request headers (a mapping or pairs); a
                ``User-Agent`` here replaces the default one.

        Raises:
            InvalidStatusCode: the server answered with a status other
                than 101.
            InvalidHeader: a response header is missing or wrong (the
                exception names it).
            InvalidMessage: the response isn't valid HTTP.
            NegotiationError: the server chose an extension or subprotocol
                that wasn't offered.
        """
        transport = self.transport
        assert transport is not None, "connection_made() must come first"
        self.path = wsuri.resource_name
        client = ClientOpening(
            wsuri, origin=origin, subprotocols=subprotocols, extra_headers=extra_headers,
            compression=self.compression, user_agent=self.user_agent_header,
        )
        headers = self.request_headers = client.request_headers
        debug = self.logger.isEnabledFor(logging.DEBUG)
        if debug:
            self.logger.debug(
                "%s request: %s", connection_label(self),
                format_head(f"GET {redact_uri(wsuri.resource_name)}", headers.items()),
            )
        transport.write(serialize_request(wsuri.resource_name, headers), None)
        response = read_response(transport.read_line, read_head=transport.read_head)
        if debug:
            self.logger.debug(
                "%s response: %s", connection_label(self),
                format_head(format_status(response.status_code), response.headers.items()),
            )
        self.response_headers = response.headers
        body = b"" if response.status_code == 101 else self._read_error_body(response.headers)
        self.subprotocol, self.extensions = client.check(response, body)

    def _read_error_body(self, headers: Headers) -> bytes:
        """Read the body of a refused handshake, for the error message."""
        transport = self.transport
        assert transport is not None
        try:
            length = int(headers.get("Content-Length", "") or -1)
        except ValueError:
            length = -1
        if length < 0 and "Transfer-Encoding" in headers:
            return b""  # chunked: not worth decoding for an error message
        limit = _MAX_ERROR_BODY if length < 0 else min(length, _MAX_ERROR_BODY)
        body = b""
        try:
            while len(body) < limit:
                chunk = transport.read_available(limit - len(body))
                if not chunk:
                    break
                body += chunk
        except OSError:
            pass  # the status is what matters; keep what arrived
        return body


def connect(
    uri: str,
    *,
    create_protocol: Optional[Type[WebSocketClientProtocol]] = None,
    timeout: Optional[float] = 10,
    max_size: SizeSetting = 2**20,
    max_queue: SizeSetting = 2**5,
    read_limit: int = 2**16,
    write_limit: int = 2**16,
    origin: Optional[str] = None,
    subprotocols: Optional[Sequence[str]] = None,
    extra_headers: Optional[HeadersLike] = None,
    compression: Any = "deflate",
    ssl: Union[ssl_module.SSLContext, bool, None] = None,
    sock: Optional[socket.socket] = None,
    ping_interval: Optional[float] = 20,
    ping_timeout: Optional[float] = 20,
    open_timeout: Optional[float] = None,
    close_timeout: Optional[float] = None,
    write_timeout: Optional[float] = 60,
    additional_headers: Optional[HeadersLike] = None,
    user_agent_header: Optional[str] = USER_AGENT,
    server_hostname: Optional[str] = None,
    proxy: Union[str, bool, None] = True,
    logger: Union[logging.Logger, str, None] = None,
    max_redirects: int = 10,
    allow_private_redirects: bool = False,
    keep_headers_on_redirect: bool = False,
    **kwds: Any,
) -> WebSocketClientProtocol:
    """Open a WebSocket connection and return it, ready to use.

    The connection is a context manager::

        with syncws.connect("ws://localhost:8765") as ws:
            ws.send("Hello")
            print(ws.recv())

    Args:
        uri: a ``ws://`` or ``wss://`` URI; user info in it (``ws://u:p@h/``)
            is sent as HTTP Basic authentication.
        create_protocol: a :class:`WebSocketClientProtocol` subclass to use.
        timeout: seconds for the opening and the closing handshakes (seed
            name; ``open_timeout`` and ``close_timeout`` override it).
        max_size: the largest incoming message in bytes; ``None`` for no
            limit; or ``(message, fragment)`` (see :mod:`syncws.settings`).
        max_queue: received messages buffered before reading pauses; or
            ``(high, low)``: pause at ``high``, resume at ``low``.
        read_limit: the most bytes asked of the socket per read (reads start
            smaller and grow to it while the peer keeps them full).
        write_limit: payloads up to this size go out with their header in
            one system call.
        origin: the ``Origin`` header.
        subprotocols: subprotocols to offer, in order of preference.
        extra_headers: more request headers, a mapping or pairs (seed name of
            ``additional_headers``).
        compression: ``"deflate"`` (default) offers permessage-deflate;
            ``None`` disables it; a
            :class:`~syncws.extensions.permessage_deflate.DeflateSettings`
            tunes it.
        ssl: an :class:`ssl.SSLContext` for ``wss://`` (default: a verifying
            context from :func:`ssl.create_default_context`); ``True`` for
            that default even with ``ws://``.
        sock: an already connected socket to use instead of opening one.
        ping_interval: seconds between keepalive pings; ``None`` disables.
        ping_timeout: seconds to wait for a keepalive pong; ``None`` waits
            forever.
        open_timeout: seconds for TCP, TLS and the opening handshake, of
            every hop of a redirect chain together.
        close_timeout: seconds for the closing handshake.
        write_timeout: seconds a send may take before the connection is
            aborted; ``None`` waits forever.
        additional_headers: more request headers (modern name).
        user_agent_header: the ``User-Agent`` header; ``None`` omits it.
        server_hostname: the name to send in SNI and check the TLS
            certificate against, when it isn't the URI's host; for the URI's
            origin only: a redirect to another origin checks the new host's
            own name.
        proxy: ``True`` (default) uses the proxy the environment names
            (``wss_proxy`` / ``ws_proxy``, ``socks_proxy``, ``https_proxy``
            / ``http_proxy``, ``all_proxy``, minus ``no_proxy``: see
            :mod:`syncws.proxy`); a URL like
            ``"http://user:pass@proxy:3128"`` or
            ``"socks5h://user:pass@proxy:1080"`` uses that proxy (SOCKS
            needs ``pip install 'syncws[socks]'``); ``None`` connects
            directly.
        logger: a logger or logger name (default ``syncws.client``).
        max_redirects: how many HTTP redirects (301, 302, 303, 307, 308) to
            follow; 0 follows none. ``ws://`` may redirect to ``wss://``,
            never the other way. Once a redirect leaves the URI's origin
            (scheme, host or port differ), the rest of the chain goes without
            the headers given in ``additional_headers`` (``Authorization``,
            ``Cookie``, ``X-Api-Key``... all of them), without ``host``,
            ``port`` and ``server_hostname``, and without the URI's user
            info. See :mod:`syncws.redirects`.
        allow_private_redirects: follow a redirect into a more private
            address space: from a public address to a local one (private,
            link-local such as the cloud metadata address 169.254.169.254,
            unique local...) or to loopback, or from a local one to
            loopback. Refused by default, since a public server could use
            it to make this client read an internal service. The addresses
            checked are those connected to, after resolving the name (for
            a ``socks5://`` or ``socks4://`` proxy too, which is given the
            address); through a proxy that resolves names itself
            (``socks5h://``, ``socks4a://``, HTTP), only IP addresses and
            ``localhost`` names can be checked.
        keep_headers_on_redirect: send the ``additional_headers``,
            credentials included, to every origin a redirect leads to (as
            curl's ``--location-trusted``); only for servers you trust with
            them.
        **kwds: ``host`` and ``port`` to connect somewhere other than the
            URI says (the ``Host`` header still follows the URI), and
            ``source_address`` to bind the local end.

    Returns:
        The open connection.

    Raises:
        InvalidURI: the URI isn't a valid WebSocket URI.
        InvalidHandshake: the server refused or botched the handshake (see
            :exc:`~syncws.InvalidStatusCode`, :exc:`~syncws.InvalidHeader`).
        InvalidStatusCode: also for a redirect not followed (too many,
            ``wss://`` to ``ws://``, no ``Location``, into a more private
            address space), with the redirect's ``status_code``, ``headers``
            and ``body``; the text never holds the body.
        ProxyError: the proxy refused the tunnel.
        ImportError: a SOCKS proxy without python-socks installed.
        OSError: TCP or TLS failed.
        TimeoutError: the opening handshake (TCP, the proxy, TLS and the
            HTTP upgrade, redirects included) didn't finish within
            ``open_timeout``, on every Python (a socket's timeout isn't a
            :exc:`TimeoutError` before 3.10).
        TypeError: an unknown keyword argument, or a setting of the wrong
            type (see :func:`syncws.settings.check_settings`).
        ValueError: a setting out of range (the message names it).
    """
    connect_host, connect_port, source_address = _pop_connect_kwds(kwds)
    if extra_headers is not None and additional_headers is not None:
        raise TypeError("pass extra_headers or additional_headers, not both")
    if additional_headers is not None:
        extra_headers = additional_headers
    if not isinstance(max_redirects, int) or isinstance(max_redirects, bool) or max_redirects < 0:
        raise ValueError(f"max_redirects must be an int >= 0, got {max_redirects!r}")
    settings = check_settings(
        max_size=max_size, max_queue=max_queue, timeout=timeout, open_timeout=open_timeout,
        close_timeout=close_timeout, write_timeout=write_timeout, read_limit=read_limit,
        write_limit=write_limit, ping_interval=ping_interval, ping_timeout=ping_timeout,
        compression=compression,
    )
    open_timeout = settings.open_timeout
    protocol_class = create_protocol or WebSocketClientProtocol
    chain = RedirectChain(
        uri, headers=extra_headers, server_hostname=server_hostname, connect_host=connect_host,
        connect_port=connect_port, max_redirects=max_redirects, allow_private_redirects=allow_private_redirects,
        keep_headers_on_redirect=keep_headers_on_redirect, own_socket=sock is not None,
    )
    # One deadline for TCP, TLS and the handshake of every hop: a chain of
    # slow redirects can't take max_redirects times open_timeout.
    deadline = None if open_timeout is None else time.monotonic() + open_timeout
    while True:
        uri = chain.uri
        wsuri = _parse_uri(uri)
        _check_ssl(ssl, wsuri, own_socket=sock is not None)

        protocol = protocol_class(
            host=wsuri.host, port=wsuri.port, secure=wsuri.secure, settings=settings, logger=logger,
            compression=compression, user_agent_header=user_agent_header,
        )
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise _timed_out(chain, open_timeout)
        proxy_url = proxy_for(wsuri, proxy) if sock is None else None
        # The proxy's target, when there is a proxy: the host a redirect's
        # address space is checked from.
        proxy_host: Optional[str] = None
        try:
            if sock is None:
                sock, proxy_host = _open_socket(chain, wsuri, proxy_url, remaining, source_address)
        except (socket.timeout, TimeoutError) as exc:
            # The socket's timeout (socket.timeout, no TimeoutError before
            # Python 3.10) or python-socks' is open_timeout's; a kernel's
            # ETIMEDOUT (with an errno) is another timeout.
            if deadline is None or exc.errno is not None:
                raise
            raise _timed_out(chain, open_timeout) from exc
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        sockopts.tune_connection(sock, ping_interval=ping_interval, ping_timeout=ping_timeout)
        transport = Transport(sock, read_limit=read_limit)
        protocol.connection_made(transport)
        try:
            if not _handshake(protocol, wsuri, ssl, chain, remaining, origin=origin, subprotocols=subprotocols):
                raise _timed_out(chain, open_timeout)
        except InvalidStatusCode as exc:
            protocol.abort(f"the server answered HTTP {exc.status_code}")
            if exc.status_code not in REDIRECT_STATUSES:
                raise
            _follow_redirect(chain, wsuri, exc, transport, proxy_host)
            sock = None
            continue
        except BaseException:
            protocol.abort("the opening handshake failed")
            raise
        break
    protocol.connection_open()
    if protocol.logger.isEnabledFor(logging.INFO):
        extensions = [permessage_deflate.EXTENSION_NAME] if protocol.extensions else []
        protocol.logger.info("%s", opened_line(protocol, wsuri.resource_name, protocol.subprotocol, extensions))
    return protocol


def _pop_connect_kwds(kwds: Dict[str, Any]) -> Tuple[Optional[str], Optional[int], Any]:
    """Take :func:`connect`'s ``host``, ``port`` and ``source_address`` from ``kwds``.

    Raises:
        TypeError: ``kwds`` holds anything else.
    """
    connect_host, connect_port = kwds.pop("host", None), kwds.pop("port", None)
    source_address = kwds.pop("source_address", None)
    if kwds:
        raise TypeError(f"connect() got unexpected keyword arguments: {', '.join(sorted(kwds))}")
    return connect_host, connect_port, source_address


def _timed_out(chain: RedirectChain, open_timeout: Optional[float]) -> TimeoutError:
    """The error of a redirect chain whose ``open_timeout`` ran out at its current hop."""
    redirects = f", {len(chain.visited)} redirects included" if chain.visited else ""
    return TimeoutError(
        f"the opening handshake with {redact_uri(chain.uri)} didn't finish within {open_timeout} seconds{redirects}"
    )


def _check_ssl(ssl: Any, wsuri: WebSocketURI, *, own_socket: bool) -> None:
    """Refuse an ``ssl`` argument that contradicts the URI's scheme.

    Raises:
        ValueError: a context for ``ws://`` (unless on the caller's own
            socket), or ``ssl=False`` for ``wss://``.
    """
    if ssl is not None and ssl is not False and not wsuri.secure and ssl is not True and not own_socket:
        raise ValueError("ssl= was given for a ws:// URI: use wss://")
    if ssl is False and wsuri.secure:
        raise ValueError("ssl=False with a wss:// URI: use ws://")


def _open_socket(
    chain: RedirectChain, wsuri: WebSocketURI, proxy_url: Optional[str], timeout: Optional[float],
    source_address: Any,
) -> Tuple[socket.socket, Optional[str]]:
    """Open TCP for one hop of a redirect chain, through the proxy if any.

    Returns:
        The socket, and the host the proxy was asked for (``None`` without
        a proxy).

    Raises:
        InvalidStatusCode: the address is in a more private space than the
            chain allows (see :meth:`~syncws.redirects.RedirectChain.check_space`).
        OSError, TimeoutError: connecting failed.
    """
    host, port = chain.connect_host or wsuri.host, chain.connect_port or wsuri.port
    if proxy_url is None:
        check_space = chain.check_space if chain.checks_addresses else None
        return _open_tcp(host, port, timeout, source_address, check_space), None
    # The address, when the proxy leaves the name to us (socks5://): the one
    # checked is the one the proxy connects to.
    host = proxy_target(proxy_url, host, port)
    chain.check_space(host_address_space(host))
    return open_proxy(proxy_url, host, port, timeout=timeout, source_address=source_address), host


def _handshake(
    protocol: WebSocketClientProtocol, wsuri: WebSocketURI, ssl: Any, chain: RedirectChain,
    timeout: Optional[float], *, origin: Optional[str], subprotocols: Optional[Sequence[str]],
) -> bool:
    """TLS, for ``wss://`` or when ``ssl`` asks for it, then the opening handshake, within ``timeout``.

    Args:
        ssl: :func:`connect`'s argument: an :class:`ssl.SSLContext`, or
            ``True``/``None`` for a default verifying context (``None``:
            only for ``wss://``), ``False`` for no TLS.

    Returns:
        ``False`` when the time ran out.

    Raises:
        InvalidHandshake, OSError: as :meth:`WebSocketClientProtocol.handshake`
            and TLS raise them.
    """
    transport = protocol.transport
    assert transport is not None
    # The deadline shuts the socket down, which ends whatever step of the
    # handshake is blocked; `expired` tells that from a real error.
    with timers.deadline(timeout, transport.abort) as handshake_deadline:
        try:
            if wsuri.secure or (ssl is not None and ssl is not False):
                import ssl as ssl_module  # only for wss://: it costs megabytes

                context = ssl if isinstance(ssl, ssl_module.SSLContext) else ssl_module.create_default_context()
                transport.start_tls(context, server_hostname=chain.server_hostname or wsuri.host)
            protocol.handshake(wsuri, origin=origin, subprotocols=subprotocols, extra_headers=chain.headers)
        except (OSError, InvalidMessage):
            if not handshake_deadline.expired:
                raise
    return not handshake_deadline.expired


def _follow_redirect(
    chain: RedirectChain, wsuri: WebSocketURI, exc: InvalidStatusCode, transport: Transport,
    proxy_host: Optional[str],
) -> None:
    """Move the chain to a redirect's target, checked from where the hop went."""
    if proxy_host is not None:
        space = host_address_space(proxy_host)
    else:
        remote = transport.remote_address
        space = address_space(remote[0]) if isinstance(remote, tuple) else None
    hop = chain.uri
    chain.follow(wsuri, exc, space)
    logging.getLogger("syncws.client").info(
        "%s redirected to %s (HTTP %d)", redact_uri(hop), redact_uri(chain.uri), exc.status_code
    )


def _open_tcp(
    host: str,
    port: int,
    timeout: Optional[float],
    source_address: Any,
    check_space: Optional[Callable[[AddressSpace], None]] = None,
) -> socket.socket:
    """Open a TCP connection, as :func:`socket.create_connection` does.

    An IP address is connected to directly, as :mod:`asyncio` does:
    ``getaddrinfo()`` would only hand it back, at a cost paid per
    connection (the socket module turns each result's family and type into
    enums). Hot path: see docs/performance.rst#connections-per-second.

    With ``check_space`` (a redirect hop, see
    :meth:`~syncws.redirects.RedirectChain.check_space`), the name is
    resolved here, the least public of its addresses is checked before any
    is connected to, and only those addresses are tried: the name can't
    resolve to another one in between.
    """
    family = _ip_family(host)
    if check_space is None:
        if family is None:
            return socket.create_connection((host, port), timeout=timeout, source_address=source_address)
        return _open_address(family, (host, port), timeout, source_address)
    addresses: List[Tuple[int, Any]]
    if family is None:
        addresses = [(info[0], info[4]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    else:
        addresses = [(family, (host, port))]
    check_space(min(address_space(str(address[0])) for _, address in addresses))
    error: Optional[OSError] = None
    for address_family, address in addresses:
        try:
            return _open_address(address_family, address, timeout, source_address)
        except OSError as exc:
            error = exc
    assert error is not None  # getaddrinfo() returns at least one address or raises
    raise error


def _open_address(family: int, address: Any, timeout: Optional[float], source_address: Any) -> socket.socket:
    """Connect a TCP socket of ``family`` to one ``address``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source_address:
            sock.bind(source_address)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


@functools.lru_cache(maxsize=64)
def _ip_family(host: str) -> Optional[socket.AddressFamily]:
    """The family of ``host`` if it is an IP address, else ``None``.

    Remembered (applications connect to the same few hosts): telling a
    name from an address raises an exception per family tried.
    """
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):  # not an address of that family, or not text inet_pton takes
            continue
        return family
    return None


def unix_connect(path: str, uri: Optional[str] = None, **kwargs: Any) -> WebSocketClientProtocol:
    """Connect to a WebSocket server listening on a Unix socket.

    Args:
        path: the socket's path.
        uri: the URI for the handshake (``Host`` header and path); defaults
            to ``ws://localhost/``.
        **kwargs: as for :func:`connect`.

    Returns:
        The open connection.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(kwargs.get("open_timeout") or kwargs.get("timeout", 10))
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return connect(uri or "ws://localhost/", sock=sock, **kwargs)


# Failures worth retrying: the network, a timeout, or a server that is
# restarting or overloaded. Anything else (a bad URI, a 4xx, a protocol
# mismatch) would fail the same way again.
_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, InvalidStatusCode):
        return exc.status_code in _RETRYABLE_STATUS
    if isinstance(exc, (InvalidURI, InvalidHandshake)) or type(exc).__name__ == "SSLCertVerificationError":
        return False
    return isinstance(exc, (OSError, TimeoutError, EOFError))


def retry_transient(exc: Exception) -> Optional[Exception]:
    """The default ``process_exception`` of :func:`reconnect`.

    Retries network errors, timeouts and HTTP 500, 502, 503 and 504; any
    other failure (a bad URI, a 4xx, a TLS certificate error, a protocol
    mismatch) would fail the same way again, so it is raised.

    Args:
        exc: what :func:`connect` raised.

    Returns:
        ``None`` to retry, or the exception to raise.
    """
    return None if _is_transient(exc) else exc


class Reconnect(Iterator[WebSocketClientProtocol]):
    """The iterator :func:`reconnect` returns: one open connection at a time.

    Asking for the next connection closes the previous one. Stop the loop
    by breaking out of it (the current connection is closed when the
    iterator is dropped, or at once with :meth:`close`), from the loop
    itself with :meth:`close`, or from any thread with :meth:`stop`.
    """

    def __init__(
        self,
        uri: str,
        *,
        initial_delay: float,
        max_delay: float,
        factor: float,
        min_uptime: float,
        process_exception: Callable[[Exception], Optional[Exception]],
        connect_kwargs: Dict[str, Any],
    ) -> None:
        self.uri = uri
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.factor = factor
        self.min_uptime = min_uptime
        self.process_exception = process_exception
        self.connect_kwargs = connect_kwargs
        #: The connection last yielded, until the next one is asked for.
        self.connection: Optional[WebSocketClientProtocol] = None
        #: How many connections were opened.
        self.connections_opened = 0
        self._opened_at = 0.0
        # The current backoff ceiling; grows with each failure, back to
        # initial_delay after a connection that lived min_uptime.
        self._ceiling = initial_delay
        # Set by stop() (any thread): ends the backoff wait and the loop.
        self._stopped = threading.Event()
        self._logger = logging.getLogger("syncws.client")

    def __iter__(self) -> "Reconnect":
        return self

    def __next__(self) -> WebSocketClientProtocol:
        previous, self.connection = self.connection, None
        if previous is not None:
            previous.close()
            lived = time.monotonic() - self._opened_at
            if lived < self.min_uptime:
                # Died young: a server that accepts and then fails at once
                # is a failure, or a crash loop gets hammered.
                self._backoff(f"the connection lived only {lived:.2f} s")
            else:
                self._ceiling = self.initial_delay
        while not self._stopped.is_set():
            try:
                connection = connect(self.uri, **self.connect_kwargs)
            except Exception as exc:
                to_raise = self.process_exception(exc)
                if to_raise is not None:
                    raise to_raise
                self._backoff(f"connecting failed ({exc})")
                continue
            if self._stopped.is_set():
                connection.close()
                break
            self.connection = connection
            self.connections_opened += 1
            self._opened_at = time.monotonic()
            return connection
        raise StopIteration

    def _backoff(self, why: str) -> None:
        """Wait before the next attempt: between half and all of the ceiling."""
        delay = self._ceiling * random.uniform(0.5, 1.0)
        self._logger.info("%s: %s; retrying in %.1f s", redact_uri(self.uri), why, delay)
        self._ceiling = min(self._ceiling * self.factor, self.max_delay)
        self._stopped.wait(delay)

    def stop(self) -> None:
        """End the loop from any thread: the current connection closes (so a
        ``recv()`` on it ends), a backoff wait is cut short, and the loop
        yields nothing more."""
        self._stopped.set()
        connection = self.connection
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Close the current connection and end the loop (as a generator's close)."""
        self.stop()

    def __del__(self) -> None:
        # Breaking out of ``for ws in reconnect(...)`` drops the iterator:
        # close the connection it yielded last rather than leak it.
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.close()

    def __enter__(self) -> "Reconnect":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def reconnect(
    uri: str,
    *,
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
    factor: float = 1.618,
    min_uptime: float = 10.0,
    process_exception: Optional[Callable[[Exception], Optional[Exception]]] = None,
    **connect_kwargs: Any,
) -> Reconnect:
    """Yield a new connection each time the previous one is done with.

    A failed attempt is retried after a delay that grows while attempts
    keep failing: between half and all of a ceiling that starts at
    ``initial_delay`` and is multiplied by ``factor`` after each failure, up
    to ``max_delay``. A connection that closes less than ``min_uptime``
    seconds after it opened counts as a failure too, so a server that
    accepts and then crashes at once sees a handful of attempts, not a
    flood. The ceiling goes back to ``initial_delay`` after a connection
    that lived ``min_uptime`` seconds::

        for ws in syncws.reconnect("ws://localhost:8765"):
            try:
                for message in ws:
                    handle(message)
            except syncws.ConnectionClosed:
                continue

    To stop: ``break`` out of the loop (the current connection is closed),
    or call :meth:`Reconnect.stop` from any thread (the current connection is
    closed, a backoff wait is cut short, and the loop ends), or use the
    iterator as a context manager.

    Args:
        uri: as for :func:`connect`.
        initial_delay: the first retry delay ceiling, in seconds.
        max_delay: the largest retry delay ceiling, in seconds.
        factor: how much the ceiling grows after each failure.
        min_uptime: seconds a connection must last to count as a success.
        process_exception: ``(exc) -> None`` to retry after what
            :func:`connect` raised, or an exception to raise (``exc`` itself
            to let it through); default :func:`retry_transient`.
        **connect_kwargs: as for :func:`connect`.

    Returns:
        The :class:`Reconnect` iterator of open connections.

    Raises:
        ValueError: a delay or factor out of range.
    """
    for name, value in (("initial_delay", initial_delay), ("max_delay", max_delay), ("min_uptime", min_uptime)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if not isinstance(factor, (int, float)) or not factor >= 1:
        raise ValueError(f"factor must be a number >= 1, got {factor!r}")
    return Reconnect(
        uri,
        initial_delay=initial_delay,
        max_delay=max_delay,
        factor=factor,
        min_uptime=min_uptime,
        process_exception=process_exception or retry_transient,
        connect_kwargs=connect_kwargs,
    )
