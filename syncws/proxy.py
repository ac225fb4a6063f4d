"""Reaching a WebSocket server through a proxy: HTTP ``CONNECT`` (RFC 9110
§9.3.6) or SOCKS (SOCKS5h, SOCKS5, SOCKS4a, SOCKS4).

By default :func:`~syncws.connect` follows the environment like other HTTP
clients, and like websockets: ``no_proxy`` names the hosts to reach
directly; otherwise the first of ``wss_proxy`` (``ws_proxy`` for ``ws://``),
``socks_proxy``, ``https_proxy`` (``http_proxy`` for ``ws://``) and
``all_proxy`` that is set. Any of them may name a SOCKS proxy
(``socks5h://proxy:1080``) or an HTTP one (``http://proxy:3128``); a
``socks_proxy`` without a scheme is SOCKS5h. The proxy opens a TCP tunnel to
the server; TLS and the WebSocket handshake then go through it.

SOCKS needs the optional ``python-socks`` package: ``pip install
'syncws[socks]'``. The scheme says who resolves the server's name:

==========  ============================================
scheme      resolved by
==========  ============================================
socks5h     the proxy (the name is sent; the safest)
socks5      this machine (the address is sent)
socks4a     the proxy
socks4      this machine (IPv4 only)
==========  ============================================

With ``socks5`` and ``socks4``, :func:`~syncws.connect` resolves the name
itself (:func:`proxy_target`) and gives the proxy the address: the one the
redirect rules of :mod:`syncws.redirects` checked.

Credentials in the URL (``socks5h://user:password@proxy:1080``) are sent
with SOCKS5's username/password method (RFC 1929), or as SOCKS4's user id.
"""

from __future__ import annotations

import base64
import functools
import os
import socket
import sys
import urllib.parse
from typing import Any, Optional, Tuple, Union

from .exceptions import InvalidMessage, ProxyError
from .http import Headers, read_response, serialize_request
from .safetext import escape, redact_uri
from .headreader import HeadReader
from .uri import WebSocketURI

__all__ = ["proxy_for", "proxy_target", "open_tunnel", "open_socks", "open_proxy", "SOCKS_SCHEMES"]

#: The SOCKS schemes, and whether the proxy resolves the server's name.
SOCKS_SCHEMES = {"socks5h": True, "socks5": False, "socks4a": True, "socks4": False}


def proxy_for(wsuri: WebSocketURI, proxy: Union[str, bool, None]) -> Optional[str]:
    """Return the proxy URL to use for ``wsuri``, or ``None`` to go direct.

    Args:
        wsuri: the server's URI.
        proxy: ``True`` to read the environment, a URL such as
            ``"http://proxy:3128"``, or ``None`` (or ``False``) for none.

    Returns:
        The proxy's URL, or ``None``.
    """
    if proxy is None or proxy is False:
        return None
    if proxy is not True:
        return proxy
    if sys.platform in ("darwin", "win32"):
        # urllib also reads the system-wide proxy settings there, which
        # can change without the environment's changing: asked every time.
        return _looked_up(wsuri.host, wsuri.secure)
    names = [name for name in os.environ if name[-6:].lower() == "_proxy"]
    if not names:
        return None  # no proxy, and nothing to bypass: the usual environment, looked up fast
    variables = tuple((name, os.environ[name]) for name in names)
    return _looked_up_in_environment(variables, os.environ.get("REQUEST_METHOD"), wsuri.host, wsuri.secure)


@functools.lru_cache(maxsize=64)
def _looked_up_in_environment(
    variables: Tuple[Tuple[str, str], ...], request_method: Optional[str], host: str, secure: bool
) -> Optional[str]:
    """:func:`_looked_up`, remembered for the environment that decides it.

    Outside macOS and Windows, :func:`urllib.request.getproxies` reads only
    the environment: the variables whose name ends with ``_proxy`` in any
    case (``no_proxy`` among them), and ``REQUEST_METHOD`` (in a CGI
    script it ignores ``HTTP_PROXY``, which a request can set). Given all
    of them as the key, a result can be remembered: urllib's lookup scans
    the environment twice, a large share of a local connection's CPU, for
    every connection a client opens with a proxy variable set (one for
    other hosts, say, with this one in ``no_proxy``).
    A change to any of them is a new key, seen at once.
    """
    return _looked_up(host, secure)


