"""The opening-handshake rules of RFC 6455 §4, with no I/O.

Theory of operation:

* This module never touches a socket. It reads and writes headers through two
  callables, so that the client, the server and the tests share one set of
  rules:

  - ``set_header(name, value)`` adds a header to the message being built;
  - ``get_header(name)`` returns a header of the message received, or ``None``
    when it is absent. When a header appeared several times, the caller has
    already joined the values with ``", "`` (RFC 9110 §5.3), so every value is
    read as a comma-separated list, and a comma in a single-valued header
    (``Sec-WebSocket-Key``, ``Sec-WebSocket-Version``) means it was repeated.

* ``build_request`` / ``check_request`` are the client's request and the
  server's check of it; ``build_response`` / ``check_response`` the server's
  answer and the client's check of it. ``check_request_head`` checks what any
  request must satisfy before the server's hooks read it (one ``Host``, one
  origin, no body). A failed check raises
  :exc:`~syncws.exceptions.InvalidUpgrade` for ``Upgrade`` and ``Connection``
  and :exc:`~syncws.exceptions.InvalidHeader` for everything else.

* The header grammars (RFC 7230 token lists with their empty elements, RFC
  6455 §9.1 extension lists, RFC 6455 §11.3.4 subprotocol lists) are read by
  one small scanner that walks the value once, from left to right: every step
  consumes at least one character or stops, so hostile headers cost linear
  time. Scanning errors name the position and the character found there.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from typing import Callable, List, Optional, Sequence, Tuple, Type, TypeVar

try:
    # The built-in SHA-1 avoids loading OpenSSL's libcrypto (megabytes of
    # memory in every process) for one digest per handshake.
    from _sha1 import sha1 as _sha1  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import sha1 as _sha1

from .exceptions import InvalidHeader, InvalidUpgrade
from .http import TOKEN_RE

__all__ = [
    "GUID",
    "WEBSOCKET_VERSION",
    "SetHeader",
    "GetHeader",
    "ExtensionParameter",
    "ExtensionHeader",
    "accept_key",
    "build_request",
    "check_request",
    "check_request_head",
    "build_response",
    "check_response",
    "parse_token_list",
    "parse_subprotocol_list",
    "build_subprotocol_list",
    "parse_extension_list",
    "build_extension_list",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""The fixed string that RFC 6455 §1.3 appends to the key before hashing."""

WEBSOCKET_VERSION = "13"
"""The only ``Sec-WebSocket-Version`` that RFC 6455 defines."""

SetHeader = Callable[[str, str], None]
GetHeader = Callable[[str], Optional[str]]

ExtensionParameter = Tuple[str, Optional[str]]
"""An extension parameter: its name and its value, ``None`` when it has none."""

ExtensionHeader = Tuple[str, List[ExtensionParameter]]
"""One offered or accepted extension: its name and its parameters, in order."""

_T = TypeVar("_T")

_OWS_RE = re.compile(r"[ \t]*")

# RFC 6455 §4.1: the nonce is 16 random bytes, sent in base64.
_KEY_LENGTH = 16

# A Host header's value (RFC 9112 §3.2): uri-host [":" port] of RFC 3986
# §3.2.2-3.2.3, an IPv6 literal in brackets or an IPv4 address or a
# registered name; the sub-delims of the latter leave out ",", which is what
# joins repeated headers. RFC 6455 §4.1 asks for a host: the name isn't empty.
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z\-._~%!$&'()*+;=]+)(?::[0-9]*)?")

# What separates origins in an Origin header that holds several: the ", "
# of repeated headers joined, or the space of RFC 6454 §7.1's origin-list.
_ORIGIN_SEPARATOR_RE = re.compile(r"[, \t]")

_NO_BODY = "a WebSocket upgrade request has no body"


def _b64encode(data: bytes) -> str:
    """``base64.b64encode(data)`` as text, from binascii directly.

    base64.b64encode() is a Python wrapper around it, and every handshake
    encodes a key (client) or the answer to one (both sides).
    """
    return binascii.b2a_base64(data, newline=False).decode("ascii")


# --- The handshake ---------------------------------------------------------


