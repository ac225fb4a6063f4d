"""The redirects :func:`~syncws.connect` follows, and what each hop keeps.

Theory of operation
-------------------
A server that answers the opening handshake with 301, 302, 303, 307 or 308
chooses where the client goes next. The client's caller chose only the first
URI, so every later hop is the server's choice, and the rules below keep a
redirect from turning the client against its caller (as an application that
connects to a URI a user gave, and shows the error, would be):

* **TLS is never dropped**: ``wss://`` may not lead to ``ws://``.
* **The caller's headers and names stay with the origin they were given
  for.** Once a hop leaves the first URI's origin (scheme, host and port,
  as for ``requests`` and the Fetch standard), the rest of the chain goes
  without the headers the caller added (``additional_headers``: ``Cookie``,
  ``Authorization``, ``X-Api-Key``...), without the ``host=`` / ``port=``
  override and without an explicit ``server_hostname``: each new host gets
  its own name in SNI and the certificate check. ``keep_headers_on_redirect``
  opts in to sending the headers anyway, as curl's ``--location-trusted``.
* **One deadline**: ``open_timeout`` covers the whole chain, and at most
  ``max_redirects`` hops are followed, never a loop.

This module holds these rules as data and decisions; the sockets are
:mod:`syncws.client`'s.
"""

from __future__ import annotations

import urllib.parse
from typing import List, Optional, Tuple

from .exceptions import InvalidStatusCode, InvalidURI
from .http import HeadersLike
from .safetext import redact_uri
from .uri import WebSocketURI, parse_uri

__all__ = ["REDIRECT_STATUSES", "RedirectChain"]

#: The statuses :func:`~syncws.connect` follows as redirects.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def _origin(wsuri: WebSocketURI) -> Tuple[bool, str, int]:
    return wsuri.secure, wsuri.host, wsuri.port


class RedirectChain:
    """The state of one :func:`~syncws.connect` call across its redirects.

    :func:`~syncws.connect` opens each hop with what the chain holds for it
    (:attr:`uri`, :attr:`headers`, :attr:`server_hostname`,
    :attr:`connect_host`, :attr:`connect_port`), and calls :meth:`follow`
    when a hop answers with a redirect. Not thread-safe: one call, one
    thread.

    Args:
        uri: the URI the caller gave.
        headers: the headers the caller added.
        server_hostname: the caller's ``server_hostname``, if any.
        connect_host: the caller's ``host=`` override, if any.
        connect_port: the caller's ``port=`` override, if any.
        max_redirects: how many redirects to follow.
        keep_headers_on_redirect: keep :attr:`headers` on other origins.
        own_socket: the caller gave the socket: no redirect is followed.
    """

    # One per connect() call: slots make it cheaper to build.
    __slots__ = (
        "uri", "headers", "server_hostname", "connect_host", "connect_port", "visited", "response",
        "_max_redirects", "_keep_headers", "_own_socket", "_first_origin",
    )

    def __init__(
        self,
        uri: str,
        *,
        headers: Optional[HeadersLike] = None,
        server_hostname: Optional[str] = None,
        connect_host: Optional[str] = None,
        connect_port: Optional[int] = None,
        max_redirects: int = 10,
        keep_headers_on_redirect: bool = False,
        own_socket: bool = False,
    ) -> None:
        #: The URI of the current hop.
        self.uri = uri
        #: The caller's headers, while the chain is on the first origin (or
        #: everywhere with ``keep_headers_on_redirect``); ``None`` once left.
        self.headers = headers
        #: The caller's server_hostname, for the first origin only.
        self.server_hostname = server_hostname
        #: The caller's host= / port= override, for the first origin only.
        self.connect_host = connect_host
        self.connect_port = connect_port
        #: The URIs redirected from, in order.
        self.visited: List[str] = []
        #: The redirect that led to the current hop, if any.
        self.response: Optional[InvalidStatusCode] = None
        self._max_redirects = max_redirects
        self._keep_headers = keep_headers_on_redirect
        self._own_socket = own_socket
        self._first_origin: Optional[Tuple[bool, str, int]] = None

    def follow(self, wsuri: WebSocketURI, response: InvalidStatusCode) -> None:
        """Move the chain on to where a redirect response points.

        Args:
            wsuri: the parsed URI of the hop that answered.
            response: its answer, a redirect status.

        Raises:
            InvalidStatusCode: ``response`` with the reason the redirect isn't
                followed: no ``Location``, a socket given, too many, an
                invalid target, ``wss://`` to ``ws://``, a loop.
        """
        if self._first_origin is None:
            self._first_origin = _origin(wsuri)
        target, new = self._target(wsuri, response)
        if _origin(new) != self._first_origin:
            # What the caller gave for the first origin isn't for another.
            if not self._keep_headers:
                self.headers = None
            self.server_hostname = self.connect_host = self.connect_port = None
        self.visited.append(self.uri)
        self.uri = target
        self.response = response

    def _target(self, wsuri: WebSocketURI, response: InvalidStatusCode) -> Tuple[str, WebSocketURI]:
        """The URI ``response`` redirects to, parsed, or the refusal."""
        location = response.headers.get_joined("Location")
        if location is None:
            raise self._refuse(response, "a redirect without a Location header")
        if self._own_socket:
            raise self._refuse(response, f"redirect to {redact_uri(location)} not followed: connect() was given a socket")
        if len(self.visited) >= self._max_redirects:
            raise self._refuse(
                response,
                f"redirect to {redact_uri(location)} not followed: more than max_redirects={self._max_redirects}",
            )
        target = urllib.parse.urljoin(self.uri, location.strip())
        scheme, rest = target.split(":", 1) if ":" in target else ("", target)
        target = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme) + ":" + rest
        try:
            new = parse_uri(target)
        except InvalidURI as uri_error:
            raise self._refuse(response, f"redirect to an invalid URI: {uri_error}") from None
        if wsuri.secure and not new.secure:
            raise self._refuse(
                response, f"redirect from {redact_uri(self.uri)} to {redact_uri(target)} refused: it would drop TLS"
            )
        if target in self.visited or target == self.uri:
            chain = " -> ".join(map(redact_uri, self.visited + [self.uri, target]))
            raise self._refuse(response, f"redirect loop: {chain}")
        return target, new

    @staticmethod
    def _refuse(response: InvalidStatusCode, detail: str) -> InvalidStatusCode:
        return InvalidStatusCode(response.status_code, response.body, response.headers, detail=detail)
