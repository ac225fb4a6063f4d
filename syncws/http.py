"""HTTP/1.1 request and response heads for the opening handshake (RFC 9112).

Theory of operation:

- This module is pure. Reading goes through a ``read_line(limit)`` callable
  with the contract of :meth:`io.BufferedReader.readline`: it returns one
  line with its ``b"\\n"``, or ``limit`` bytes when the line is longer, or
  ``b""`` at the end of the stream. Writing returns bytes.
- Bytes are decoded as ISO-8859-1, which never fails, and then validated as
  text with the same patterns that validate what we write: one set of rules
  (RFC 9110 §5.5, RFC 9112 §3-5) for both directions.
- The parser is strict where leniency hides attacks or bugs: lines end with
  CRLF, obsolete line folding is refused, header names are tokens, values
  hold no control characters but HTAB. Only a missing space after the status
  code of a response with an empty reason is tolerated.
- Every line is bounded by ``max_line`` and the head by ``max_headers``, so
  a peer can't make us buffer an unbounded head.
"""

from __future__ import annotations

import http
import io
import re
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, TypeVar

from .datastructures import SHARED_STRINGS, Field, Headers, HeadersLike, MultipleValuesError, header_pairs, headers_from_lines
from .exceptions import HeadersTooLarge, InvalidMessage
from .safetext import REDACTED, is_secret_header, redact_uri

__all__ = [
    "MAX_LINE",
    "MAX_HEADERS",
    "Headers",
    "HeadersLike",
    "MultipleValuesError",
    "Request",
    "Response",
    "read_request",
    "read_response",
    "serialize_request",
    "serialize_response",
    "check_version",
]

MAX_LINE = 8192
"""Default limit on the length of a line of a head, CRLF excluded, in bytes."""

MAX_HEADERS = 128
"""Default limit on the number of headers of a head."""

#: A token (RFC 9110 §5.6.2): methods, header names, and the names and
#: values in WebSocket headers (:mod:`syncws.handshake`). Matched whole or at
#: a position, never searched: a character class with "+" cannot backtrack.
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# HTAB / SP / VCHAR / obs-text: what a header value or a reason phrase may
# hold (RFC 9110 §5.5, RFC 9112 §4). No CR, LF, NUL or other controls.
_TEXT_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# A request-target is visible ASCII; its finer grammar is the handshake's
# business, which answers with an HTTP error rather than dropping the line.
_TARGET_RE = re.compile(r"[\x21-\x7e]+")
_VERSION_RE = re.compile(r"HTTP/([0-9])\.([0-9])")
_STATUS_CODE_RE = re.compile(r"[0-9]{3}")

# The standard reason phrases: looking one up through http.HTTPStatus(status)
# builds an enum member lookup per response.
_REASONS = {int(status): status.phrase for status in http.HTTPStatus}

# Optional whitespace around header values (RFC 9110 §5.6.3).
_OWS = " \t"

# A handshake's header lines mostly repeat from one connection to the next
# (Upgrade, Connection, Sec-WebSocket-Version, a client's Host and
# User-Agent, a server's Server...). Each line validated once is remembered,
# read or written, so the next connection's costs a dict lookup instead of
# regular expressions; and lines read share their strings. Short lines only,
# at most _KNOWN_MAX of each, emptied when full: lines a peer makes up can't
# make them grow.
_KNOWN_MAX = 512
_KNOWN_LINE_LENGTH = 200
# Headers whose value is new on every connection (a handshake's key and
# answer) or secret (credentials) are never remembered: the former would
# fill the caches with lines seen once, emptying them every _KNOWN_MAX
# connections, and the latter would outlive their connection there.
_UNREMEMBERED = frozenset((
    "sec-websocket-key", "sec-websocket-accept", "authorization", "proxy-authorization", "cookie", "set-cookie",
))
# header line read, CRLF included -> its (name, value, index key)
_known_lines: Dict[bytes, Field] = {}
# A start line parsed: a request's (method, target) or a response's (status, reason).
_Start = TypeVar("_Start", Tuple[str, str], Tuple[int, str])
# start line read, CRLF included -> its (method, target) or (status, reason)
_known_request_lines: Dict[bytes, Tuple[str, str]] = {}
_known_status_lines: Dict[bytes, Tuple[int, str]] = {}
# (name, value) pairs that passed _check_header -> True
_known_headers: Dict[Tuple[str, str], bool] = {}


