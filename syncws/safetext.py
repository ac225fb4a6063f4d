"""Text fit for a log line, an exception's message or a terminal.

Two kinds of values must never reach those as they are:

* **Peer text** (close reasons, HTTP bodies and header values, request
  paths, subprotocol names, ``Location`` values): a peer that puts a line
  feed in it forges a log line, and one that puts an escape sequence in it
  retitles or clears the terminal showing it. :func:`escape` renders every
  control character as ``\\xNN`` (or ``\\uNNNN``) and keeps the rest,
  printable Unicode included, as it is.
* **Secrets in URIs**: the password of a URI's user info and the values of
  its query (``?access_token=...``). :func:`redact_uri` leaves them out and
  escapes what remains; every URI, path, proxy URL and Redis URL that syncws
  logs or puts in an exception goes through it, and
  :func:`redact_invalid_uri` every URI that didn't parse.
* **Credential headers** (:func:`is_secret_header`): their values are
  left out of logged heads and of the errors about malformed ones.

:func:`escape_json` does for JSON text what :func:`escape` does for plain
text, keeping its value: the JSON log lines use it.

This module imports nothing of syncws, so that every other module (the
exceptions and the close codes included) can use it.
"""

from __future__ import annotations

import functools
import re
from typing import Dict

__all__ = ["escape", "escape_json", "redact_uri", "redact_invalid_uri", "is_secret_header", "REDACTED"]

#: What stands for a secret left out of a URI.
REDACTED = "[redacted]"

# Characters escape() replaces: the C0 controls (ESC, CR, LF...), DEL and
# the C1 controls (a terminal may read U+009B as CSI), the Unicode line and
# paragraph separators (a log viewer may break the line there), and the
# bidirectional controls, which reorder how the rest of a line is displayed
# (the "Trojan Source" characters: U+061C, U+200E, U+200F, U+202A-U+202E,
# U+2066-U+2069).
_ESCAPED = [
    *range(0x00, 0x20), *range(0x7F, 0xA0),
    0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
]


@functools.lru_cache(maxsize=None)
def _table(keep: str) -> Dict[int, str]:
    """The translation table of :func:`escape` for the characters in ``keep`` (a few)."""
    return {
        code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
        for code in _ESCAPED
        if chr(code) not in keep
    }


def escape(text: str, keep: str = "") -> str:
    """Render peer-controlled text for a log line, an error or a terminal.

    Control characters, the Unicode line separators and the bidirectional
    controls become ``\\xNN`` or ``\\uNNNN``, and so does a lone surrogate
    (``\\udNNN``: a ``str`` given as a URI, bytes decoded with
    ``surrogateescape``), which UTF-8 can't encode; everything else, printable
    Unicode included, is kept. The result holds no line break, so it can't
    forge a log line, and no escape sequence, so it can't drive a terminal;
    it encodes to UTF-8, so printing or logging it can't fail.

    Args:
        text: the text as the peer sent it.
        keep: control characters to keep as they are, e.g. ``"\\n\\t"`` to
            show a multi-line message on several lines.

    Returns:
        The escaped text.

    Example::

        >>> escape("bye\\r\\nINFO forged\\x1b]0;title\\x07")
        'bye\\\\x0d\\\\x0aINFO forged\\\\x1b]0;title\\\\x07'
    """
    escaped = text.translate(_table(keep))
    if escaped.isascii():
        return escaped
    # Only lone surrogates can't be encoded: backslashreplace turns them,
    # and nothing else, into \udNNN.
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


# What escape_json() rewrites: the characters escape() escapes that JSON
# strings may hold raw (C0 controls must be escaped in JSON already).
_RAW_IN_JSON_RE = re.compile("[" + "".join(chr(code) for code in _ESCAPED if code >= 0x20) + "]")


