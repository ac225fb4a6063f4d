"""WebSocket frames (RFC 6455 §5): the frame, its rules, and the one serializer.

This module is pure and never touches a socket. It holds:

* the vocabulary: :class:`Opcode`, :class:`CloseCode`, :class:`Frame` and the
  close payload (:func:`parse_close`, :func:`serialize_close`);
* the rules of a frame header (:func:`check_header`), which every parser
  applies;
* the one serializer: every frame syncws sends is written by
  :func:`encode_frame` or :func:`encode_frame_bytes`, which check the frame,
  or, on the connection's path for a whole small message, by
  :func:`pack_frame`, which they call too (:func:`frame_header` writes the
  header of a frame whose payload goes out apart);
* a reference parser, :func:`read_frame`, which reads one frame at a time
  from a ``read_exact(n)`` callable and checks every rule of §5: test peers,
  tools and the benchmarks' raw clients use it. A live connection doesn't:
  its :mod:`syncws.framedecoder` parses incrementally, from bytes split anywhere, with
  :func:`parse_simple_frames` below for the common case, and
  :func:`decode_header` then :func:`check_header` for every other frame.

A frame holds only what matters after parsing: ``fin``, ``opcode``, the
unmasked payload and the three reserved bits. The mask exists only while a
frame is read or written.

Two functions serve the hot paths, each with a C version in the optional
accelerator (``syncws/speedups.c``, picked by :mod:`syncws.accelerator`) and
a pure-Python one of the same behaviour, errors included (``py_`` prefix):

* :func:`parse_simple_frames` parses, from a buffer, the run of frames that
  need none of the connection's state: whole, uncompressed text and binary
  messages in one frame each. The frame decoder (:mod:`syncws.framedecoder`)
  takes every other frame on its general path; most traffic never reaches it.
* :func:`pack_frame` serializes a frame into one ``bytes`` object, header
  and masked payload, for small frames, where one object costs less to
  build and write than two; a text payload may be a ``str``, encoded
  straight into the frame. It checks no frame rule: :func:`encode_frame`
  and :func:`encode_frame_bytes` do, then call it or :func:`frame_header`,
  which share the one encoding of the payload length (:func:`_length_header`).
"""

from __future__ import annotations

import enum
import operator
import os
import struct
from typing import Any, Callable, List, NamedTuple, Optional, Protocol, Tuple, Union

from .close_codes import (
    CloseCode,
    describe_close,
    describe_close_code,
    is_valid_close_code,
)
from .exceptions import PayloadTooBig, WebSocketProtocolError
from .accelerator import SPEEDUPS
from .masking import apply_mask, apply_mask_inplace

__all__ = [
    "Opcode",
    "CloseCode",
    "Frame",
    "DATA_OPCODES",
    "CONTROL_OPCODES",
    "FIN",
    "RSV1",
    "read_frame",
    "check_header",
    "decode_header",
    "encode_frame",
    "encode_frame_bytes",
    "pack_frame",
    "py_pack_frame",
    "parse_simple_frames",
    "py_parse_simple_frames",
    "serialize_frame",
    "MAX_CONTROL_PAYLOAD",
    "frame_header",
    "parse_close",
    "serialize_close",
    "is_valid_close_code",
    "describe_close_code",
    "describe_close",
    "apply_mask",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})

# Mapping the raw 4-bit value to the enum member once, here, keeps the hot
# parsing path to a dict lookup and makes unknown opcodes a plain KeyError.
_OPCODES = {opcode.value: opcode for opcode in Opcode}


MAX_CONTROL_PAYLOAD = 125

#: The bits of a header's first byte besides the opcode (RFC 6455 §5.2):
#: the last frame of a message, and RSV1 (a compressed message, RFC 7692).
FIN = 0x80
RSV1 = 0x40

#: Anything exposing the buffer protocol; spelled out because
#: ``collections.abc.Buffer`` only exists from Python 3.12.
BytesLike = Union[bytes, bytearray, memoryview]

_UNPACK_U16 = struct.Struct("!H").unpack
_UNPACK_U64 = struct.Struct("!Q").unpack
_UNPACK_U64_FROM = struct.Struct("!Q").unpack_from
_PACK_2B = struct.Struct("!BB").pack
_PACK_2B_U16 = struct.Struct("!BBH").pack
_PACK_2B_U64 = struct.Struct("!BBQ").pack


