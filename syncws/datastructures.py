"""The data structures of HTTP heads: :class:`Headers`, :class:`ServerResponse`.

This module is pure and imports nothing of syncws: :mod:`syncws.http` (which
parses and writes heads), :mod:`syncws.exceptions` (whose
:exc:`~syncws.InvalidStatusCode` carries a response) and the handshake's
hooks all build on it. :mod:`syncws.http` and :mod:`syncws.hooks`, public
modules, still export these names.
"""

from __future__ import annotations

import http
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

__all__ = [
    "Field", "Headers", "HeadersLike", "MultipleValuesError", "ServerResponse", "SHARED_STRINGS", "header_pairs",
    "headers_from_lines",
]

Field = Tuple[str, str, str]
"""A header line parsed: its name, its value, and the name's lowercase form
(:data:`SHARED_STRINGS`' copy of it when there is one)."""

#: One copy of the strings every WebSocket handshake's head holds: the names
#: (as commonly spelled, and in lowercase, the keys of a Headers' index) and
#: the values that never vary. :class:`Headers` and the parser of
#: :mod:`syncws.http` use these copies, so a server keeps only each
#: connection's own strings with its request and response headers.
SHARED_STRINGS = {
    string: string
    for name in (
        "Host", "Upgrade", "Connection", "Origin", "User-Agent", "Server", "Authorization",
        "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Accept",
        "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions",
        "Cache-Control", "Pragma", "Accept-Encoding", "Accept-Language", "Cookie",
    )
    for string in (name, name.lower())
}
SHARED_STRINGS.update((value, value) for value in ("websocket", "Upgrade", "13"))


class MultipleValuesError(KeyError):
    """A header that appears several times was looked up as a single value.

    It's a :exc:`KeyError`, as :meth:`Headers.__getitem__` raises for a
    missing header, because the caller asked for something that doesn't
    exist: the one value of that header.

    Args:
        name: the header's name.
        count: how many times it appears.
    """

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count
        super().__init__(name)

    def __str__(self) -> str:
        # KeyError's own __str__ would only show repr(name).
        return (
            f"{self.name!r} header appears {self.count} times; "
            f"use get_all() or get_joined()"
        )


