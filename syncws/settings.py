"""The settings a connection shares on both sides, checked once.

:func:`connect` and :func:`serve` pass their keyword arguments through
:func:`check_settings` before any socket is opened, so a bad value fails at
the call, with the parameter's name and the value, rather than later in a
connection's reader thread. The result, :class:`ConnectionSettings`, holds
the values normalized: the two forms of ``max_size`` and ``max_queue`` (one
number, or a pair) become pairs, and ``timeout`` is resolved into
``open_timeout`` and ``close_timeout``.

The settings
------------

``max_size``
    The largest incoming message, in bytes, after decompression: an ``int``
    (the same limit for a message and for each of its frames), ``None`` (no
    limit), or a pair ``(message, fragment)`` whose members are each an
    ``int`` or ``None``; a fragment limit larger than the message limit means
    nothing and is refused. A peer that goes over it gets close code 1009.
``max_queue``
    How many received messages (and fragments of fragmented messages: a
    message in one frame counts one) may wait for ``recv()`` before the
    reader stops reading the socket (TCP then pushes back on the peer): an
    ``int`` (the high-water mark; reading resumes at a quarter of it, as in
    websockets), ``None`` (no limit: memory is then bounded by nothing), or a
    pair ``(high, low)``: stop at ``high``, resume at ``low``.
``timeout``
    Seconds for the opening and the closing handshakes (seed name);
    ``open_timeout`` and ``close_timeout`` override it. ``None`` waits
    forever. Every timeout is a number >= 0 or ``None``.
``open_timeout``
    Seconds for TCP, TLS and the opening handshake.
``close_timeout``
    Seconds for the closing handshake.
``write_timeout``
    Seconds a send may stall before the connection is aborted.
``read_limit``
    The most bytes asked of the socket per read: a positive ``int``
    (reads start smaller, see :data:`syncws.headreader.SMALL_READ`).
``write_limit``
    Payloads up to this many bytes go out with their frame header in one
    system call: a positive ``int``.
``ping_interval``
    Seconds between keepalive pings, ``> 0``; ``None`` disables keepalive.
    A ping is skipped when a message came from the peer since the last
    look: a peer that sends is alive.
``ping_timeout``
    Seconds to wait for a keepalive pong before closing with 1011, ``> 0``;
    ``None`` waits forever.
``compression``
    ``"deflate"`` (permessage-deflate with the side's defaults), a
    :class:`~syncws.extensions.permessage_deflate.DeflateSettings`, or
    ``None`` (no compression).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, Iterator, NamedTuple, Optional, Tuple, Union

from .extensions.permessage_deflate import ClientDeflateFactory, Compression

__all__ = ["ConnectionSettings", "check_seconds", "check_settings", "SizeLimits", "SizeSetting"]

#: The pair forms of ``max_size`` and ``max_queue``, normalized.
SizeLimits = Tuple[Optional[int], Optional[int]]

#: What ``max_size`` and ``max_queue`` accept: one number, ``None`` or a pair.
SizeSetting = Union[int, None, Tuple[Optional[int], Optional[int]]]


class ConnectionSettings(NamedTuple):
    """The connection settings of :func:`connect` / :func:`serve`, checked and normalized.

    Immutable: a named tuple (not a dataclass, whose import would cost a
    server process a megabyte of memory for this one class).

    Attributes:
        max_size: ``(message, fragment)`` limits in bytes, ``None`` for no
            limit; ``max_size=N`` gives ``(N, N)``.
        max_queue: ``(high, low)`` in messages, ``None`` for no limit;
            ``max_queue=N`` gives ``(N, N // 4)``.
        open_timeout: seconds for the opening handshake, or ``None``.
        close_timeout: seconds for the closing handshake, or ``None``.
        write_timeout: seconds a send may stall, or ``None``.
        read_limit: bytes asked of the socket per read.
        write_limit: payloads sent with their header in one system call.
        ping_interval: seconds between keepalive pings, or ``None``.
        ping_timeout: seconds to wait for a pong, or ``None``.
        compression: ``"deflate"``, a ``DeflateSettings`` or ``None``, as given.
    """

    max_size: SizeLimits
    max_queue: SizeLimits
    open_timeout: Optional[float]
    close_timeout: Optional[float]
    write_timeout: Optional[float]
    read_limit: int
    write_limit: int
    ping_interval: Optional[float]
    ping_timeout: Optional[float]
    compression: Compression

    @property
    def max_message_size(self) -> Optional[int]:
        """The message limit of :attr:`max_size`."""
        return self.max_size[0]

    @property
    def max_fragment_size(self) -> Optional[int]:
        """The fragment (frame) limit of :attr:`max_size`."""
        return self.max_size[1]

    @property
    def max_queue_high(self) -> Optional[int]:
        """The high-water mark of :attr:`max_queue`."""
        return self.max_queue[0]

    @property
    def max_queue_low(self) -> Optional[int]:
        """The low-water mark of :attr:`max_queue`."""
        return self.max_queue[1]


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but max_size=True is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: Any, *, nullable: bool) -> Optional[int]:
    """Check a count or a size: an int >= 1 (or None when ``nullable``)."""
    if value is None and nullable:
        return None
    if not _is_int(value):
        allowed = "an int or None" if nullable else "an int"
        raise TypeError(f"{name} must be {allowed}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")
    return int(value)


def check_seconds(name: str, value: Any, *, allow_zero: bool = True) -> Optional[float]:
    """Check a duration: a number >= 0 (> 0 unless ``allow_zero``), or ``None``.

    Args:
        name: the setting, named in the error.
        value: its value.
        allow_zero: whether 0 is allowed.

    Returns:
        The duration as a float; ``None`` for ``None`` or infinity (no limit).

    Raises:
        TypeError: ``value`` isn't a number or ``None``.
        ValueError: ``value`` is NaN, negative, or 0 when not allowed.
    """
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds or None, got {value!r}")
    return float(value) if not math.isinf(value) else None


def _pair(name: str, value: Any, first: str, second: str) -> Tuple[Any, Any]:
    """Unpack a ``(first, second)`` tuple or list, naming the parameter if it isn't one."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be an int, None or a ({first}, {second}) pair, got {value!r}")
    return value[0], value[1]


@contextlib.contextmanager
def _naming(name: str, value: Any) -> Iterator[None]:
    """Put ``name=value`` in front of the message of an error about a part of it."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}={value!r}: {exc}") from None


def _max_size(value: Any) -> SizeLimits:
    if value is None or _is_int(value):
        limit = _positive_int("max_size", value, nullable=True)
        return limit, limit
    message, fragment = _pair("max_size", value, "message", "fragment")
    with _naming("max_size", value):
        message = _positive_int("the message limit", message, nullable=True)
        fragment = _positive_int("the fragment limit", fragment, nullable=True)
    if message is not None and fragment is not None and fragment > message:
        raise ValueError(
            f"max_size={value!r}: the fragment limit can't exceed the message limit"
        )
    return message, fragment


def _max_queue(value: Any) -> SizeLimits:
    if value is None:
        return None, None
    if _is_int(value):
        high = _positive_int("max_queue", value, nullable=False)
        assert high is not None
        return high, high // 4
    high, low = _pair("max_queue", value, "high", "low")
    with _naming("max_queue", value):
        high = _positive_int("the high-water mark", high, nullable=True)
    if high is None:
        if low is not None:
            raise ValueError(f"max_queue={value!r}: a low-water mark needs a high-water mark")
        return None, None
    if low is None:
        return high, high // 4
    if not _is_int(low):
        raise TypeError(f"max_queue={value!r}: the low-water mark must be an int or None, got {low!r}")
    if not 0 <= low <= high:
        raise ValueError(f"max_queue={value!r}: the low-water mark must be between 0 and the high-water mark")
    return high, int(low)


def check_settings(
    *,
    max_size: Any = 2**20,
    max_queue: Any = 2**5,
    timeout: Any = 10,
    open_timeout: Any = None,
    close_timeout: Any = None,
    write_timeout: Any = 60,
    read_limit: Any = 2**16,
    write_limit: Any = 2**16,
    ping_interval: Any = 20,
    ping_timeout: Any = 20,
    compression: Any = "deflate",
) -> ConnectionSettings:
    """Check the shared connection settings and normalize them.

    Called by :func:`~syncws.connect` and :func:`~syncws.serve` before any
    socket is opened. The module's docstring describes each setting.

    Args:
        max_size: an int, ``None`` or ``(message, fragment)``.
        max_queue: an int, ``None`` or ``(high, low)``.
        timeout: seconds, the default of ``open_timeout`` and ``close_timeout``.
        open_timeout: seconds for the opening handshake; ``None``: ``timeout``.
        close_timeout: seconds for the closing handshake; ``None``: ``timeout``.
        write_timeout: seconds a send may stall.
        read_limit: bytes per socket read, a positive int.
        write_limit: the one-system-call payload limit, a positive int.
        ping_interval: seconds between pings (> 0), or ``None``.
        ping_timeout: seconds to wait for a pong (> 0), or ``None``.
        compression: ``"deflate"``, a ``DeflateSettings`` or ``None``.

    Returns:
        The normalized settings.

    Raises:
        TypeError: a setting has the wrong type (the message names it and
            the value).
        ValueError: a setting is out of range (the message names it and the
            value).
    """
    # A client that connects again and again passes the same settings: the
    # answer is kept, for settings of plain types (exact types, in the key
    # too: True isn't 1 here, nor 1.0).
    args = (max_size, max_queue, timeout, open_timeout, close_timeout, write_timeout,
            read_limit, write_limit, ping_interval, ping_timeout, compression)
    types = tuple(map(type, args))
    key = args + types if _CACHEABLE.issuperset(types) else None
    if key is not None:
        cached = _checked.get(key)
        if cached is not None:
            return cached
    settings = _check_settings(*args)
    if key is not None:
        if len(_checked) >= _CHECKED_MAX:
            _checked.clear()
        _checked[key] = settings
    return settings


# Settings already checked, by their arguments and the arguments' types.
_checked: Dict[Tuple[Any, ...], ConnectionSettings] = {}
_CHECKED_MAX = 64
_CACHEABLE = frozenset({int, float, str, type(None)})


def _check_settings(
    max_size: Any, max_queue: Any, timeout: Any, open_timeout: Any, close_timeout: Any, write_timeout: Any,
    read_limit: Any, write_limit: Any, ping_interval: Any, ping_timeout: Any, compression: Any,
) -> ConnectionSettings:
    """check_settings() without the cache."""
    timeout_ = check_seconds("timeout", timeout)
    open_ = check_seconds("open_timeout", open_timeout)
    close_ = check_seconds("close_timeout", close_timeout)
    read_limit_ = _positive_int("read_limit", read_limit, nullable=False)
    write_limit_ = _positive_int("write_limit", write_limit, nullable=False)
    assert read_limit_ is not None and write_limit_ is not None
    # Both factories accept the same values: checking with one checks both.
    ClientDeflateFactory.from_compression(compression)
    return ConnectionSettings(
        max_size=_max_size(max_size),
        max_queue=_max_queue(max_queue),
        open_timeout=open_ if open_timeout is not None else timeout_,
        close_timeout=close_ if close_timeout is not None else timeout_,
        write_timeout=check_seconds("write_timeout", write_timeout),
        read_limit=read_limit_,
        write_limit=write_limit_,
        ping_interval=check_seconds("ping_interval", ping_interval, allow_zero=False),
        ping_timeout=check_seconds("ping_timeout", ping_timeout, allow_zero=False),
        compression=compression,
    )