class Frame(NamedTuple):
    """One WebSocket frame, with its payload unmasked.

    Attributes:
        fin: whether this is the last frame of a message.
        opcode: the frame's :class:`Opcode`.
        data: the payload (``bytes``; a ``bytearray`` for large frames read
            in place).
        rsv1: reserved bit 1 (set by permessage-deflate on compressed
            messages).
        rsv2: reserved bit 2.
        rsv3: reserved bit 3.
    """

    fin: bool
    opcode: Opcode
    data: bytes
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False


def read_frame(
    read_exact: Callable[[int], bytes],
    *,
    mask: bool,
    max_size: Optional[int] = None,
    allow_rsv1: bool = False,
) -> Frame:
    """Read and validate one frame.

    Args:
        read_exact: returns exactly ``n`` bytes, or raises (``EOFError`` at
            end of stream is the convention; whatever it raises propagates).
        mask: ``True`` when frames must be masked (a server reading a
            client), ``False`` when they must not be (a client reading a
            server).
        max_size: the largest payload accepted, checked from the announced
            length before the payload is read; ``None`` for no limit.
        allow_rsv1: whether RSV1 may be set, i.e. an extension that uses it
            (permessage-deflate) was negotiated.

    Returns:
        The frame with its payload unmasked.

    Raises:
        WebSocketProtocolError: the frame breaks RFC 6455 §5 (code 1002).
        PayloadTooBig: the announced length exceeds ``max_size`` (1009).
    """
    first, second = read_exact(2)
    # Checked before anything more is read; the 7-bit length is enough for
    # every rule but the 64-bit length's, checked once that length is read.
    length = second & 0x7F
    opcode = check_header(first, second, length, mask=mask, allow_rsv1=allow_rsv1)
    if length == 126:
        (length,) = _UNPACK_U16(read_exact(2))
    elif length == 127:
        (length,) = _UNPACK_U64(read_exact(8))
        check_header(first, second, length, mask=mask, allow_rsv1=allow_rsv1)

    if max_size is not None and length > max_size:
        raise PayloadTooBig(
            f"frame of {length} bytes exceeds max_size={max_size}"
        )

    if mask:
        mask_key = read_exact(4)
        data = read_exact(length)
        if isinstance(data, bytearray):
            apply_mask_inplace(data, mask_key)
        else:
            data = apply_mask(data, mask_key)
    else:
        data = read_exact(length)

    return Frame(bool(first & 0x80), opcode, data, bool(first & 0x40), bool(first & 0x20), bool(first & 0x10))


def decode_header(
    buffer: BytesLike, position: int, end: int
) -> Optional[Tuple[int, int, int, int, Optional[bytes]]]:
    """Decode the frame header at ``position`` in ``buffer``, if it has all arrived.

    The run-time twin of :func:`read_frame`'s header reading, for a parser
    that gets bytes split anywhere (:mod:`syncws.framedecoder`). It checks no
    rule: :func:`check_header` does, with what this returns.
    ``tests/test_framing_speedups.py`` and ``tests/test_framedecoder.py``
    hold it, :func:`read_frame` and both :func:`parse_simple_frames` to each
    other on random frames.

    Args:
        buffer: the received bytes.
        position: where the header starts.
        end: where the received bytes end.

    Returns:
        ``(first, second, length, start, mask_key)``: the header's two
        bytes, the payload length (extended lengths decoded), where the
        payload starts, and the masking key (``None`` for an unmasked
        frame); ``None`` when the header isn't whole before ``end``.
    """
    if end - position < 2:
        return None
    first = buffer[position]
    second = buffer[position + 1]
    length = second & 0x7F
    start = position + 2
    if length == 126:
        start += 2
    elif length == 127:
        start += 8
    if second & 0x80:
        start += 4
    if start > end:
        return None
    if length == 126:
        length = (buffer[position + 2] << 8) | buffer[position + 3]
    elif length == 127:
        (length,) = _UNPACK_U64_FROM(buffer, position + 2)
    mask_key = bytes(buffer[start - 4 : start]) if second & 0x80 else None
    return first, second, length, start, mask_key