def _looked_up(host: str, secure: bool) -> Optional[str]:
    """Ask urllib for the proxies, and pick the one for ``host``, if any."""
    import urllib.request  # megabytes (http.client, email): only when a proxy is looked up

    proxies = urllib.request.getproxies()
    if urllib.request.proxy_bypass(host):
        return None
    socks = proxies.get("socks")
    if socks and "://" not in socks:
        socks = f"socks5h://{socks}"
    if secure:
        return proxies.get("wss") or socks or proxies.get("https") or proxies.get("all")
    return proxies.get("ws") or socks or proxies.get("http") or proxies.get("all")


def _scheme(proxy_url: str) -> str:
    """The scheme of a proxy URL, lowercase; ``http`` when it has none."""
    return proxy_url.split("://", 1)[0].lower() if "://" in proxy_url else "http"


def proxy_target(proxy_url: str, host: str, port: int) -> str:
    """What to ask the proxy at ``proxy_url`` to connect to: ``host``, or its address.

    A SOCKS proxy whose scheme leaves the name to the client (``socks5://``,
    ``socks4://``) is given an address, resolved here the way python-socks
    would (IPv4 first; IPv4 only for SOCKS4). The caller then knows which
    address the proxy connects to, and can check it (the redirect rules of
    :mod:`syncws.redirects`), and the name can't resolve to another address
    in between. Every other proxy resolves the name itself and gets it.

    Args:
        proxy_url: the proxy's URL.
        host: the WebSocket server's host, a name or an IP address.
        port: its port.

    Returns:
        ``host``, or the IP address it resolves to.

    Raises:
        OSError: the name doesn't resolve (:exc:`socket.gaierror`).
    """
    scheme = _scheme(proxy_url)
    if SOCKS_SCHEMES.get(scheme, True):
        return host
    family = socket.AF_INET if scheme == "socks4" else socket.AF_UNSPEC
    addresses = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    ipv4_first = min(addresses, key=lambda info: info[0] != socket.AF_INET)
    return str(ipv4_first[4][0])


def open_proxy(
    proxy_url: str,
    host: str,
    port: int,
    *,
    timeout: Optional[float],
    source_address: Optional[Tuple[str, int]] = None,
) -> socket.socket:
    """Open a tunnel to ``host:port`` through the proxy ``proxy_url``, SOCKS or HTTP.

    Args:
        proxy_url: ``socks5h://``, ``socks5://``, ``socks4a://``,
            ``socks4://``, ``http://`` or ``https://``, with optional
            ``user:password@``.
        host: the WebSocket server's host.
        port: its port.
        timeout: seconds for reaching the proxy and its answer.
        source_address: where to bind the local end.

    Returns:
        A socket tunnelled to the server, in blocking mode.

    Raises:
        ProxyError: the proxy refused or didn't speak its protocol.
        ImportError: a SOCKS proxy without ``python-socks`` installed.
        ValueError: an unsupported scheme.
        OSError: the proxy can't be reached.
    """
    if _scheme(proxy_url) in SOCKS_SCHEMES:
        return open_socks(proxy_url, host, port, timeout=timeout, source_address=source_address)
    return open_tunnel(proxy_url, host, port, timeout=timeout, source_address=source_address)