def accept_key(key: str) -> str:
    """Compute the ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``.

    Args:
        key: the ``Sec-WebSocket-Key`` of the request.

    Returns:
        The base64 of the SHA-1 of ``key`` followed by :data:`GUID`.

    Raises:
        UnicodeEncodeError: ``key`` is not ASCII (a valid key always is).
    """
    # SHA-1 is a protocol constant here, not a security measure; saying so
    # keeps it available on FIPS-restricted builds of Python.
    digest = _sha1((key + GUID).encode("ascii"), usedforsecurity=False).digest()
    return _b64encode(digest)


def build_request(set_header: SetHeader) -> str:
    """Add the WebSocket headers of a client's opening request.

    Args:
        set_header: adds one header to the request.

    Returns:
        The ``Sec-WebSocket-Key`` that was sent, to check the response with.
    """
    key = _b64encode(os.urandom(_KEY_LENGTH))
    set_header("Upgrade", "websocket")
    set_header("Connection", "Upgrade")
    set_header("Sec-WebSocket-Key", key)
    set_header("Sec-WebSocket-Version", WEBSOCKET_VERSION)
    return key


def check_request(get_header: GetHeader) -> str:
    """Check the WebSocket headers of a client's opening request.

    Args:
        get_header: returns one header of the request, ``None`` when absent.

    Returns:
        The request's ``Sec-WebSocket-Key``, to build the response with.

    Raises:
        InvalidUpgrade: ``Upgrade`` or ``Connection`` is missing or does not
            ask for a WebSocket upgrade.
        InvalidHeader: ``Sec-WebSocket-Version`` is missing, repeated or
            not ``13`` (with ``name == "Sec-WebSocket-Version"``: the server
            answers a single other version with HTTP 426), or
            ``Sec-WebSocket-Key`` is missing, repeated, or not the base64 of
            16 bytes.
    """
    _check_upgrade(get_header)

    # The version comes before the key: a client speaking another version
    # should learn which one we speak (HTTP 426, RFC 6455 §4.4) rather than
    # hear that its key looks odd.
    version = _single_value(get_header, "Sec-WebSocket-Version")
    if version != WEBSOCKET_VERSION:
        raise InvalidHeader(
            "Sec-WebSocket-Version", version, f"expected {WEBSOCKET_VERSION!r}"
        )

    key = _single_value(get_header, "Sec-WebSocket-Key")
    if key is None:
        raise InvalidHeader("Sec-WebSocket-Key", None)
    try:
        raw_key = base64.b64decode(key, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise InvalidHeader("Sec-WebSocket-Key", key, "not valid base64") from None
    if len(raw_key) != _KEY_LENGTH:
        raise InvalidHeader(
            "Sec-WebSocket-Key",
            key,
            f"decodes to {len(raw_key)} bytes, expected {_KEY_LENGTH}",
        )
    return key


def check_request_head(get_header: GetHeader) -> None:
    """Check the rules of HTTP that a request to a WebSocket server must follow.

    The server checks them on every request, before its hooks read the
    headers, and :func:`check_request` then checks the WebSocket headers:

    * exactly one ``Host``, holding a host and an optional port: RFC 9112
      §3.2 asks a server to answer 400 to a request with none, two, or an
      invalid one;
    * at most one origin in ``Origin`` (RFC 6454 §7.3): two, joined, would
      be matched against an allow-list as one value, and a pattern such as
      ``https://.*\\.example\\.com`` matches ``https://evil.test,
      https://app.example.com``;
    * no body: no ``Transfer-Encoding``, and no ``Content-Length`` but ``0``.
      The bytes after the head are WebSocket frames, so a body would be read
      as frames.

    Args:
        get_header: returns one header of the request, ``None`` when absent.

    Raises:
        InvalidHeader: the header that breaks a rule, naming the rule.
    """
    host = _single_value(get_header, "Host")
    if host is None:
        raise InvalidHeader("Host", None)
    if _HOST_RE.fullmatch(host) is None:
        raise InvalidHeader("Host", host, "expected host or host:port")
    origin = get_header("Origin")
    if origin is not None and _ORIGIN_SEPARATOR_RE.search(origin):
        raise InvalidHeader("Origin", origin, "more than one origin")
    transfer_encoding = get_header("Transfer-Encoding")
    if transfer_encoding is not None:
        raise InvalidHeader("Transfer-Encoding", transfer_encoding, _NO_BODY)
    content_length = get_header("Content-Length")
    if content_length is not None and content_length != "0":
        raise InvalidHeader("Content-Length", content_length, _NO_BODY)


def _single_value(get_header: GetHeader, name: str) -> Optional[str]:
    """Return a header that may appear only once, ``None`` when absent.

    Raises:
        InvalidHeader: it appears more than once. None of the headers read
            this way can hold a comma, so one means the caller joined
            repeated headers.
    """
    value = get_header(name)
    if value is not None and "," in value:
        raise InvalidHeader(name, value, f"more than one {name} header")
    return value


def build_response(set_header: SetHeader, key: str) -> None:
    """Add the WebSocket headers of a server's ``101`` response.

    Args:
        set_header: adds one header to the response.
        key: the ``Sec-WebSocket-Key`` returned by :func:`check_request`.
    """
    set_header("Upgrade", "websocket")
    set_header("Connection", "Upgrade")
    set_header("Sec-WebSocket-Accept", accept_key(key))


def check_response(get_header: GetHeader, key: str) -> None:
    """Check the WebSocket headers of a server's ``101`` response.

    Args:
        get_header: returns one header of the response, ``None`` when absent.
        key: the ``Sec-WebSocket-Key`` returned by :func:`build_request`.

    Raises:
        InvalidUpgrade: ``Upgrade`` or ``Connection`` is missing or does not
            accept the WebSocket upgrade.
        InvalidHeader: ``Sec-WebSocket-Accept`` is missing or wrong.
    """
    _check_upgrade(get_header)
    expected = accept_key(key)
    accept = get_header("Sec-WebSocket-Accept")
    if accept != expected:
        raise InvalidHeader(
            "Sec-WebSocket-Accept", accept, f"expected {expected!r}"
        )


def _check_upgrade(get_header: GetHeader) -> None:
    """Check that ``Connection`` and ``Upgrade`` ask for WebSocket.

    Both are case-insensitive lists (RFC 6455 §4.2.1, RFC 9110 §7.6.1 and
    §7.8), so ``Connection: keep-alive, Upgrade`` is fine.

    Raises:
        InvalidUpgrade: either header is missing, malformed, or lacks the
            expected element.
    """
    # The usual values, a list of one element, are checked without parsing
    # (ASCII only: str.lower() maps some non-ASCII letters to ASCII ones).
    connection = get_header("Connection")
    if connection is None:
        raise InvalidUpgrade("Connection", None)
    if not (connection.isascii() and connection.lower() == "upgrade"):
        options = _parse_header(connection, "Connection", _parse_token, InvalidUpgrade)
        if "upgrade" not in (option.lower() for option in options):
            raise InvalidUpgrade("Connection", connection, "expected 'Upgrade'")

    upgrade = get_header("Upgrade")
    if upgrade is None:
        raise InvalidUpgrade("Upgrade", None)
    if not (upgrade.isascii() and upgrade.lower() == "websocket"):
        protocols = _parse_header(upgrade, "Upgrade", _parse_protocol, InvalidUpgrade)
        if "websocket" not in (protocol.lower() for protocol in protocols):
            raise InvalidUpgrade("Upgrade", upgrade, "expected 'websocket'")


# --- Header value grammars -------------------------------------------------


def parse_token_list(value: str, header_name: str) -> List[str]:
    """Parse a comma-separated list of tokens (RFC 7230 ``#token``).

    Empty list elements, as in ``"a, , b"``, are skipped, as RFC 7230 §7
    asks of recipients.

    Args:
        value: the header's value.
        header_name: the header's name, for the error.

    Returns:
        The tokens, in order, as written.

    Raises:
        InvalidHeader: ``value`` is not a list of tokens.
    """
    return _parse_header(value, header_name, _parse_token)


def parse_subprotocol_list(value: str) -> List[str]:
    """Parse a ``Sec-WebSocket-Protocol`` value (RFC 6455 §11.3.4).

    Args:
        value: the header's value; repeated headers joined with ``", "``.

    Returns:
        The subprotocols, in order.

    Raises:
        InvalidHeader: a subprotocol is not a token.
    """
    return _parse_header(value, "Sec-WebSocket-Protocol", _parse_token)


def build_subprotocol_list(protocols: Sequence[str]) -> str:
    """Build a ``Sec-WebSocket-Protocol`` value.

    Args:
        protocols: the subprotocols, in order of preference.

    Returns:
        The header's value.

    Raises:
        TypeError: ``protocols`` is a single string, not a sequence of them.
        ValueError: a subprotocol is not a token.
    """
    # A lone string is a sequence of one-letter "subprotocols": refuse it.
    if isinstance(protocols, str):
        raise TypeError("protocols must be a sequence of str, not a str")
    for protocol in protocols:
        _require_token(protocol, "subprotocol")
    return ", ".join(protocols)


def parse_extension_list(value: str) -> List[ExtensionHeader]:
    """Parse a ``Sec-WebSocket-Extensions`` value (RFC 6455 §9.1).

    For example ``"permessage-deflate; client_max_window_bits, x-foo;
    a=\\"b\\""`` gives ``[("permessage-deflate", [("client_max_window_bits",
    None)]), ("x-foo", [("a", "b")])]``. A parameter value may be a token or a
    quoted-string whose content, once unescaped, is a token.

    Args:
        value: the header's value; repeated headers joined with ``", "``.

    Returns:
        The extensions, in order, each with its parameters in order.

    Raises:
        InvalidHeader: ``value`` is malformed; the reason names the position.
    """
    return _parse_header(value, "Sec-WebSocket-Extensions", _parse_extension)


def build_extension_list(extensions: Sequence[ExtensionHeader]) -> str:
    """Build a ``Sec-WebSocket-Extensions`` value.

    Args:
        extensions: ``(name, [(parameter, value or None), ...])`` pairs.

    Returns:
        The header's value; parameter values are written as tokens.

    Raises:
        ValueError: a name, parameter name or parameter value is not a token.
    """
    items = []
    for name, parameters in extensions:
        parts = [_require_token(name, "extension name")]
        for param_name, param_value in parameters:
            _require_token(param_name, "extension parameter name")
            if param_value is None:
                parts.append(param_name)
            else:
                _require_token(param_value, "extension parameter value")
                parts.append(f"{param_name}={param_value}")
        items.append("; ".join(parts))
    return ", ".join(items)


def _require_token(text: str, what: str) -> str:
    """Return ``text`` if it is a token; raise ``ValueError`` otherwise."""
    if not _is_token(text):
        raise ValueError(f"{what} {text!r} is not a token")
    return text


def _is_token(text: str) -> bool:
    """Tell whether ``text`` is an RFC 7230 token."""
    return TOKEN_RE.fullmatch(text) is not None


# --- The scanner -----------------------------------------------------------
# Each _parse_* function reads one grammar element of ``text`` at ``pos`` and
# returns it with the position just after it; it raises _SyntaxError with a
# reason naming the position when the element is not there.


class _SyntaxError(Exception):
    """A header value does not follow its grammar; turned into InvalidHeader."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_header(
    value: str,
    name: str,
    parse_item: Callable[[str, int], Tuple[_T, int]],
    error: Type[InvalidHeader] = InvalidHeader,
) -> List[_T]:
    """Parse ``value`` as a list of ``parse_item``; report errors as ``error``."""
    try:
        return _parse_list(value, parse_item)
    except _SyntaxError as exc:
        # The scanner's exception is an implementation detail: hide it.
        raise error(name, value, exc.reason) from None


def _parse_list(
    text: str, parse_item: Callable[[str, int], Tuple[_T, int]]
) -> List[_T]:
    """Parse an RFC 7230 §7 list: items separated by commas and OWS.

    Empty elements (``"a,,b"``, a leading or trailing comma) are skipped, and
    an empty value gives an empty list: callers decide whether one is needed.
    """
    items: List[_T] = []
    pos = 0
    while True:
        pos = _skip_ows(text, pos)
        if pos == len(text):
            return items
        if text[pos] == ",":  # an empty element
            pos += 1
            continue
        item, pos = parse_item(text, pos)
        items.append(item)
        pos = _skip_ows(text, pos)
        if pos == len(text):
            return items
        if text[pos] != ",":
            raise _SyntaxError(
                f"expected ',' at position {pos}, found {_found(text, pos)}"
            )
        pos += 1


def _parse_token(text: str, pos: int, what: str = "token") -> Tuple[str, int]:
    """Parse a token at ``pos``."""
    match = TOKEN_RE.match(text, pos)
    if match is None:
        raise _SyntaxError(
            f"expected {what} at position {pos}, found {_found(text, pos)}"
        )
    return match.group(), match.end()


def _parse_protocol(text: str, pos: int) -> Tuple[str, int]:
    """Parse an ``Upgrade`` element: ``token ["/" token]`` (RFC 9110 §7.8).

    Returns it whole, ``"name/version"``, so that ``websocket/2`` is not
    mistaken for ``websocket``.
    """
    name, pos = _parse_token(text, pos, "protocol name")
    if pos < len(text) and text[pos] == "/":
        version, pos = _parse_token(text, pos + 1, "protocol version")
        return f"{name}/{version}", pos
    return name, pos


def _parse_extension(text: str, pos: int) -> Tuple[ExtensionHeader, int]:
    """Parse ``extension-token *( ";" extension-param )`` (RFC 6455 §9.1)."""
    name, pos = _parse_token(text, pos, "extension name")
    parameters: List[ExtensionParameter] = []
    while True:
        pos = _skip_ows(text, pos)
        if pos == len(text) or text[pos] != ";":
            return (name, parameters), pos
        pos = _skip_ows(text, pos + 1)
        param_name, pos = _parse_token(text, pos, "parameter name")
        param_value: Optional[str] = None
        after_name = _skip_ows(text, pos)
        if after_name < len(text) and text[after_name] == "=":
            pos = _skip_ows(text, after_name + 1)
            param_value, pos = _parse_parameter_value(text, pos)
        parameters.append((param_name, param_value))


def _parse_parameter_value(text: str, pos: int) -> Tuple[str, int]:
    """Parse an extension parameter's value: a token or a quoted token."""
    if pos == len(text) or text[pos] != '"':
        return _parse_token(text, pos, "parameter value")
    value, end = _parse_quoted_string(text, pos)
    # RFC 6455 §9.1: "the value ... MUST conform to the ABNF for token" even
    # when quoted, so quoting may only hide characters, never add new ones.
    if not _is_token(value):
        raise _SyntaxError(
            f"quoted value {value!r} at position {pos} is not a token"
        )
    return value, end


def _parse_quoted_string(text: str, pos: int) -> Tuple[str, int]:
    """Parse an RFC 7230 §3.2.6 quoted-string at ``pos`` and unescape it.

    qdtext is HTAB, SP, VCHAR except ``"`` and ``\\``, and obs-text
    (0x80-0xFF); a backslash escapes HTAB, SP, VCHAR or obs-text.
    """
    assert text[pos] == '"'
    start = pos
    chars: List[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(chars), pos + 1
        if char == "\\":
            pos += 1
            if pos == len(text):
                break
            char = text[pos]
        if not _is_quotable(char):
            raise _SyntaxError(
                f"unexpected {char!r} at position {pos} in quoted string"
            )
        chars.append(char)
        pos += 1
    raise _SyntaxError(f"unterminated quoted string starting at position {start}")


def _is_quotable(char: str) -> bool:
    """Tell whether ``char`` may appear in a quoted-string (maybe escaped)."""
    code = ord(char)
    return code == 0x09 or 0x20 <= code <= 0x7E or 0x80 <= code <= 0xFF


def _skip_ows(text: str, pos: int) -> int:
    """Return the position after the optional whitespace at ``pos``."""
    match = _OWS_RE.match(text, pos)
    assert match is not None  # "[ \t]*" matches the empty string
    return match.end()


def _found(text: str, pos: int) -> str:
    """Describe what the scanner found at ``pos``, for an error message."""
    return "end of value" if pos == len(text) else repr(text[pos])
