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
* **No move into a more private address space** (the address spaces of the
  Local Network Access proposal that browsers implement: loopback, local,
  public): once the chain has connected to a public address, no hop may
  connect to a local (private, link-local, unique local, shared...) or a
  loopback one, and from a local one not to loopback. A public server that
  redirects to ``169.254.169.254`` (cloud metadata) or ``127.0.0.1`` is the
  classic way to make a server read its own internal services.
  ``allow_private_redirects`` opts out. The caller's own first URI is never
  checked: connecting to a local server is the caller's choice, and hops
  inside the same space (a local test server redirecting to itself) are
  followed. :func:`~syncws.connect` checks the addresses it connects to, after
  resolving the name, so a name that resolves to a private address (or
  changes its answer between two hops) is caught.
* **One deadline**: ``open_timeout`` covers the whole chain, and at most
  ``max_redirects`` hops are followed, never a loop.

This module holds these rules as data and decisions; the sockets are
:mod:`syncws.client`'s.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import urllib.parse
from typing import List, Optional, Tuple, Union

from .exceptions import InvalidStatusCode, InvalidURI
from .datastructures import HeadersLike
from .safetext import redact_uri
from .uri import WebSocketURI, parse_uri

__all__ = ["REDIRECT_STATUSES", "AddressSpace", "address_space", "host_address_space", "RedirectChain"]

#: The statuses :func:`~syncws.connect` follows as redirects.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class AddressSpace(enum.IntEnum):
    """How public an IP address is, least public first (Local Network Access)."""

    LOOPBACK = 0
    LOCAL = 1
    PUBLIC = 2


_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def _networks(*texts: str) -> Tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


# The loopback space: this host. 0.0.0.0/8 and :: reach it too on Linux.
_LOOPBACK = _networks("127.0.0.0/8", "0.0.0.0/8", "::1/128", "::/128")

# The local space: every block of the IANA special-purpose registries that
# isn't globally reachable (RFC 1918, shared 100.64/10, link-local with the
# cloud metadata endpoints, documentation, benchmarking, reserved, unique
# local, site-local), and multicast.
_LOCAL = _networks(
    "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
    "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4",
    "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8",
)

