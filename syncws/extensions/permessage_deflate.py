"""The permessage-deflate extension (RFC 7692): negotiation and codec.

Theory of operation
-------------------

Three pieces, each knowing only what it needs:

1. :class:`DeflateSettings` is what a user asks for. ``compression="deflate"``
   on ``connect()`` / ``serve()`` means :data:`CLIENT_DEFAULTS` /
   :data:`SERVER_DEFAULTS`; a ``DeflateSettings`` instance replaces them.
2. The factories negotiate (RFC 7692 §5 and §7.1).
   :class:`ClientDeflateFactory` builds the offer for the request's
   ``Sec-WebSocket-Extensions`` and checks the server's answer: a response
   the client didn't allow is a :exc:`~syncws.exceptions.NegotiationError`,
   which fails the handshake. :class:`ServerDeflateFactory` looks at the
   client's offers in order and accepts the first one it can honour, or
   declines them all by returning ``None``; a server never fails a handshake
   over permessage-deflate (§5: it MUST *decline* an offer that is malformed
   or that it can't accept).
3. :class:`PerMessageDeflate`, one per connection, compresses the payload of
   outgoing frames and decompresses incoming ones (§7.2), keeping the LZ77
   window from message to message unless "no context takeover" was agreed.

The module is pure: no sockets, and no header text either. It works on
``Sec-WebSocket-Extensions`` elements already parsed by
:func:`syncws.handshake.parse_extension_list` - ``(name, params)`` with
``params`` a list of ``(name, value or None)`` - and returns the same shape
for :func:`syncws.handshake.build_extension_list`.

What the protocol layer does with the codec (RFC 7692 §6):

- it compresses a whole message or none of it. When it compresses, it sets
  RSV1 on the first frame only and calls :meth:`PerMessageDeflate.compress`
  for each frame's payload, in order, with ``fin`` on the last one;
- for an incoming message whose first frame has RSV1, it calls
  :meth:`PerMessageDeflate.decompress` for each frame, passing as
  ``max_size`` what is left of ``max_size`` for that message; a frame with
  RSV1 when nothing was negotiated, or RSV1 on a continuation frame, is its
  business (close code 1002), not this module's;
- on :exc:`~syncws.exceptions.PayloadTooBig` (1009) or
  :exc:`~syncws.exceptions.WebSocketProtocolError` (1007, see
  :data:`INVALID_DATA_CLOSE_CODE`) it fails the connection: the codec's
  state is then undefined and it must not be used again.

Memory
------

zlib's state is the cost of compression: per direction and per
connection, a compressor grows with its window and memLevel, a decompressor
with its window (docs/performance.rst#memory-per-connection has the table,
measured with :mod:`tracemalloc`, which sees it: CPython allocates it through
``PyMem_RawMalloc``). The server defaults, 12 bits both ways and memLevel 5,
are the values websockets settled on. A client with the defaults uses the
window the server allows it, and inflates with the server's. A client whose
offer is a bare ``permessage-deflate`` (no ``client_max_window_bits``, so it
can't be limited: OkHttp, Java and Go clients) compresses with 15 bits, and
the server then inflates with a 15-bit window too. Zlib objects are created
on the first compressed message in each direction, so a connection that
never compresses costs nothing. With "no context takeover" a direction
keeps no state between messages - its zlib object is dropped at the end of
each message - at the price of compressing small messages much worse.

Threads
-------

A codec is not locked. :meth:`~PerMessageDeflate.compress` and
:meth:`~PerMessageDeflate.decompress` use disjoint state, so one thread (a
writer, under the connection's write lock) may compress while another (the
reader thread) decompresses; neither may be called from two threads at once.
"""

from __future__ import annotations