class Headers:
    """HTTP headers: a case-insensitive, multi-valued, ordered mapping.

    Every ``(name, value)`` pair is kept in order with the name's original
    case, so a head is written back as it was given. Lookups ignore case.

    Setting a header appends it, as in a head; delete it first to replace
    it. Iterating and :func:`len` see distinct names; :meth:`items` sees
    every pair.

    Args:
        headers: initial headers, as a mapping (including another
            :class:`Headers`) or as ``(name, value)`` pairs.
    """

    def __init__(self, headers: Optional[HeadersLike] = None) -> None:
        # Names and values in turn, [name, value, name, value, ...]: a
        # server keeps the handshake's headers for every connection, and a
        # (name, value) tuple per header would cost a tuple object more each.
        self._items: List[str] = []
        # The values of each lowercase name, in order: lookups are a dict
        # access rather than a scan that lowercases every name. Kept in step
        # with _items by every method that changes it. A name's one value is
        # held as is, only repeated names get a list: a server keeps the
        # handshake's headers for every connection, nearly all single.
        self._values: Dict[str, Union[str, List[str]]] = {}
        if headers is not None:
            self.update(headers)

    def __getitem__(self, name: str) -> str:
        """Return the value of the header ``name``.

        Args:
            name: the header's name, in any case.

        Returns:
            Its value.

        Raises:
            KeyError: if the header is missing.
            MultipleValuesError: if the header appears more than once.
        """
        value = self._values.get(name.lower())
        if value is None:
            raise KeyError(name)
        if isinstance(value, list):
            raise MultipleValuesError(name, len(value))
        return value

    def __setitem__(self, name: str, value: str) -> None:
        """Append a header, keeping any with the same name.

        Args:
            name: the header's name.
            value: its value.
        """
        self._items += (name, value)
        key = name.lower()
        key = SHARED_STRINGS.get(key, key)
        earlier = self._values.get(key)
        if earlier is None:
            self._values[key] = value
        elif isinstance(earlier, list):
            earlier.append(value)
        else:
            self._values[key] = [earlier, value]

    def __delitem__(self, name: str) -> None:
        """Remove every header named ``name``.

        Args:
            name: the header's name, in any case.

        Raises:
            KeyError: if the header is missing.
        """
        key = name.lower()
        if key not in self._values:
            raise KeyError(name)
        del self._values[key]
        kept = [(name, value) for name, value in self._pairs() if name.lower() != key]
        self._items = [part for pair in kept for part in pair]

    def __contains__(self, name: object) -> bool:
        """Tell whether a header named ``name`` is present, ignoring case."""
        if not isinstance(name, str):
            return False
        return name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        """Iterate over distinct names, spelled as they first appear."""
        seen = set()
        for name in self._items[::2]:
            if name.lower() not in seen:
                seen.add(name.lower())
                yield name

    def __len__(self) -> int:
        """Return the number of distinct names."""
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        """Compare as HTTP does (RFC 9110 §5.3).

        Names are compared ignoring case, and the values of each name in
        order; the order between different names doesn't matter.
        """
        if not isinstance(other, Headers):
            return NotImplemented
        return self._values == other._values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.items()!r})"

    def __str__(self) -> str:
        """Return the header block: ``Name: value`` lines and an empty line.

        Nothing is validated; :func:`serialize_request` and
        :func:`serialize_response` do that before writing.
        """
        lines = [f"{name}: {value}\r\n" for name, value in self._pairs()]
        return "".join(lines) + "\r\n"

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """Return the value of the header ``name``, or ``default``.

        Args:
            name: the header's name, in any case.
            default: what to return when the header is missing.

        Returns:
            Its value, or ``default`` if the header is missing.

        Raises:
            MultipleValuesError: if the header appears more than once.
        """
        value = self._values.get(name.lower())
        if value is None:
            return default
        if isinstance(value, list):
            raise MultipleValuesError(name, len(value))
        return value

    def get_all(self, name: str) -> List[str]:
        """Return every value of the header ``name``, in order.

        Args:
            name: the header's name, in any case.

        Returns:
            Its values; an empty list when the header is missing.
        """
        value = self._values.get(name.lower())
        if value is None:
            return []
        return list(value) if isinstance(value, list) else [value]

    def get_joined(self, name: str) -> Optional[str]:
        """Return the values of the header ``name`` as one comma-separated value.

        RFC 9110 §5.3 lets a recipient combine repeated headers this way for
        list-based headers such as ``Connection`` or ``Sec-WebSocket-Protocol``;
        don't use it for ``Set-Cookie``, whose values may hold commas.

        Args:
            name: the header's name, in any case.

        Returns:
            The values joined with ``", "``, or ``None`` if the header is
            missing.
        """
        value = self._values.get(name.lower())
        return ", ".join(value) if isinstance(value, list) else value

    def items(self) -> List[Tuple[str, str]]:
        """Return every ``(name, value)`` pair, in order, names as given.

        Returns:
            A new list of the pairs.
        """
        return list(self._pairs())

    # The name websockets' Headers uses for the same thing.
    raw_items = items

    def _pairs(self) -> Iterator[Tuple[str, str]]:
        """Every ``(name, value)`` pair, in order, made as they are iterated."""
        items = iter(self._items)
        return zip(items, items)

    def update(self, headers: HeadersLike) -> None:
        """Append headers, keeping those already present.

        Args:
            headers: a mapping (including another :class:`Headers`, whose
                every pair is appended) or ``(name, value)`` pairs.
        """
        pairs = headers.items() if hasattr(headers, "items") else headers
        for name, value in pairs:
            self[name] = value

    def copy(self) -> Headers:
        """Return a copy that can change independently of this one.

        Returns:
            The copy.
        """
        return Headers(self._pairs())

    def clear(self) -> None:
        """Remove every header."""
        self._items.clear()
        self._values.clear()


HeadersLike = Union[Headers, Mapping[str, str], Iterable[Tuple[str, str]]]
"""Anything :class:`Headers` and the ``serialize_*`` functions accept."""


def headers_from_lines(
    lines: Iterable[bytes], known: Mapping[bytes, Field], parse: Callable[[bytes], Field]
) -> Headers:
    """Build :class:`Headers` from a head's header lines, in order.

    For :mod:`syncws.http`'s parser, which remembers the lines it parsed:
    a line it knows costs a dict lookup here, with no call.

    Args:
        lines: the header lines.
        known: the fields of lines parsed before, by line.
        parse: parses a line that ``known`` doesn't hold.

    Returns:
        The headers.
    """
    headers = Headers()
    # A name's first value is added here, without a call to __setitem__ and
    # its lowercasing per line; a repeated name goes through __setitem__.
    items, values = headers._items, headers._values
    for line in lines:
        name, value, key = known.get(line) or parse(line)
        if key in values:
            headers[name] = value
        else:
            items += (name, value)
            values[key] = value
    return headers


def header_pairs(headers: Headers) -> Iterator[Tuple[str, str]]:
    """Every ``(name, value)`` pair of ``headers``, in order, made as they are iterated.

    :meth:`Headers.items` copies them into a list first; the serializer of
    :mod:`syncws.http` only reads them once.
    """
    return headers._pairs()


class ServerResponse(NamedTuple):
    """An HTTP response of the server's handshake: 101, or a plain HTTP answer.

    It unpacks like the ``(status, headers, body)`` triple that
    ``process_request`` returns, so either form is accepted where the other
    is.

    Attributes:
        status_code: the HTTP status.
        headers: the response headers (mutable in ``process_response``).
        body: the body; empty for a 101.
    """

    status_code: int
    headers: Headers
    body: bytes

    @property
    def reason(self) -> str:
        """The standard reason phrase of :attr:`status_code` (empty if unknown)."""
        try:
            return http.HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""