def _remember(known: Dict[Any, Any], key: Any, value: Any, length: int) -> None:
    """Keep ``key -> value`` in one of the caches above, if ``length`` is short enough."""
    if length <= _KNOWN_LINE_LENGTH:
        if len(known) >= _KNOWN_MAX:
            known.clear()
        known[key] = value


class Request(NamedTuple):
    """The head of an HTTP request.

    Attributes:
        method: the method, e.g. ``"GET"``; not checked further.
        path: the request-target, e.g. ``"/chat?room=1"``.
        headers: the headers.
    """

    method: str
    path: str
    headers: Headers


class Response(NamedTuple):
    """The head of an HTTP response.

    Attributes:
        status_code: the status code, 100 to 599.
        reason: the reason phrase, possibly empty.
        headers: the headers.
    """

    status_code: int
    reason: str
    headers: Headers


def read_request(
    read_line: Callable[[int], bytes],
    *,
    max_line: int = MAX_LINE,
    max_headers: int = MAX_HEADERS,
    read_head: Optional[Callable[[int], Optional[bytes]]] = None,
) -> Request:
    """Read and validate the head of an HTTP/1.1 request.

    The method isn't restricted to ``GET``, so that the server can answer
    other methods with 405 rather than drop the connection.

    Args:
        read_line: returns the next line, as :meth:`io.BufferedReader.readline`
            does (see the module's docstring).
        max_line: the longest line allowed, CRLF excluded, in bytes.
        max_headers: the most headers allowed.
        read_head: returns the whole head (up to and including its empty
            line) when the stream already holds it within the given number
            of bytes, else ``None``, having consumed nothing (see
            :meth:`syncws.headreader.HeadReader.read_head`): the head is
            then parsed at once rather than line by line.

    Returns:
        The request's method, target and headers.

    Raises:
        InvalidMessage: if the head is malformed or the stream ends before
            the end of the head; in that last case, ``__cause__`` is an
            :exc:`EOFError`.
        HeadersTooLarge: if a line or the number of headers exceeds its
            limit.
    """
    lines, read_line = _whole_head(read_head, read_line, max_line, max_headers)
    if lines is not None:
        method, path = _start_line(_known_request_lines, lines[0], _parse_request_line)
        return Request(method, path, _headers_from_lines(lines))
    request_line = _read_line(read_line, "request", max_line, first=True)
    method, path = _start_line(_known_request_lines, request_line, _parse_request_line)
    return Request(method, path, _read_headers(read_line, "request", max_line, max_headers))


def _start_line(known: Dict[bytes, _Start], line: bytes, parse: Callable[[str], _Start]) -> _Start:
    """Parse a start line read, CRLF included, with ``parse``, once per line remembered in ``known``."""
    start = known.get(line)
    if start is None:
        start = parse(line[:-2].decode("iso-8859-1"))
        # A request target with a query string is likely one client's (a
        # token, a session): as _UNREMEMBERED's headers, not kept (nor the
        # rare status line with a "?" in its reason).
        if b"?" not in line:
            _remember(known, line, start, len(line))
    return start