def escape_json(text: str) -> str:
    """Write in JSON text, as ``\\uNNNN``, what :func:`escape` escapes and JSON may hold raw.

    ``json.dumps(..., ensure_ascii=False)`` escapes the C0 controls only:
    DEL, the C1 controls (U+009B is a terminal's CSI), the Unicode line
    separators (:meth:`str.splitlines` breaks a line at U+0085, U+2028 and
    U+2029) and the bidirectional controls stay raw. This writes them as
    JSON escapes, so a JSON line stays one line and drives no terminal,
    while it decodes to the same value; other text, printable Unicode
    included, is kept.

    Args:
        text: JSON text, as :func:`json.dumps` writes it.

    Returns:
        The same JSON value, written without those characters.
    """
    return _RAW_IN_JSON_RE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def redact_uri(uri: str) -> str:
    """Render a URI (or a request path) for a log line or an error, secrets left out.

    The password of the user info becomes :data:`REDACTED` (the whole user
    info when it has no ``:``, as a token alone often stands there); so does
    each query value, while query keys stay: ``?room=1&access_token=x``
    becomes ``?room=[redacted]&access_token=[redacted]``, and a query part
    without ``=`` is taken for a value. A fragment is left out the same way.
    The scheme, host, port and path are kept. The result is then escaped
    with :func:`escape`, since a URI may come from a peer (``Location``).

    Works on any text, valid URI or not, and never raises: it is used on the
    URIs that :exc:`~syncws.InvalidURI` reports too.

    Args:
        uri: an absolute URI (``wss://user:pw@host/path?query``, a proxy or
            a Redis URL) or a request target (``/path?query``).

    Returns:
        The URI without its secrets.

    Example::

        >>> redact_uri("wss://bob:hunter2@example.com/feed?room=1&token=abc")
        'wss://bob:[redacted]@example.com/feed?room=[redacted]&token=[redacted]'
    """
    without_fragment, hash_sign, _ = uri.partition("#")
    head, question_mark, query = without_fragment.partition("?")
    scheme, separator, rest = head.partition("://")
    if separator:
        # The authority ends at the first "/" (the query is split off
        # already), and the user info at its last "@", as parse_uri() reads it.
        authority, slash, path = rest.partition("/")
        user_info, at, host_port = authority.rpartition("@")
        if at:
            user, colon, _ = user_info.partition(":")
            user_info = f"{user}:{REDACTED}" if colon else REDACTED
            head = f"{scheme}://{user_info}@{host_port}{slash}{path}"
    if question_mark:
        head += "?" + "&".join(map(_redact_parameter, query.split("&")))
    if hash_sign:
        head += "#" + REDACTED
    return escape(head)


# A scheme and its "//" (RFC 3986 §3.1): no ":" or "@" in it.
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

# What a user name can't hold unescaped: a "user" with one of these, in a
# URI that didn't parse, may be a token or a piece of a password.
_NOT_IN_A_USER_RE = re.compile(r"[/?#@]")


def redact_invalid_uri(text: str) -> str:
    """Render text that isn't a valid URI for an error, secrets left out.

    Where the user info of such text ends can't be known: a ``/``, ``?`` or
    ``#`` in a password ends the authority early (``ws://user:pa/ss@host``
    reads as host ``user``, port ``pa`` and path ``/ss@host``), and without
    ``://`` there is no authority at all. So everything between the scheme
    (if the text starts with one) and the last ``@`` is left out, but for a
    user name that is plainly one; then :func:`redact_uri` applies.

    Args:
        text: what was given as a URI.

    Returns:
        The text without any part of a password or of a query value.

    Example::

        >>> redact_invalid_uri("ws://bob:pa/ss@example.com:x/?token=abc")
        'ws://bob:[redacted]@example.com:x/?token=[redacted]'
    """
    scheme = _SCHEME_RE.match(text)
    start = scheme.end() if scheme else 0
    user_info, at, rest = text[start:].rpartition("@")
    if at:
        user, colon, _ = user_info.partition(":")
        user_info = f"{user}:{REDACTED}" if colon and not _NOT_IN_A_USER_RE.search(user) else REDACTED
        text = f"{text[:start]}{user_info}@{rest}"
    return redact_uri(text)


def _redact_parameter(parameter: str) -> str:
    """``key=value`` -> ``key=[redacted]``; an empty value has nothing to hide."""
    key, equals, value = parameter.partition("=")
    if not equals:
        return REDACTED if key else ""
    return f"{key}={REDACTED}" if value else parameter


# Header names whose values are secrets: the standard ones, and those with a
# word that applications use for API keys, tokens and sessions, or ending
# with "-Key" (X-Api-Key, X-Auth-Token, Private-Token,
# Ocp-Apim-Subscription-Key). The handshake's Sec-WebSocket-Key is public.
_SECRET_WORDS = frozenset({
    "auth", "authorization", "cookie", "token", "secret", "password", "passwd",
    "session", "sessionid", "credential", "credentials", "apikey", "signature",
})


def is_secret_header(name: str) -> bool:
    """Tell whether a header's value is a credential, to be left out of logs.

    ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and
    ``Set-Cookie``, and any name with a word such as ``auth``, ``token``,
    ``secret``, ``password``, ``session`` or ``apikey``, or ending with
    ``-Key`` (``X-Api-Key``), ``Sec-WebSocket-Key`` excepted.

    Args:
        name: the header's name, in any case.

    Returns:
        Whether to show ``[redacted]`` instead of its value.
    """
    lowered = name.strip().lower()
    words = re.split(r"[-_]", lowered)
    if not _SECRET_WORDS.isdisjoint(words):
        return True
    return len(words) > 1 and words[-1] == "key" and lowered != "sec-websocket-key"
