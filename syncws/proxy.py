"""Reaching a WebSocket server through an HTTP proxy (``CONNECT``, RFC 9110 §9.3.6).

By default :func:`~syncws.connect` follows the environment like other HTTP
clients: ``https_proxy`` for ``wss://``, ``http_proxy`` for ``ws://``, and
``no_proxy`` for the hosts to reach directly. The proxy is asked to open a
TCP tunnel to the server; TLS and the WebSocket handshake then go through it.
"""

from __future__ import annotations

import base64
import socket
import ssl as ssl_module
import urllib.parse
import urllib.request
from typing import Any, Optional, Tuple, Union

from .exceptions import InvalidMessage, ProxyError
from .http import Headers, read_response, serialize_request
from .streamreader import StreamReader
from .uri import WebSocketURI

__all__ = ["proxy_for", "open_tunnel"]


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
    proxies = urllib.request.getproxies()
    if urllib.request.proxy_bypass(wsuri.host):
        return None
    if wsuri.secure:
        return proxies.get("wss") or proxies.get("https")
    return proxies.get("ws") or proxies.get("http")


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
        ValueError: an unsupported proxy scheme (SOCKS, ...).
        OSError: the proxy can't be reached.
    """
    parsed = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
    if parsed.scheme not in ("http", "https"):
        raise ValueError(
            f"unsupported proxy scheme {parsed.scheme!r} in {proxy_url!r}: "
            f"only http:// and https:// proxies (HTTP CONNECT) are supported"
        )
    if not parsed.hostname:
        raise ValueError(f"proxy URL {proxy_url!r} has no host")
    proxy_port = parsed.port or (443 if parsed.scheme == "https" else 80)
    sock: Any = socket.create_connection((parsed.hostname, proxy_port), timeout=timeout, source_address=source_address)
    try:
        if parsed.scheme == "https":
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
            response = read_response(StreamReader(sock, 4096).read_line, max_line=max_line)
        except InvalidMessage as exc:
            raise ProxyError(f"proxy {parsed.hostname}:{proxy_port} didn't answer CONNECT with HTTP: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise ProxyError(
                f"proxy {parsed.hostname}:{proxy_port} refused to connect to {authority}: "
                f"HTTP {response.status_code} {response.reason}",
                response.status_code,
            )
        sock.settimeout(None)
        return sock  # type: ignore[no-any-return]
    except BaseException:
        sock.close()
        raise