def _parse_request_line(request_line: str) -> Tuple[str, str]:
    """Validate a request line (CRLF excluded); return its method and target."""
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise InvalidMessage(
            f"request line isn't 'METHOD target HTTP/1.1': {_shorten_secret(request_line)}"
        )
    method, path, version = parts
    if not TOKEN_RE.fullmatch(method):
        raise InvalidMessage(f"invalid HTTP method: {_shorten(method)}")
    if not _TARGET_RE.fullmatch(path):
        raise InvalidMessage(f"invalid request target: {_shorten_secret(path)}")
    check_version(version)
    return method, path


def read_response(
    read_line: Callable[[int], bytes],
    *,
    max_line: int = MAX_LINE,
    max_headers: int = MAX_HEADERS,
    read_head: Optional[Callable[[int], Optional[bytes]]] = None,
) -> Response:
    """Read and validate the head of an HTTP/1.1 response.

    Args:
        read_line: returns the next line, as :meth:`io.BufferedReader.readline`
            does (see the module's docstring).
        max_line: the longest line allowed, CRLF excluded, in bytes.
        max_headers: the most headers allowed.
        read_head: as for :func:`read_request`.

    Returns:
        The response's status code, reason phrase and headers.

    Raises:
        InvalidMessage: if the head is malformed or the stream ends before
            the end of the head; in that last case, ``__cause__`` is an
            :exc:`EOFError`.
        HeadersTooLarge: if a line or the number of headers exceeds its
            limit.
    """
    lines, read_line = _whole_head(read_head, read_line, max_line, max_headers)
    if lines is not None:
        status_code, reason = _start_line(_known_status_lines, lines[0], _parse_status_line)
        return Response(status_code, reason, _headers_from_lines(lines))
    status_line = _read_line(read_line, "response", max_line, first=True)
    status_code, reason = _start_line(_known_status_lines, status_line, _parse_status_line)
    return Response(status_code, reason, _read_headers(read_line, "response", max_line, max_headers))


def _parse_status_line(status_line: str) -> Tuple[int, str]:
    """Validate a status line (CRLF excluded); return its status code and reason."""
    version, _, rest = status_line.partition(" ")
    check_version(version)
    # Some servers send "HTTP/1.1 101" without the space that should
    # precede an empty reason; partition() takes both.
    raw_status_code, _, reason = rest.partition(" ")
    if not _STATUS_CODE_RE.fullmatch(raw_status_code):
        raise InvalidMessage(f"invalid HTTP status code: {_shorten(raw_status_code)}")
    status_code = int(raw_status_code)
    if not 100 <= status_code <= 599:
        raise InvalidMessage(f"HTTP status code {status_code} isn't in 100-599")
    if not _TEXT_RE.fullmatch(reason):
        raise InvalidMessage(f"invalid HTTP reason phrase: {_shorten(reason)}")
    return status_code, reason


def _read_line(
    read_line: Callable[[int], bytes], kind: str, max_line: int, first: bool = False
) -> bytes:
    """Read one line of a head, which must end with CRLF, and return it.

    ``kind`` is "request" or "response", for messages; ``first`` tells
    whether this is the start line, when an end of stream means the peer
    sent nothing at all.
    """
    line = read_line(max_line + 2)  # room for the CRLF
    if line.endswith(b"\r\n"):
        return line
    raise _bad_line(line, kind, max_line, first)


def _bad_line(line: bytes, kind: str, max_line: int, first: bool = False) -> Exception:
    """The error to raise for a line read without its CRLF (see :func:`_read_line`)."""
    if line.endswith(b"\n"):
        return InvalidMessage(
            f"line of HTTP {kind} head ends with LF instead of CRLF: {_shorten_secret(line.decode('iso-8859-1'))}"
        )
    if len(line) >= max_line + 2:
        return HeadersTooLarge(
            f"a line of the HTTP {kind} head is longer than {max_line} bytes",
            max_line,
        )
    if first and not line:
        message = f"connection closed before sending an HTTP {kind}"
    else:
        message = f"connection closed while reading HTTP {kind} head"
    error = InvalidMessage(message)
    error.__cause__ = EOFError()
    return error