import logging
import re
import zlib
from typing import (
    ClassVar,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from ..exceptions import NegotiationError, PayloadTooBig, WebSocketProtocolError

__all__ = [
    "EXTENSION_NAME",
    "DEFAULT_COMPRESS_LEVEL",
    "DEFAULT_MEM_LEVEL",
    "DEFAULT_THRESHOLD",
    "INVALID_DATA_CLOSE_CODE",
    "ExtensionParameter",
    "ExtensionParameters",
    "Compression",
    "DeflateSettings",
    "CLIENT_DEFAULTS",
    "SERVER_DEFAULTS",
    "PerMessageDeflate",
    "ClientDeflateFactory",
    "ServerDeflateFactory",
]

logger = logging.getLogger("syncws.extensions.permessage_deflate")

# One extension parameter, ``(name, value)``, value None when valueless.
# The same shape as syncws.handshake.ExtensionParameter; spelled out here so
# that this module doesn't depend on the handshake module.
ExtensionParameter = Tuple[str, Optional[str]]
ExtensionParameters = List[ExtensionParameter]

EXTENSION_NAME = "permessage-deflate"

#: zlib's own default level: on a stream of JSON messages (flushed one by
#: one, 12-bit window) level 9 compressed no better and level 1 only a
#: little worse (``python bench/compression.py`` compares settings).
DEFAULT_COMPRESS_LEVEL = 6

#: memLevel 5 instead of zlib's 8 makes a compressor much smaller (see
#: docs/performance.rst#memory-per-connection); on the same JSON stream the
#: ratio didn't change.
DEFAULT_MEM_LEVEL = 5

#: Messages shorter than this many bytes are sent uncompressed. Measured on
#: JSON messages with zlib level 6, memLevel 5, 12-bit window (``python
#: bench/compression.py``): below 128 bytes, compression costs CPU on every
#: message; with context takeover it shrinks them well, but without it a
#: 64-byte message barely shrinks and a 16- or 32-byte one grows. Below 128
#: bytes the most there is to gain
#: is a few dozen bytes a message - less than the TCP/IP headers carrying it
#: - so 128 keeps the CPU for messages where compression pays either way.
#: (Node's ws uses 1024; websockets compresses everything.)
DEFAULT_THRESHOLD = 128

#: Close code for compressed data that zlib can't inflate. RFC 7692 names
#: none. 1007 ("invalid frame payload data", RFC 6455 §7.4.1) fits better
#: than 1002 ("protocol error"): the frames themselves are well formed, it is
#: the payload that is inconsistent with the message's type - a message
#: flagged as DEFLATE-compressed that isn't valid DEFLATE, as a text message
#: that isn't valid UTF-8 is 1007. Node's ws sends 1007 too.
INVALID_DATA_CLOSE_CODE = 1007

# RFC 7692 §7.2.1: a sender removes this tail, the end of the empty stored
# block that Z_SYNC_FLUSH emits, and §7.2.2: a receiver appends it back.
_TAIL = b"\x00\x00\xff\xff"

# RFC 7692 §7.2.3.6: the payload of an empty final fragment - the first byte
# of an empty stored block (BFINAL=0, BTYPE=00, padding) whose LEN and NLEN,
# the four bytes above, were removed.
_EMPTY_FINAL_FRAGMENT = b"\x00"

# What may follow a DEFLATE block with BFINAL set (RFC 7692 §7.2.3.4) in a
# message, once the receiver has appended _TAIL: nothing, or the first byte
# of the empty stored block that a sender following §7.2.1 to the letter
# appends after it.
_AFTER_FINAL_BLOCK = (_TAIL, _EMPTY_FINAL_FRAGMENT + _TAIL)

_NO_CONTEXT_TAKEOVER = ("server_no_context_takeover", "client_no_context_takeover")
_MAX_WINDOW_BITS = ("server_max_window_bits", "client_max_window_bits")

# RFC 7692 §7.1.2.1 and §7.1.2.2: "a decimal integer value without leading
# zeroes between 8 to 15, inclusive". Spelled with explicit digits because
# str.isdigit() and int() accept other scripts' digits, signs and spaces.
_WINDOW_BITS_RE = re.compile(r"[89]|1[0-5]")

# zlib's largest window, used when a window size wasn't negotiated.
_MAX_WBITS = 15


# The ranges of the integer settings, checked by _check_ranges(): window
# bits per RFC 7692 §7.1.2, the others per zlib's deflateInit2().
_RANGES = {
    "server_max_window_bits": (8, 15),
    "client_max_window_bits": (8, 15),
    "compress_level": (-1, 9),
    "mem_level": (1, 9),
    "threshold": (0, None),
}


def _check_ranges(**values: Optional[int]) -> None:
    """Check integer settings given in Python (not values from the peer).

    Window bits may be None; the others may not.

    Raises:
        TypeError: a value isn't an int (bool excluded).
        ValueError: a value is outside its range in _RANGES.
    """
    for name, value in values.items():
        if value is None and name in _MAX_WINDOW_BITS:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        low, high = _RANGES[name]
        if high is None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise ValueError(f"{name} must be from {low} to {high}, got {value}")


def _too_big(max_size: int) -> PayloadTooBig:
    """The error for a message that inflates past what the caller allows."""
    return PayloadTooBig(
        f"compressed message exceeds the size limit: more than {max_size} "
        f"bytes after decompression"
    )


def _min_given(*values: Optional[int]) -> Optional[int]:
    """The smallest of the values that aren't None; None if all are."""
    given = [value for value in values if value is not None]
    return min(given) if given else None


class _DeflateFields(NamedTuple):
    # The fields of DeflateSettings; their defaults are its __new__'s.
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: Optional[int]
    client_max_window_bits: Optional[int]
    compress_level: int
    mem_level: int
    threshold: int


class DeflateSettings(_DeflateFields):
    """The permessage-deflate configuration a user chooses.

    The same settings read differently on each side; the attributes below say
    how. Window bits are the base-2 logarithm of the LZ77 window (8 to 15:
    256 bytes to 32 KiB); ``None`` means no limit (15).

    Attributes:
        server_no_context_takeover: client: ask the server to compress each
            message with an empty window (and fail if it refuses); server:
            always compress each message with an empty window.
        client_no_context_takeover: client: compress each message with an
            empty window, and tell the server; server: require the client
            to do so.
        server_max_window_bits: client: ask the server to compress with at
            most this window (and fail if it refuses); server: compress with
            at most this window.
        client_max_window_bits: client: compress with at most this window,
            and tell the server (the client always offers
            ``client_max_window_bits``, valueless when this is ``None``, so
            that the server may limit it); server: require the client to
            compress with at most this window when its offer allows a limit
            (carries ``client_max_window_bits``); a bare offer, which can't
            be limited, is accepted with the 15-bit window RFC 7692 then
            implies.
        compress_level: zlib compression level, 0-9, or -1 for zlib's
            default.
        mem_level: zlib memLevel, 1-9: the memory of the compressor's hash
            table and buffers, ``1 << (mem_level + 9)`` bytes.
        threshold: messages shorter than this many bytes are sent
            uncompressed (the protocol layer applies it; see
            :data:`DEFAULT_THRESHOLD`).

    Raises:
        ValueError: a value is out of range.
        TypeError: a value has the wrong type.
    """

    # A named tuple, checked when made (not a dataclass, whose import would
    # cost every server process a megabyte of memory).
    __slots__ = ()

    def __new__(
        cls,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: Optional[int] = None,
        client_max_window_bits: Optional[int] = None,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
        mem_level: int = DEFAULT_MEM_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> "DeflateSettings":
        for name, value in zip(_NO_CONTEXT_TAKEOVER, (server_no_context_takeover, client_no_context_takeover)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        _check_ranges(
            server_max_window_bits=server_max_window_bits,
            client_max_window_bits=client_max_window_bits,
            compress_level=compress_level,
            mem_level=mem_level,
            threshold=threshold,
        )
        return super().__new__(
            cls, server_no_context_takeover, client_no_context_takeover, server_max_window_bits,
            client_max_window_bits, compress_level, mem_level, threshold,
        )


#: What ``compression="deflate"`` means on the client: offer
#: ``client_max_window_bits`` (valueless) and nothing else, as browsers do,
#: so that any server can accept the offer and limit the client's window.
CLIENT_DEFAULTS = DeflateSettings()

#: What ``compression="deflate"`` means on the server: 12-bit windows both
#: ways, memLevel 5 (its memory per connection:
#: docs/performance.rst#memory-per-connection). Clients that can't be
#: limited (a bare ``permessage-deflate`` offer, no
#: ``client_max_window_bits``: OkHttp, many Java and Go clients) compress
#: with a 15-bit window, so the server inflates with 15 bits for those.
SERVER_DEFAULTS = DeflateSettings(server_max_window_bits=12, client_max_window_bits=12)

#: What ``connect()`` and ``serve()`` accept as ``compression``.
Compression = Union[str, DeflateSettings, None]


class _Params(NamedTuple):
    """The permessage-deflate parameters of one offer or response."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: Optional[int]
    client_max_window_bits: Optional[int]
    # Whether client_max_window_bits was there at all: in an offer it may be
    # valueless, meaning "the server may limit my window".
    client_max_window_bits_given: bool


def _parse_params(params: Sequence[ExtensionParameter], where: str) -> _Params:
    """Validate the parameters of an offer or response (RFC 7692 §7.1).

    Args:
        params: the parameters, as parsed from the header.
        where: ``"offer"`` or ``"response"``: only an offer may carry a
            valueless ``client_max_window_bits``.

    Returns:
        The parameters.

    Raises:
        NegotiationError: a parameter is unknown, repeated, or has an invalid
            value (RFC 7692 §5).
    """
    seen = set()
    flags = {name: False for name in _NO_CONTEXT_TAKEOVER}
    bits: Dict[str, Optional[int]] = {name: None for name in _MAX_WINDOW_BITS}
    for name, value in params:
        # Parameter names are compared exactly: RFC 7692 spells them in
        # lower case and RFC 6455 §9.1 doesn't make them case-insensitive.
        if name in seen:
            raise NegotiationError(
                f"{EXTENSION_NAME} {where}: duplicate parameter {name}"
            )
        seen.add(name)
        if name in flags:
            if value is not None:
                raise NegotiationError(
                    f"{EXTENSION_NAME} {where}: {name} takes no value, got {value!r}"
                )
            flags[name] = True
        elif name in bits:
            if value is None:
                if name == "client_max_window_bits" and where == "offer":
                    continue  # valueless: "the server may limit my window"
                raise NegotiationError(
                    f"{EXTENSION_NAME} {where}: {name} needs a value from 8 to 15"
                )
            if not _WINDOW_BITS_RE.fullmatch(value):
                raise NegotiationError(
                    f"{EXTENSION_NAME} {where}: invalid {name} value {value!r}, "
                    f"expected an integer from 8 to 15 without sign or leading zero"
                )
            bits[name] = int(value)
        else:
            raise NegotiationError(
                f"{EXTENSION_NAME} {where}: unknown parameter {name}"
            )
    return _Params(
        server_no_context_takeover=flags["server_no_context_takeover"],
        client_no_context_takeover=flags["client_no_context_takeover"],
        server_max_window_bits=bits["server_max_window_bits"],
        client_max_window_bits=bits["client_max_window_bits"],
        client_max_window_bits_given="client_max_window_bits" in seen,
    )


class PerMessageDeflate:
    """One connection's permessage-deflate codec (RFC 7692 §7.2).

    Built by the factories from the agreed parameters; a test or an
    application that negotiated by other means may build one directly. The
    four parameters are named as on the wire ("server", "client");
    ``is_client`` says which side this codec is on, and the ``local_*`` /
    ``remote_*`` properties give the same values from this side's view.

    Args:
        is_client: whether this codec is the client's.
        server_no_context_takeover: the server compresses each message with
            an empty window.
        client_no_context_takeover: the client compresses each message with
            an empty window.
        server_max_window_bits: the server's window limit, ``None`` for 15.
        client_max_window_bits: the client's window limit, ``None`` for 15.
        compress_level: zlib level for this side's compressor.
        mem_level: zlib memLevel for this side's compressor.
        threshold: the size under which the protocol layer should not
            compress a message (this codec doesn't apply it).

    Raises:
        ValueError: a window size, level, memLevel or threshold is out of range.
        TypeError: one of them isn't an int.
    """

    name: ClassVar[str] = EXTENSION_NAME

    def __init__(
        self,
        *,
        is_client: bool,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: Optional[int] = None,
        client_max_window_bits: Optional[int] = None,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
        mem_level: int = DEFAULT_MEM_LEVEL,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        _check_ranges(
            server_max_window_bits=server_max_window_bits,
            client_max_window_bits=client_max_window_bits,
            compress_level=compress_level,
            mem_level=mem_level,
            threshold=threshold,
        )
        self.is_client = is_client
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.compress_level = compress_level
        self.mem_level = mem_level
        self.threshold = threshold

        # zlib objects, created on first use and dropped after each message
        # when its direction has no context takeover (see "Memory" above).
        # _compressor belongs to compress() (writers, under the connection's
        # write lock) and _decompressor to decompress() (the reader thread).
        self._compressor: Optional["zlib._Compress"] = None
        self._decompressor: Optional["zlib._Decompress"] = None

    # The agreed parameters from this side's point of view.

    @property
    def local_no_context_takeover(self) -> bool:
        """Whether this side compresses each message with an empty window."""
        if self.is_client:
            return self.client_no_context_takeover
        return self.server_no_context_takeover

    @property
    def remote_no_context_takeover(self) -> bool:
        """Whether the peer compresses each message with an empty window."""
        if self.is_client:
            return self.server_no_context_takeover
        return self.client_no_context_takeover

    @property
    def local_max_window_bits(self) -> int:
        """The window this side may compress with (8 to 15)."""
        bits = (
            self.client_max_window_bits
            if self.is_client
            else self.server_max_window_bits
        )
        return _MAX_WBITS if bits is None else bits

    @property
    def remote_max_window_bits(self) -> int:
        """The window the peer may compress with, hence ours to inflate (8 to 15)."""
        bits = (
            self.server_max_window_bits
            if self.is_client
            else self.client_max_window_bits
        )
        return _MAX_WBITS if bits is None else bits

    @property
    def params(self) -> ExtensionParameters:
        """The agreed parameters, as a server's response spells them.

        Returns:
            ``(name, value or None)`` pairs, in the order of RFC 7692 §7.1.
        """
        params: ExtensionParameters = []
        for name in _NO_CONTEXT_TAKEOVER:
            if getattr(self, name):
                params.append((name, None))
        for name in _MAX_WINDOW_BITS:
            value = getattr(self, name)
            if value is not None:
                params.append((name, str(value)))
        return params

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        params = "; ".join(
            name if value is None else f"{name}={value}" for name, value in self.params
        )
        return (
            f"<PerMessageDeflate {side} [{params or 'no parameters'}] "
            f"level={self.compress_level} mem_level={self.mem_level} "
            f"threshold={self.threshold}>"
        )

    def compress(self, data: Union[bytes, bytearray, memoryview], fin: bool) -> bytes:
        """Compress the payload of one frame of an outgoing message.

        Call it for every frame of a compressed message, in order; the caller
        sets RSV1 on the first frame only. Each frame is flushed (Z_SYNC_FLUSH)
        so that the peer can inflate it on arrival, which matters for
        messages streamed in fragments.

        Args:
            data: the frame's uncompressed payload; may be empty.
            fin: whether this is the message's last frame.

        Returns:
            The frame's payload. For the last frame, the ``00 00 ff ff`` of
            the final flush is removed (RFC 7692 §7.2.1), and an empty last
            frame gives the single byte ``00`` (§7.2.3.6).
        """
        compressor = self._compressor
        if compressor is None:
            # zlib (since 1.2.9) refuses a 256-byte window for raw deflate
            # (madler/zlib#171), so a window of 8 bits compresses with 9.
            # That still honours the peer's 256-byte window: zlib's deflate
            # never emits a distance beyond the window size minus 262 bytes
            # (MAX_DIST = w_size - MIN_LOOKAHEAD), i.e. 250 bytes for 9 bits.
            # test_window_8_output_fits_a_256_byte_window checks it.
            wbits = max(9, self.local_max_window_bits)
            compressor = self._compressor = zlib.compressobj(
                self.compress_level, zlib.DEFLATED, -wbits, self.mem_level
            )
        payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            if payload.endswith(_TAIL):
                payload = payload[:-4]
            elif not payload:
                # zlib emits nothing when there's no input and nothing
                # pending since the last flush (some versions do so even on
                # a sync flush). The stream then sits on a byte boundary,
                # where the message still needs the start of the empty
                # stored block that ends it.
                payload = _EMPTY_FINAL_FRAGMENT
            else:  # pragma: no cover - zlib guarantees the sync-flush tail
                raise AssertionError(f"zlib sync flush ended with {payload[-4:].hex()}")
            if self.local_no_context_takeover:
                # The next message starts with an empty window; dropping the
                # compressor also frees its memory while the connection idles.
                self._compressor = None
        return payload

    def decompress(
        self,
        data: Union[bytes, bytearray, memoryview],
        fin: bool,
        max_size: Optional[int] = None,
    ) -> bytes:
        """Decompress the payload of one frame of an incoming compressed message.

        Call it for every frame of a message whose first frame had RSV1, in
        order. The output is bounded while inflating: zlib never produces more
        than ``max_size + 1`` bytes, so a small frame that would inflate to
        gigabytes (a decompression bomb) costs about ``max_size`` of memory
        before :exc:`PayloadTooBig` stops it.

        Args:
            data: the frame's payload.
            fin: whether this is the message's last frame.
            max_size: how many decompressed bytes this message may still
                grow by (the caller's ``max_size`` minus what it already
                holds of the message); ``None`` for no limit.

        Returns:
            The decompressed bytes of this frame.

        Raises:
            PayloadTooBig: the frame inflates to more than ``max_size`` bytes.
            WebSocketProtocolError: ``data`` isn't valid DEFLATE data, or
                follows the end of a final DEFLATE block (close code 1007).
            ValueError: ``max_size`` is negative.

        After either error the codec's state is undefined: the caller fails
        the connection and doesn't use it again.
        """
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(
                -self.remote_max_window_bits
            )

        # zlib takes max_length=0 as "no limit"; asking for one byte more
        # than allowed tells "too big" from "exactly at the limit". Once the
        # limit is hit, zlib keeps the input it didn't consume in
        # unconsumed_tail instead of inflating it.
        limit = 0 if max_size is None else max_size + 1
        try:
            payload = decompressor.decompress(data, limit)
            if max_size is not None and len(payload) > max_size:
                raise _too_big(max_size)
            if fin:
                # Append the tail removed by the sender (RFC 7692 §7.2.2) in
                # a second call rather than concatenating it to data, which
                # would copy a payload of up to max_size bytes.
                limit = 0 if max_size is None else max_size + 1 - len(payload)
                more = decompressor.decompress(_TAIL, limit)
                if more:
                    payload += more
                    if max_size is not None and len(payload) > max_size:
                        raise _too_big(max_size)
        except zlib.error as exc:
            raise WebSocketProtocolError(
                f"invalid compressed data: {exc}", code=INVALID_DATA_CLOSE_CODE
            ) from exc

        if fin:
            if decompressor.eof:
                # The peer ended the message with a BFINAL block (RFC 7692
                # §7.2.3.4). That ends the zlib stream: whatever followed
                # went to unused_data, and the next message needs a new
                # decompressor, which starts with an empty window. A peer
                # that still refers to the old window then gets a clean
                # "invalid distance too far back" (1007), never wrong data.
                if decompressor.unused_data not in _AFTER_FINAL_BLOCK:
                    raise WebSocketProtocolError(
                        "invalid compressed data: data after the final DEFLATE block",
                        code=INVALID_DATA_CLOSE_CODE,
                    )
                self._decompressor = None
            elif self.remote_no_context_takeover:
                # The peer starts every message with an empty window, so the
                # window needn't be kept (and its memory needn't be held).
                self._decompressor = None
        return payload


_F = TypeVar("_F", bound="_DeflateFactory")


class _DeflateFactory:
    """What the client and server factories share: their settings."""

    name: ClassVar[str] = EXTENSION_NAME
    _defaults: ClassVar[DeflateSettings]

    def __init__(self, settings: Optional[DeflateSettings] = None) -> None:
        if settings is None:
            settings = self._defaults
        elif not isinstance(settings, DeflateSettings):
            raise TypeError(f"settings must be a DeflateSettings, got {settings!r}")
        self.settings = settings

    @classmethod
    def from_compression(cls: Type[_F], compression: Compression) -> Optional[_F]:
        """Make a factory from the ``compression`` argument of connect() / serve().

        Args:
            compression: ``"deflate"`` for the default settings, a
                :class:`DeflateSettings`, or ``None`` to disable compression.

        Returns:
            A factory of this class, or ``None`` when ``compression`` is
            ``None``.

        Raises:
            ValueError: ``compression`` is a string other than ``"deflate"``.
            TypeError: ``compression`` has another type.
        """
        if compression is None:
            return None
        if isinstance(compression, DeflateSettings):
            return cls(compression)
        if isinstance(compression, str):
            if compression == "deflate":
                return cls()
            raise ValueError(
                f'unsupported compression {compression!r}, expected "deflate" or None'
            )
        raise TypeError(
            f'compression must be "deflate", a DeflateSettings or None, '
            f"got {compression!r}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"


class ClientDeflateFactory(_DeflateFactory):
    """The client's side of permessage-deflate negotiation (RFC 7692 §7.1).

    Args:
        settings: the client's settings; ``None`` for :data:`CLIENT_DEFAULTS`.

    Raises:
        TypeError: ``settings`` isn't a :class:`DeflateSettings`.
    """

    _defaults = CLIENT_DEFAULTS

    def offer(self) -> Tuple[str, ExtensionParameters]:
        """The extension element to put in the request's ``Sec-WebSocket-Extensions``.

        Returns:
            ``("permessage-deflate", params)``. ``client_max_window_bits`` is
            always offered - with the configured value, or valueless - so
            that the server may limit the client's window (RFC 7692 §7.1.2.2);
            servers that want small windows decline clients that don't.
        """
        settings = self.settings
        params: ExtensionParameters = []
        for name in _NO_CONTEXT_TAKEOVER:
            if getattr(settings, name):
                params.append((name, None))
        if settings.server_max_window_bits is not None:
            params.append(
                ("server_max_window_bits", str(settings.server_max_window_bits))
            )
        if settings.client_max_window_bits is None:
            params.append(("client_max_window_bits", None))
        else:
            params.append(
                ("client_max_window_bits", str(settings.client_max_window_bits))
            )
        return EXTENSION_NAME, params

    def accept(self, params: Sequence[ExtensionParameter]) -> PerMessageDeflate:
        """Check the server's response to :meth:`offer` and make the codec.

        Args:
            params: the parameters of the ``permessage-deflate`` element of
                the response's ``Sec-WebSocket-Extensions``.

        Returns:
            The connection's codec.

        Raises:
            NegotiationError: the response is malformed or doesn't honour the
                offer; RFC 7692 §5 requires the client to fail the connection.
        """
        response = _parse_params(params, "response")
        settings = self.settings
        # Each requirement of the offer must come back accepted: a server
        # that can't honour one must decline the whole offer (RFC 7692
        # §7.1.1.1, §7.1.2.1), not answer without it.
        if (
            settings.server_no_context_takeover
            and not response.server_no_context_takeover
        ):
            raise NegotiationError(
                f"{EXTENSION_NAME} response: the server didn't accept "
                f"server_no_context_takeover, which the client requested"
            )
        requested = settings.server_max_window_bits
        if requested is not None:
            if response.server_max_window_bits is None:
                raise NegotiationError(
                    f"{EXTENSION_NAME} response: the server didn't accept "
                    f"server_max_window_bits={requested}, which the client requested"
                )
            if response.server_max_window_bits > requested:
                raise NegotiationError(
                    f"{EXTENSION_NAME} response: server_max_window_bits="
                    f"{response.server_max_window_bits} is larger than the "
                    f"{requested} the client requested"
                )
        # A server may add server_no_context_takeover, server_max_window_bits
        # and client_no_context_takeover unasked (§7.1.1.1, §7.1.1.2,
        # §7.1.2.1). client_max_window_bits it may only send because offer()
        # always offers it (§7.1.2.2); when the offer had a value, that value
        # is a promise the client keeps even if the server answers with a
        # larger one, hence the minimum.
        return PerMessageDeflate(
            is_client=True,
            server_no_context_takeover=response.server_no_context_takeover,
            # The client's own choice holds whether or not the server echoed it.
            client_no_context_takeover=(
                response.client_no_context_takeover
                or settings.client_no_context_takeover
            ),
            server_max_window_bits=response.server_max_window_bits,
            client_max_window_bits=_min_given(
                response.client_max_window_bits, settings.client_max_window_bits
            ),
            compress_level=settings.compress_level,
            mem_level=settings.mem_level,
            threshold=settings.threshold,
        )


class ServerDeflateFactory(_DeflateFactory):
    """The server's side of permessage-deflate negotiation (RFC 7692 §7.1).

    Args:
        settings: the server's settings; ``None`` for :data:`SERVER_DEFAULTS`.

    Raises:
        TypeError: ``settings`` isn't a :class:`DeflateSettings`.
    """

    _defaults = SERVER_DEFAULTS

    def accept(
        self, offers: Sequence[Sequence[ExtensionParameter]]
    ) -> Optional[Tuple[ExtensionParameters, PerMessageDeflate]]:
        """Accept the first acceptable permessage-deflate offer of a client.

        Offers that are malformed (a duplicate or unknown parameter, an
        invalid value) or that these settings can't honour are declined, as
        RFC 7692 §5 requires, and the next one is tried; the reason is logged
        at DEBUG level. Nothing here fails the handshake: the worst outcome is
        a connection without compression.

        Args:
            offers: the parameters of every ``permessage-deflate`` element of
                the request's ``Sec-WebSocket-Extensions``, in order.

        Returns:
            The response's parameters and the connection's codec, or ``None``
            when every offer is declined.
        """
        for index, params in enumerate(offers, 1):
            try:
                codec = self._accept_offer(params)
            except NegotiationError as exc:
                logger.debug(
                    "declined %s offer %d %r: %s", EXTENSION_NAME, index, params, exc
                )
                continue
            return codec.params, codec
        return None

    def _accept_offer(self, params: Sequence[ExtensionParameter]) -> PerMessageDeflate:
        """Build the codec for one offer, or raise NegotiationError to decline it."""
        offer = _parse_params(params, "offer")
        settings = self.settings
        if offer.client_max_window_bits_given:
            # Valueless: the server picks. With a value: the client will use
            # at most that window anyway, and the response may say so.
            client_max_window_bits = _min_given(
                offer.client_max_window_bits, settings.client_max_window_bits
            )
        else:
            # A bare offer, as OkHttp and Java and Go clients send: the
            # response may not carry client_max_window_bits (§7.1.2.2), so
            # the client compresses with a 15-bit window (implied) and this
            # server inflates with one, larger than a 12-bit one
            # (docs/performance.rst#memory-per-connection). Declining
            # would cost more: those clients would run uncompressed.
            client_max_window_bits = None
        return PerMessageDeflate(
            is_client=False,
            # Granted when the client asks (the server supports it) or when
            # the settings want it (a server may add it unasked, §7.1.1.1).
            server_no_context_takeover=(
                offer.server_no_context_takeover or settings.server_no_context_takeover
            ),
            # Echoing the client's hint lets this server drop its
            # decompressor between messages.
            client_no_context_takeover=(
                offer.client_no_context_takeover or settings.client_no_context_takeover
            ),
            # The smaller of the client's request and the setting; the
            # response may carry it unasked (§7.1.2.1). Any value from 8 to
            # 15 can be honoured: see PerMessageDeflate.compress for 8.
            server_max_window_bits=_min_given(
                offer.server_max_window_bits, settings.server_max_window_bits
            ),
            client_max_window_bits=client_max_window_bits,
            compress_level=settings.compress_level,
            mem_level=settings.mem_level,
            threshold=settings.threshold,
        )