def check_header(first: int, second: int, length: int, *, mask: bool, allow_rsv1: bool) -> Opcode:
    """Apply the rules of RFC 6455 §5.2 that a frame header must follow on its own.

    The rules that depend on what came before (a continuation frame needs a
    message to continue) belong to the connection (:mod:`syncws.core`).

    Args:
        first: the header's first byte (FIN, RSV1-3, opcode).
        second: its second byte (MASK, 7-bit length).
        length: the payload length (extended lengths decoded), or the
            7-bit length of the second byte: every rule but the one on
            64-bit lengths can be checked with it.
        mask: whether frames must be masked (a server reading a client).
        allow_rsv1: whether RSV1 may be set (permessage-deflate was
            negotiated); it never may on a control frame.

    Returns:
        The frame's opcode.

    Raises:
        WebSocketProtocolError: the header breaks a rule (close code 1002).
    """
    try:
        opcode = _OPCODES[first & 0x0F]
    except KeyError:
        raise WebSocketProtocolError(f"reserved opcode 0x{first & 0x0F:X}") from None
    if first & 0x30 or (first & 0x40 and not allow_rsv1):
        raise WebSocketProtocolError(
            f"reserved bits set without a negotiated extension: 0x{(first & 0x70) >> 4:X}"
        )
    if bool(second & 0x80) != mask:
        raise WebSocketProtocolError(
            "incorrect masking: a client must mask its frames"
            if mask
            else "incorrect masking: a server must not mask its frames"
        )
    if opcode >= Opcode.CLOSE:
        # Control frames: never fragmented, payload <= 125 bytes, and their
        # RSV1 has no meaning under permessage-deflate (RFC 7692 §6.1).
        if not first & 0x80:
            raise WebSocketProtocolError(f"fragmented control frame ({opcode.name})")
        if second & 0x7F > MAX_CONTROL_PAYLOAD:
            # The 7-bit length, not the decoded one: a control frame's
            # length is never extended, even to say it is short.
            raise WebSocketProtocolError(
                f"control frame too long: {opcode.name} with a 7-bit length of {second & 0x7F}"
            )
        if first & 0x40:
            raise WebSocketProtocolError(f"RSV1 set on a control frame ({opcode.name})")
    elif length >> 63:
        raise WebSocketProtocolError("payload length with the most significant bit set")
    return opcode


def py_parse_simple_frames(
    buffer: BytesLike, position: int, end: int, masked: bool, limit: int, out: List[Any], /
) -> int:
    """Parse the run of simple frames at ``position``; pure-Python implementation.

    :func:`parse_simple_frames` is this function or its C version. A
    *simple* frame is a whole text (first byte 0x81) or binary (0x82)
    message: FIN set, RSV bits clear, masked if and only if ``masked``, a
    payload of at most ``limit`` bytes, all of it in ``buffer[:end]``, and,
    for text, valid UTF-8. Such a frame needs none of the connection's
    state, provided the connection is between messages and hasn't sent its
    close frame; the caller checks that.

    Parsing stops at the first frame that isn't simple, or is cut by
    ``end``, and returns where it starts, so that the caller's general path
    takes it: it raises the right error for a broken frame (invalid UTF-8
    included, left for it to report), or waits for the rest of a cut one.

    Args:
        buffer: the received bytes; any C-contiguous bytes-like object,
            taken as its raw bytes.
        position: where the first frame starts.
        end: where the received bytes end; nothing at or after it is read.
        masked: whether frames must be masked (a server reading a client).
        limit: the largest payload accepted; a negative limit accepts none.
        out: the list each message is appended to: ``str`` for text,
            ``bytes`` for binary (typed ``List[Any]`` so that a list of
            wider events, such as the connection's, may be given).

    Returns:
        The position of the first frame not parsed; ``position`` if none was.

    Raises:
        TypeError: ``out`` isn't a list, or ``buffer`` isn't a C-contiguous
            bytes-like object.
        ValueError: not ``0 <= position <= end <= len(buffer)``.
    """
    if type(out) is not list:
        raise TypeError(f"out must be a list, got {type(out).__name__}")
    if type(buffer) is not bytes and type(buffer) is not bytearray:
        view = memoryview(buffer)
        if not view.c_contiguous:
            raise TypeError("buffer must be C-contiguous, got a strided memoryview")
        # Items wider than a byte are parsed as their raw bytes, as in C.
        buffer = view if view.format == "B" and view.ndim == 1 else view.cast("B")
    if not 0 <= position <= end <= len(buffer):
        raise ValueError(
            f"expected 0 <= position <= end <= len(buffer) = {len(buffer)}, "
            f"got position={position}, end={end}"
        )
    mask_bit = 0x80 if masked else 0
    append = out.append
    while end - position >= 2:
        first = buffer[position]
        second = buffer[position + 1]
        if (first != 0x81 and first != 0x82) or second & 0x80 != mask_bit:
            break
        length = second & 0x7F
        start = position + 2
        if length == 126:
            start = position + 4
            if start > end:
                break
            length = (buffer[position + 2] << 8) | buffer[position + 3]
        elif length == 127:
            start = position + 10
            if start > end:
                break
            (length,) = _UNPACK_U64_FROM(buffer, position + 2)
        if mask_bit:
            start += 4
        stop = start + length
        if stop > end or length > limit:
            break
        payload = buffer[start:stop]
        if mask_bit:
            payload = apply_mask(payload, buffer[start - 4 : start])
        if first == 0x81:
            try:
                append(str(payload, "utf-8"))
            except UnicodeDecodeError:
                break  # the caller's general path reports it
        else:
            append(payload if type(payload) is bytes else bytes(payload))
        position = stop
    return position