def _read_headers(
    read_line: Callable[[int], bytes], kind: str, max_line: int, max_headers: int
) -> Headers:
    """Read header lines up to the empty line that ends a head."""
    headers = Headers()
    limit = max_line + 2  # room for the CRLF
    # One more round than max_headers, for the empty line.
    for _ in range(max_headers + 1):
        line = read_line(limit)
        if not line.endswith(b"\r\n"):
            raise _bad_line(line, kind, max_line)
        if line == b"\r\n":
            return headers
        name, value, _ = _known_lines.get(line) or _new_header(line)
        headers[name] = value
    raise HeadersTooLarge(
        f"HTTP {kind} head has more than {max_headers} headers", max_headers
    )


def _whole_head(
    read_head: Optional[Callable[[int], Optional[bytes]]],
    read_line: Callable[[int], bytes],
    max_line: int,
    max_headers: int,
) -> Tuple[Optional[List[bytes]], Callable[[int], bytes]]:
    """Take the head at once, if ``read_head`` can: return its lines.

    Returns the head's lines (CRLF included, the empty line last), or
    ``None`` and what to read it line by line with: the stream, or the
    bytes of a head taken whole that is unusual (a line not ending with
    CRLF, more than ``max_headers`` headers), so that the line by line
    reading raises the errors that say what is wrong.
    """
    if read_head is None:
        return None, read_line
    # At most a line's limit: no line of the head can be longer.
    head = read_head(max_line + 2)
    if head is None:
        return None, read_line
    lines = head.splitlines(keepends=True)
    # splitlines() also cuts at a bare CR or LF: then fewer CRLFs than lines.
    if len(lines) > max_headers + 2 or head.count(b"\r\n") != len(lines):
        return None, io.BytesIO(head).readline
    return lines, read_line


def _headers_from_lines(lines: List[bytes]) -> Headers:
    """The headers of a head's lines from :func:`_whole_head` (start line first)."""
    return headers_from_lines(lines[1:-1], _known_lines, _new_header)


def _new_header(line: bytes) -> Field:
    """Parse a header line read, CRLF included, that isn't in ``_known_lines``.

    Returns its name, value and index key (as :class:`Headers` keeps it), as
    remembered there.
    """
    name, value = _parse_header_line(line[:-2].decode("iso-8859-1"))
    key = name.lower()
    header = (name, value, SHARED_STRINGS.get(key, key))
    if key not in _UNREMEMBERED:
        _remember(_known_lines, line, header, len(line))
    return header


def _parse_header_line(line: str) -> Tuple[str, str]:
    """Split a ``name: value`` line and validate both halves."""
    if line[0] in _OWS:
        # RFC 9112 §5.2 lets recipients reject obs-fold; unfolding it is how
        # request smuggling between front ends and back ends happens.
        raise InvalidMessage(
            f"header line starts with whitespace (obs-fold, obsolete line "
            f"folding, isn't supported): {_shorten_secret(line)}"
        )
    name, colon, value = line.partition(":")
    if not colon:
        raise InvalidMessage(f"header line has no colon: {_shorten_secret(line)}")
    if not TOKEN_RE.fullmatch(name):
        raise InvalidMessage(f"invalid header name: {_shorten(name)}")
    value = value.strip(_OWS)
    if not _TEXT_RE.fullmatch(value):
        shown = REDACTED if is_secret_header(name) else _shorten_secret(value)
        raise InvalidMessage(f"invalid value of {name} header: {shown}")
    return SHARED_STRINGS.get(name, name), SHARED_STRINGS.get(value, value)


def check_version(version: str) -> None:
    """Accept HTTP/1.1 and later 1.x versions, as RFC 6455 §4.1 requires.

    Args:
        version: the version of a start line, e.g. ``"HTTP/1.1"``.

    Raises:
        InvalidMessage: another version (HTTP/1.0), or not a version.
    """
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise InvalidMessage(f"invalid HTTP version: {_shorten(version)}")
    major, minor = match.groups()
    if major != "1" or minor == "0":
        raise InvalidMessage(
            f"unsupported HTTP version {version}: WebSocket needs HTTP/1.1"
        )