def open_socks(
    proxy_url: str,
    host: str,
    port: int,
    *,
    timeout: Optional[float],
    source_address: Optional[Tuple[str, int]] = None,
) -> socket.socket:
    """Connect to a SOCKS proxy and have it open a connection to ``host:port``.

    Args:
        proxy_url: ``socks5h://``, ``socks5://``, ``socks4a://`` or
            ``socks4://`` ``[user:password@]host[:port]`` (port 1080 by
            default).
        host: the WebSocket server's host.
        port: its port.
        timeout: seconds for reaching the proxy and its answer.
        source_address: where to bind the local end.

    Returns:
        A socket connected to the server through the proxy, in blocking mode.

    Raises:
        ImportError: ``python-socks`` isn't installed (``pip install
            'syncws[socks]'``).
        ProxyError: the proxy refused (bad credentials, host unreachable...)
            or didn't speak SOCKS.
        ValueError: not a SOCKS URL, or no host.
        OSError: the proxy can't be reached.
        TimeoutError: the proxy didn't answer within ``timeout``.
    """
    parsed = urllib.parse.urlsplit(proxy_url)
    scheme = parsed.scheme.lower()
    if scheme not in SOCKS_SCHEMES:
        raise ValueError(f"not a SOCKS proxy URL: '{redact_uri(proxy_url)}' (schemes: {', '.join(SOCKS_SCHEMES)})")
    if not parsed.hostname:
        raise ValueError(f"proxy URL '{redact_uri(proxy_url)}' has no host")
    try:
        from python_socks import ProxyError as SocksError
        from python_socks import ProxyType
        from python_socks.sync import Proxy
    except ImportError as exc:
        raise ImportError(
            f"connecting through the SOCKS proxy {parsed.hostname}:{parsed.port or 1080} needs the "
            f"python-socks package: pip install 'syncws[socks]'"
        ) from exc
    proxy = Proxy(
        ProxyType.SOCKS5 if scheme.startswith("socks5") else ProxyType.SOCKS4,
        parsed.hostname,
        parsed.port or 1080,
        username=urllib.parse.unquote(parsed.username) if parsed.username is not None else None,
        password=urllib.parse.unquote(parsed.password) if parsed.password is not None else None,
        rdns=SOCKS_SCHEMES[scheme],
    )
    try:
        # local_addr only when asked: older python-socks releases lack it.
        extra = {} if source_address is None else {"local_addr": source_address}
        sock: socket.socket = proxy.connect(host, port, timeout=timeout, **extra)
    except SocksError as exc:
        raise ProxyError(
            f"SOCKS proxy {parsed.hostname}:{parsed.port or 1080} couldn't connect to {host}:{port}: {exc}"
        ) from exc
    sock.settimeout(None)
    return sock


def open_tunnel(
    proxy_url: str,
    host: str,
    port: int,
    *,
    timeout: Optional[float],
    source_address: Optional[Tuple[str, int]] = None,
    max_line: int = 8192,
) -> socket.socket:
    """Connect to an HTTP proxy and open a tunnel to ``host:port``.

    Args:
        proxy_url: ``http://[user:password@]host[:port]`` (or ``https://``
            for TLS to the proxy itself).
        host: the WebSocket server's host.
        port: its port.
        timeout: seconds for connecting and for the proxy's answer.
        source_address: where to bind the local end.
        max_line: the longest line accepted in the proxy's answer.

    Returns:
        A socket tunnelled to the server, in blocking mode.

    Raises:
        ProxyError: the proxy refused (status other than 2xx) or didn't
            answer HTTP.
        ValueError: not an HTTP proxy URL (see :func:`open_proxy` for SOCKS).
        OSError: the proxy can't be reached.
    """
    parsed = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
    if parsed.scheme not in ("http", "https"):
        raise ValueError(
            f"unsupported proxy scheme {parsed.scheme!r} in '{redact_uri(proxy_url)}': "
            f"use http://, https:// or (through open_proxy()) {', '.join(f'{k}://' for k in SOCKS_SCHEMES)}"
        )
    if not parsed.hostname:
        raise ValueError(f"proxy URL '{redact_uri(proxy_url)}' has no host")
    proxy_port = parsed.port or (443 if parsed.scheme == "https" else 80)
    sock: Any = socket.create_connection((parsed.hostname, proxy_port), timeout=timeout, source_address=source_address)
    try:
        if parsed.scheme == "https":
            import ssl as ssl_module  # only for an https:// proxy

            context = ssl_module.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=parsed.hostname)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = Headers([("Host", authority)])
        if parsed.username is not None:
            credentials = f"{urllib.parse.unquote(parsed.username)}:{urllib.parse.unquote(parsed.password or '')}"
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        head = serialize_request(authority, headers).replace(b"GET ", b"CONNECT ", 1)
        sock.sendall(head)
        try:
            response = read_response(HeadReader(sock, 4096).read_line, max_line=max_line)
        except InvalidMessage as exc:
            raise ProxyError(f"proxy {parsed.hostname}:{proxy_port} didn't answer CONNECT with HTTP: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise ProxyError(
                f"proxy {parsed.hostname}:{proxy_port} refused to connect to {authority}: "
                f"HTTP {response.status_code} {escape(response.reason)}",
                response.status_code,
            )
        sock.settimeout(None)
        return sock  # type: ignore[no-any-return]
    except BaseException:
        sock.close()
        raise