def _first_byte(fin: bool, opcode: int, rsv1: bool) -> int:
    """The first byte of a frame's header: FIN, RSV1 and the opcode."""
    return (FIN if fin else 0) | (RSV1 if rsv1 else 0) | opcode


def _length_header(first: int, mask_bit: int, length: int) -> bytes:
    """The first 2 to 10 bytes of a header: the payload length in its shortest encoding.

    Args:
        first: the header's first byte.
        mask_bit: ``0x80`` for a masked frame, else 0.
        length: the payload length.

    Raises:
        struct.error: ``first`` isn't a byte, or ``length`` is negative or
            doesn't fit 64 bits.
    """
    if length < 126:
        return _PACK_2B(first, mask_bit | length)
    if length < 0x10000:
        return _PACK_2B_U16(first, mask_bit | 126, length)
    return _PACK_2B_U64(first, mask_bit | 127, length)


def frame_header(
    fin: bool,
    opcode: int,
    length: int,
    *,
    rsv1: bool = False,
    mask_key: Optional[bytes] = None,
) -> bytes:
    """Build the header of a frame, mask key included when there is one.

    The connection's write path uses this directly so that a large payload is
    sent after its header without being copied into one buffer.

    Args:
        fin: whether this is the last frame of a message.
        opcode: the frame's opcode.
        length: the payload length.
        rsv1: set RSV1 (the first frame of a compressed message).
        mask_key: the 4-byte masking key, for frames a client sends.

    Returns:
        The 2 to 14 header bytes.
    """
    first = _first_byte(fin, opcode, rsv1)
    if mask_key is None:
        return _length_header(first, 0, length)
    return _length_header(first, 0x80, length) + mask_key