# IPv6 blocks that carry an IPv4 address, judged by that address: mapped
# (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d, deprecated), NAT64
# (64:ff9b::a.b.c.d) in the last 32 bits; 6to4 (2002:AABB:CCDD::) in bits
# 16 to 48.
_LAST_32_BITS = _networks("::ffff:0:0/96", "::/96", "64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


def address_space(address: str) -> AddressSpace:
    """The address space of an IP address.

    Args:
        address: an IPv4 or IPv6 address, as ``getpeername()`` or
            ``getaddrinfo()`` give it (an IPv6 scope, ``%eth0``, is ignored).

    Returns:
        :attr:`~AddressSpace.LOOPBACK`, :attr:`~AddressSpace.LOCAL` or
        :attr:`~AddressSpace.PUBLIC`.

    Raises:
        ValueError: ``address`` isn't an IP address.
    """
    ip: Union[ipaddress.IPv4Address, ipaddress.IPv6Address] = ipaddress.ip_address(address.partition("%")[0])
    if ip.version == 6 and int(ip) > 1:  # "::" and "::1" are in ::/96 but are themselves
        if any(ip in network for network in _LAST_32_BITS):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip in _SIX_TO_FOUR:
            ip = ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    if any(ip in network for network in _LOOPBACK):
        return AddressSpace.LOOPBACK
    if any(ip in network for network in _LOCAL):
        return AddressSpace.LOCAL
    return AddressSpace.PUBLIC


def host_address_space(host: str) -> Optional[AddressSpace]:
    """The address space a URI's host names without resolving it, if it says.

    For a hop through a proxy, which resolves names itself: an IP address
    has its space, ``localhost`` and ``*.localhost`` are loopback (RFC
    6761), with or without the root's trailing dot; any other name is
    ``None``, unknown. An IPv4 address counts in every form that
    ``inet_aton()`` reads (``127.1``, ``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``): the resolver of a proxy reads them so, and connects to
    that address.

    Args:
        host: a host as :class:`~syncws.uri.WebSocketURI` holds it.

    Returns:
        The address space, or ``None``.
    """
    name = host[:-1] if host.endswith(".") else host
    if name == "localhost" or name.endswith(".localhost"):
        return AddressSpace.LOOPBACK
    try:
        return address_space(host)
    except ValueError:
        pass
    try:
        return address_space(socket.inet_ntoa(socket.inet_aton(host)))
    except (OSError, ValueError):  # not an IPv4 address in any form
        return None


def _origin(wsuri: WebSocketURI) -> Tuple[bool, str, int]:
    return wsuri.secure, wsuri.host, wsuri.port


class RedirectChain:
    """The state of one :func:`~syncws.connect` call across its redirects.

    :func:`~syncws.connect` opens each hop with what the chain holds for it
    (:attr:`uri`, :attr:`headers`, :attr:`server_hostname`,
    :attr:`connect_host`, :attr:`connect_port`), asks :meth:`check_space`
    before connecting to an address of a redirect hop, and calls
    :meth:`follow` when a hop answers with a redirect. Not thread-safe: one
    call, one thread.

    Args:
        uri: the URI the caller gave.
        headers: the headers the caller added.
        server_hostname: the caller's ``server_hostname``, if any.
        connect_host: the caller's ``host=`` override, if any.
        connect_port: the caller's ``port=`` override, if any.
        max_redirects: how many redirects to follow.
        allow_private_redirects: follow redirects into more private spaces.
        keep_headers_on_redirect: keep :attr:`headers` on other origins.
        own_socket: the caller gave the socket: no redirect is followed.
    """

    # One per connect() call: slots make it cheaper to build.
    __slots__ = (
        "uri", "headers", "server_hostname", "connect_host", "connect_port", "visited", "response",
        "_max_redirects", "_allow_private", "_keep_headers", "_own_socket", "_first_origin", "_reached",
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
        allow_private_redirects: bool = False,
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
        self._allow_private = allow_private_redirects
        self._keep_headers = keep_headers_on_redirect
        self._own_socket = own_socket
        self._first_origin: Optional[Tuple[bool, str, int]] = None
        # The most public space a hop of the chain connected to.
        self._reached: Optional[AddressSpace] = None

    @property
    def checks_addresses(self) -> bool:
        """Whether the current hop's addresses must pass :meth:`check_space`
        (a redirect hop, after a hop outside loopback, unless allowed)."""
        return (
            self.response is not None
            and not self._allow_private
            and self._reached is not None
            and self._reached > AddressSpace.LOOPBACK
        )

    def check_space(self, space: Optional[AddressSpace]) -> None:
        """Refuse to connect the current hop to an address in ``space``.

        Args:
            space: the least public space among the addresses the hop's host
                resolves to; ``None`` when unknown (a name a proxy resolves),
                which passes.

        Raises:
            InvalidStatusCode: the redirect that led here, with the reason.
        """
        if space is None or not self.checks_addresses:
            return
        assert self._reached is not None and self.response is not None
        if space < self._reached:
            raise self._refuse(
                self.response,
                f"redirect to {redact_uri(self.uri)} refused: it leads to a {space.name.lower()} address "
                f"after a {self._reached.name.lower()} one; allow_private_redirects=True follows it",
            )

    def follow(self, wsuri: WebSocketURI, response: InvalidStatusCode, space: Optional[AddressSpace]) -> None:
        """Move the chain on to where a redirect response points.

        Args:
            wsuri: the parsed URI of the hop that answered.
            response: its answer, a redirect status.
            space: the address space that hop connected to (``None`` when
                unknown: a name behind a proxy, taken as public).

        Raises:
            InvalidStatusCode: ``response`` with the reason the redirect isn't
                followed: no ``Location``, a socket given, too many, an
                invalid target, ``wss://`` to ``ws://``, a loop.
        """
        if self._first_origin is None:
            self._first_origin = _origin(wsuri)
        hop_space = AddressSpace.PUBLIC if space is None else space
        self._reached = hop_space if self._reached is None else max(self._reached, hop_space)
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
