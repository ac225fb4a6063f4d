"""``ws://`` and ``wss://`` URIs (RFC 6455 §3).

The grammar is small enough to parse by hand::

    ws-URI  = ("ws" / "wss") "://" [ user ":" password "@" ] host [ ":" port ]
              path [ "?" query ]

so :func:`parse_uri` does, rather than going through :mod:`urllib.parse`,
which silently drops tabs and newlines and raises :exc:`ValueError` on bad
brackets or ports. Here every malformed URI raises
:exc:`~syncws.exceptions.InvalidURI` with a reason.

IRIs are accepted: a non-ASCII host is IDNA-encoded, and characters that
can't appear in a request line (non-ASCII, spaces, controls, ...) are
percent-encoded into the resource name, as browsers do.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import NamedTuple, Optional, Tuple

from .exceptions import InvalidURI
from .safetext import REDACTED, redact_uri

__all__ = ["WebSocketURI", "parse_uri", "host_header"]

_DEFAULT_PORTS = {False: 80, True: 443}

# A reg-name (RFC 3986 §3.2.2) without percent-encoding: unreserved and
# sub-delims. Anything else in a host is a typo or an attempt to smuggle
# something into the Host header.
_HOST_RE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=]+")

# Characters to percent-encode in the path and query: everything but
# unreserved, sub-delims, ":", "@", "/", "?" and "%" starting a valid
# escape. A stray "%" is encoded too, so the result is always a valid URI.
_UNSAFE_IN_RESOURCE_RE = re.compile(
    r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]|%(?![0-9A-Fa-f]{2})"
)


class WebSocketURI(NamedTuple):
    """A parsed WebSocket URI.

    Attributes:
        secure: ``True`` for ``wss://``, ``False`` for ``ws://``.
        host: the host name (lowercase, IDNA-encoded) or IP address, without
            brackets for IPv6.
        port: the port, the scheme's default (80 or 443) when not given.
        resource_name: the path and query, percent-encoded, ready for the
            request line (``/`` when the URI has no path).
        user_info: ``(user, password)`` percent-decoded, when the URI has
            them.

    Its ``repr()`` (and ``str()``) leaves the secrets out, as
    :func:`~syncws.safetext.redact_uri` does: the password and the query's
    values become ``[redacted]``, so that logging a parsed URI doesn't log
    them. The fields themselves hold the values whole.
    """

    secure: bool
    host: str
    port: int
    resource_name: str
    user_info: Optional[Tuple[str, str]] = None

    def __repr__(self) -> str:
        user_info = None if self.user_info is None else (self.user_info[0], REDACTED)
        return (
            f"{type(self).__name__}(secure={self.secure!r}, host={self.host!r}, port={self.port!r}, "
            f"resource_name={redact_uri(self.resource_name)!r}, user_info={user_info!r})"
        )


def parse_uri(uri: str) -> WebSocketURI:
    """Parse and validate a ``ws://`` or ``wss://`` URI.

    Args:
        uri: the URI, e.g. ``"wss://example.com/chat?room=1"``.

    Returns:
        The parsed URI.

    Raises:
        InvalidURI: if ``uri`` isn't a valid WebSocket URI; the reason says
            which part is wrong.
    """
    try:
        uri.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidURI(uri, "it contains a lone surrogate") from None
    if "#" in uri:
        # RFC 6455 §3: a "#" must be escaped; there is no fragment to send.
        reason = "fragments aren't allowed"
        if "@" in uri.partition("#")[2]:
            reason += " (a '#' in a password must be percent-encoded: %23)"
        raise InvalidURI(uri, reason)

    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() not in ("ws", "wss"):
        raise InvalidURI(uri, "scheme isn't ws or wss")
    secure = scheme.lower() == "wss"
    if not rest.startswith("//"):
        raise InvalidURI(uri, f"'//' must follow '{scheme}:'")

    match = re.match(r"//([^/?]*)(.*)", rest, re.DOTALL)
    assert match is not None  # the pattern matches anything after "//"
    authority, path_and_query = match.groups()

    # Like browsers, take the last "@" so a password may hold a raw "@".
    raw_user_info, at, host_port = authority.rpartition("@")
    user_info = _parse_user_info(uri, raw_user_info) if at else None
    try:
        host, port_text = _split_host_port(uri, host_port)
        port = _DEFAULT_PORTS[secure] if port_text is None else _parse_port(uri, port_text)
    except InvalidURI:
        if "@" not in path_and_query:
            raise
        # A "/" or "?" in a password ends the authority early:
        # "ws://user:pa/ss@host" reads as host "user" and port "pa". What
        # the reason would quote may be part of a password, so it doesn't.
        raise InvalidURI(
            uri,
            "the host or port is invalid, and an '@' follows it: "
            "a '/' or '?' in a password must be percent-encoded (%2F, %3F)",
        ) from None
    return WebSocketURI(secure, host, port, _resource_name(path_and_query), user_info)


def _parse_user_info(uri: str, raw_user_info: str) -> Tuple[str, str]:
    """Split ``user:password`` and percent-decode both."""
    user, colon, password = raw_user_info.partition(":")
    if not colon:
        raise InvalidURI(uri, "user info has a user but no password")
    try:
        return (
            urllib.parse.unquote(user, errors="strict"),
            urllib.parse.unquote(password, errors="strict"),
        )
    except UnicodeDecodeError:
        # Replacing bytes with U+FFFD would silently send wrong credentials.
        raise InvalidURI(uri, "user info isn't UTF-8 once percent-decoded") from None


def _split_host_port(uri: str, host_port: str) -> Tuple[str, Optional[str]]:
    """Split ``host[:port]`` into a validated host and the port's text.

    Returns ``None`` as the port's text when there is no ``:``.
    """
    if host_port.startswith("["):
        literal, bracket, after = host_port[1:].partition("]")
        if not bracket:
            raise InvalidURI(uri, "'[' of the IPv6 address isn't closed")
        if after and not after.startswith(":"):
            raise InvalidURI(uri, f"unexpected {after!r} after the IPv6 address")
        # Zone identifiers (RFC 6874): browsers and the WHATWG URL standard
        # don't support them either, and ipaddress would misread "%25eth0".
        if "%" in literal:
            raise InvalidURI(uri, "IPv6 zone identifiers aren't supported")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise InvalidURI(uri, f"{literal!r} isn't a valid IPv6 address") from None
        return literal.lower(), after[1:] if after else None

    if host_port.count(":") > 1:
        raise InvalidURI(uri, "IPv6 addresses must be enclosed in brackets")
    host, colon, port_text = host_port.partition(":")
    if not host:
        raise InvalidURI(uri, "host is missing")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURI(uri, f"host {host!r} can't be IDNA-encoded") from None
    if not _HOST_RE.fullmatch(host):
        raise InvalidURI(uri, f"host {host!r} contains invalid characters")
    return host.lower(), port_text if colon else None


def _parse_port(uri: str, text: str) -> int:
    """Return the port in ``text``, which followed a ``:`` in the URI."""
    if not text:
        raise InvalidURI(uri, "port is empty after ':'")
    # Not str.isdigit(), which accepts "²" and other non-ASCII digits.
    if not re.fullmatch(r"[0-9]+", text):
        raise InvalidURI(uri, f"port {text!r} isn't a number")
    # Convert only the significant digits, after checking their length:
    # int() refuses strings of over 4300 characters, leading zeros included.
    digits = text.lstrip("0") or "0"
    if len(digits) > 5 or not 1 <= int(digits) <= 65535:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise InvalidURI(uri, f"port {shown} is out of range 1-65535")
    return int(digits)


def _resource_name(path_and_query: str) -> str:
    """Build the request line's target from the path and query of a URI."""
    path, _, query = path_and_query.partition("?")
    resource_name = path or "/"
    if query:
        resource_name = f"{resource_name}?{query}"
    return _UNSAFE_IN_RESOURCE_RE.sub(
        lambda match: urllib.parse.quote(match.group(), safe=""), resource_name
    )


def host_header(wsuri: WebSocketURI) -> str:
    """Format the value of the ``Host`` header for a URI (RFC 9110 §7.2).

    IPv6 addresses get brackets and the port is left out when it's the
    scheme's default, as browsers send it.

    Args:
        wsuri: a parsed URI.

    Returns:
        ``host`` or ``host:port``, e.g. ``"[::1]:8080"``.
    """
    host = f"[{wsuri.host}]" if ":" in wsuri.host else wsuri.host
    if wsuri.port == _DEFAULT_PORTS[wsuri.secure]:
        return host
    return f"{host}:{wsuri.port}"