def _shorten(text: str, limit: int = 80) -> str:
    """Quote a value seen on the wire for an error message, cut to ``limit``."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}..."


def _shorten_secret(text: str, limit: int = 80) -> str:
    """:func:`_shorten` for a line, target or value that may hold a secret.

    A failed handshake's error is logged: a request target shows without
    its query values, a credential header's line without its value
    (:mod:`syncws.safetext`).
    """
    name, colon, _ = text.partition(":")
    if colon and is_secret_header(name):
        text = f"{name}: {REDACTED}"
    more = "..." if len(text) > limit else ""
    return f"'{redact_uri(text[:limit])}'{more}"


def serialize_request(path: str, headers: HeadersLike) -> bytes:
    """Write the head of a ``GET`` request.

    Args:
        path: the request-target, e.g. ``"/chat?room=1"``.
        headers: the headers, in the order to write them.

    Returns:
        ``GET path HTTP/1.1``, the headers and an empty line, in bytes.

    Raises:
        ValueError: if ``path`` isn't visible ASCII, or a header name isn't a
            token, or a value holds CR, LF or other control characters,
            characters outside ISO-8859-1, or leading or trailing whitespace.
    """
    if not _TARGET_RE.fullmatch(path):
        raise ValueError(f"invalid request target: {path!r}")
    return _serialize_head(f"GET {path} HTTP/1.1", headers)


def serialize_response(
    status: int, headers: HeadersLike, reason: Optional[str] = None
) -> bytes:
    """Write the head of a response.

    Args:
        status: the status code, 100 to 599.
        headers: the headers, in the order to write them.
        reason: the reason phrase; by default the standard one for
            ``status`` (empty for an unregistered code).

    Returns:
        ``HTTP/1.1 status reason``, the headers and an empty line, in bytes.

    Raises:
        ValueError: if ``status`` isn't in 100-599, or ``reason`` holds
            control characters, or a header name isn't a token, or a value
            holds CR, LF or other control characters, characters outside
            ISO-8859-1, or leading or trailing whitespace.
    """
    if not 100 <= status <= 599:
        raise ValueError(f"HTTP status code {status} isn't in 100-599")
    if reason is None:
        reason = _REASONS.get(status, "")
    if not _TEXT_RE.fullmatch(reason):
        raise ValueError(f"invalid HTTP reason phrase: {reason!r}")
    return _serialize_head(f"HTTP/1.1 {status} {reason}", headers)


def _serialize_head(start_line: str, headers: HeadersLike) -> bytes:
    """Validate headers and write them after ``start_line``."""
    if not isinstance(headers, Headers):
        headers = Headers(headers)
    for header in header_pairs(headers):
        if header not in _known_headers:
            _check_header(*header)
            if header[0].lower() not in _UNREMEMBERED:
                _remember(_known_headers, header, True, len(header[0]) + len(header[1]))
    return f"{start_line}\r\n{headers}".encode("iso-8859-1")


def _check_header(name: str, value: str) -> None:
    """Refuse a header that would be misread or would corrupt the head."""
    if not TOKEN_RE.fullmatch(name):
        raise ValueError(f"invalid header name: {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(
            f"value of {name} header contains CR or LF, which would let it "
            f"inject headers (response splitting): {value!r}"
        )
    if not _TEXT_RE.fullmatch(value):
        raise ValueError(
            f"value of {name} header contains a control character or a "
            f"character outside ISO-8859-1: {value!r}"
        )
    if value != value.strip(_OWS):
        # The reader strips it, so it couldn't arrive as written.
        raise ValueError(
            f"value of {name} header has leading or trailing whitespace: {value!r}"
        )