def py_pack_frame(
    first: int, payload: Union[BytesLike, str], mask_key: Optional[BytesLike], key_offset: Optional[int] = None, /
) -> bytes:
    """Serialize a frame into one ``bytes`` object; pure-Python implementation.

    :func:`pack_frame` is this function or its C version. It checks no frame
    rule (:func:`encode_frame_bytes` does, then calls it): the caller knows
    the frame is valid, as the connection does for the data frames it sends.

    Args:
        first: the header's first byte: FIN (0x80), RSV1 (0x40), RSV2
            (0x20), RSV3 (0x10) and the opcode, e.g. ``0x81`` for a whole
            text message.
        payload: the unmasked payload; any bytes-like object, taken as its
            raw bytes, or a ``str``, taken as its UTF-8 (the C version
            reads an ASCII one in place: ``send()`` hands a text message
            over unencoded).
        mask_key: the 4-byte masking key, for frames a client sends
            (RFC 6455 §5.3); ``None`` for frames a server sends.
        key_offset: with a ``mask_key``, where the key starts in it:
            ``mask_key`` is then a pool of random bytes, and the key its 4
            bytes at ``key_offset`` (what a connection hands over, rather
            than slicing a key out of its pool for every frame).

    Returns:
        The frame's bytes: its 2 to 14 byte header (the length in its
        shortest encoding, then the key), then the payload, masked with
        the key if given.

    Raises:
        TypeError: ``first`` or ``key_offset`` isn't an integer, or
            ``payload`` (not a ``str``) or ``mask_key`` isn't bytes-like.
        ValueError: ``first`` isn't in 0..255, or ``mask_key`` isn't 4 bytes
            long, or with ``key_offset``, holds no 4 bytes there.
        UnicodeEncodeError: a ``str`` payload has a lone surrogate (checked
            before the key, as the C version does).
    """
    if type(first) is not int:
        first = operator.index(first)
    if not 0 <= first <= 0xFF:
        raise ValueError(f"the first header byte must be in 0..255, got {first}")
    if isinstance(payload, str):
        payload = payload.encode()
    if mask_key is not None and key_offset is not None:
        pool = memoryview(mask_key).cast("B")
        offset = operator.index(key_offset)
        if not 0 <= offset <= pool.nbytes - 4:
            raise ValueError(f"no 4-byte mask at offset {offset} of {pool.nbytes} bytes")
        mask_key = pool[offset : offset + 4].tobytes()
    if mask_key is not None:
        # First, so that a bad key or payload raises what apply_mask raises.
        masked = apply_mask(payload, mask_key)
        return _length_header(first, 0x80, len(masked)) + mask_key + masked
    if type(payload) is not bytes:
        view = memoryview(payload)
        # Concatenation takes only contiguous buffers: gather a strided one
        # (rare), as the C version does.
        payload = view if view.c_contiguous else view.tobytes()
        return _length_header(first, 0, view.nbytes) + payload
    return _length_header(first, 0, len(payload)) + payload


def _byte_length(payload: BytesLike) -> int:
    """The payload's length in bytes.

    A memoryview's ``len()`` counts the items of its first dimension: rows
    of a 2-D view, 4-byte items of an ``array("I")``'s view.
    """
    return payload.nbytes if type(payload) is memoryview else len(payload)


def _check_encodable(fin: bool, opcode: int, length: int, rsv1: bool) -> None:
    """Refuse a frame that may not be sent: the rules of :func:`encode_frame`.

    Raises:
        ValueError: a control frame that is fragmented, longer than 125
            bytes or has RSV1 set.
    """
    if opcode >= Opcode.CLOSE and (not fin or length > MAX_CONTROL_PAYLOAD or rsv1):
        name = Opcode(opcode).name
        if not fin:
            raise ValueError(f"a {name} frame can't be fragmented")
        if length > MAX_CONTROL_PAYLOAD:
            raise ValueError(
                f"a {name} payload is at most {MAX_CONTROL_PAYLOAD} bytes, got {length}"
            )
        raise ValueError(f"RSV1 can't be set on a {name} frame")


def encode_frame(
    fin: bool,
    opcode: int,
    payload: "bytes | bytearray | memoryview",
    *,
    rsv1: bool = False,
    mask_key: Optional[bytes] = None,
) -> Tuple[bytes, "bytes | bytearray | memoryview"]:
    """Serialize a frame as its header and its (masked) payload: the one serializer.

    The two parts are returned apart so that a large payload can be written
    after its header without being copied into one buffer; join them for a
    frame's bytes, or call :func:`encode_frame_bytes`, which does it in one
    copy.

    Args:
        fin: whether this is the last frame of a message.
        opcode: the frame's opcode.
        payload: the unmasked payload.
        rsv1: set RSV1 (the first frame of a compressed message).
        mask_key: the 4-byte masking key, for frames a client sends
            (RFC 6455 §5.3); ``None`` for frames a server sends.

    Returns:
        ``(header, payload)``, the payload masked when ``mask_key`` is given.

    Raises:
        ValueError: a control frame that is fragmented, longer than 125
            bytes or has RSV1 set.
    """
    length = _byte_length(payload)
    _check_encodable(fin, opcode, length, rsv1)
    header = frame_header(fin, opcode, length, rsv1=rsv1, mask_key=mask_key)
    if mask_key is not None:
        payload = apply_mask(payload, mask_key)
    return header, payload


def encode_frame_bytes(
    fin: bool,
    opcode: int,
    payload: BytesLike,
    *,
    rsv1: bool = False,
    mask_key: Optional[bytes] = None,
) -> bytes:
    """Serialize a frame into one ``bytes`` object: :func:`encode_frame`, joined.

    Same arguments, rules and errors as :func:`encode_frame`; the payload is
    copied once, into the result (see :func:`pack_frame`).

    Returns:
        The frame's bytes.

    Raises:
        ValueError: a control frame that is fragmented, longer than 125
            bytes or has RSV1 set.
    """
    _check_encodable(fin, opcode, _byte_length(payload), rsv1)
    return pack_frame(_first_byte(fin, opcode, rsv1), payload, mask_key)


def serialize_frame(frame: Frame, *, mask: bool) -> bytes:
    """Serialize a frame, masking it with a fresh random key if ``mask``.

    Args:
        frame: the frame to serialize.
        mask: ``True`` for frames a client sends (RFC 6455 §5.3).

    Returns:
        The frame's bytes.

    Raises:
        ValueError: a control frame that is fragmented, longer than 125
            bytes or has RSV1 set, or RSV2/RSV3 set (no extension here uses them).
    """
    if frame.rsv2 or frame.rsv3:
        raise ValueError("RSV2 and RSV3 aren't used by any supported extension")
    return encode_frame_bytes(
        frame.fin,
        frame.opcode,
        frame.data,
        rsv1=frame.rsv1,
        mask_key=os.urandom(4) if mask else None,
    )


def parse_close(data: bytes) -> Tuple[int, str]:
    """Parse the payload of a close frame.

    Args:
        data: the payload.

    Returns:
        ``(code, reason)``; ``(1005, "")`` for an empty payload, which means
        the peer sent no status code.

    Raises:
        WebSocketProtocolError: a one-byte payload or an invalid close code
            (1002), or a reason that isn't UTF-8 (1007).
    """
    if len(data) >= 2:
        (code,) = _UNPACK_U16(data[:2])
        if not is_valid_close_code(code):
            raise WebSocketProtocolError(f"invalid close code {code}")
        try:
            reason = bytes(data[2:]).decode()
        except UnicodeDecodeError as exc:
            raise WebSocketProtocolError(
                f"close reason isn't valid UTF-8: {exc.reason} at byte {exc.start}",
                code=CloseCode.INVALID_DATA,
            ) from None
        return code, reason
    if not data:
        return CloseCode.NO_STATUS_RCVD, ""
    raise WebSocketProtocolError("close frame with a 1-byte payload")


def serialize_close(code: int, reason: str = "") -> bytes:
    """Build the payload of a close frame.

    Args:
        code: a close code that may be sent (see :func:`is_valid_close_code`).
        reason: a reason of at most 123 bytes once encoded in UTF-8.

    Returns:
        The payload.

    Raises:
        ValueError: a code that can't be sent or a reason that is too long.
    """
    if not is_valid_close_code(code):
        raise ValueError(
            f"close code {code} can't be sent: use 1000-1003, 1007-1014 or 3000-4999"
        )
    encoded = reason.encode()
    if len(encoded) > MAX_CONTROL_PAYLOAD - 2:
        raise ValueError(
            f"close reason is {len(encoded)} bytes in UTF-8; the limit is "
            f"{MAX_CONTROL_PAYLOAD - 2}"
        )
    return struct.pack("!H", code) + encoded


class _PackFrame(Protocol):
    """The signature of :func:`py_pack_frame`, its optional argument included."""

    def __call__(
        self, first: int, payload: Union[BytesLike, str], mask_key: Optional[BytesLike],
        key_offset: Optional[int] = None, /,
    ) -> bytes: ...


# The public names, bound to the C implementations when the accelerator is
# there; annotated so that type checkers see one signature either way.
parse_simple_frames: Callable[[BytesLike, int, int, bool, int, List[Any]], int]
pack_frame: "_PackFrame"
if SPEEDUPS is not None:
    parse_simple_frames = SPEEDUPS.parse_simple_frames
    pack_frame = SPEEDUPS.pack_frame
else:
    parse_simple_frames = py_parse_simple_frames
    pack_frame = py_pack_frame
