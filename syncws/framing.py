"""WebSocket frames (RFC 6455 §5): parsing, validation and serialization.

This module is pure: it turns bytes into :class:`Frame` objects and back and
never touches a socket. Reading goes through a ``read_exact(n)`` callable that
returns exactly ``n`` bytes (the connection's buffered socket reader, or
``io.BytesIO(...).read`` in tests), so every rule of §5 is checked in one
place for the client, the server and the tests.

A frame holds only what matters after parsing: ``fin``, ``opcode``, the
unmasked payload and the three reserved bits. The mask exists only while a
frame is read or written.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import Callable, NamedTuple, Optional, Tuple

from .close_codes import (
    CloseCode,
    describe_close,
    describe_close_code,
    is_valid_close_code,
)
from .exceptions import PayloadTooBig, WebSocketProtocolError
from .masking import apply_mask, apply_mask_inplace

__all__ = [
    "Opcode",
    "CloseCode",
    "Frame",
    "DATA_OPCODES",
    "CONTROL_OPCODES",
    "read_frame",
    "encode_frame",
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

_UNPACK_U16 = struct.Struct("!H").unpack
_UNPACK_U64 = struct.Struct("!Q").unpack
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

    try:
        opcode = _OPCODES[first & 0x0F]
    except KeyError:
        raise WebSocketProtocolError(
            f"reserved opcode 0x{first & 0x0F:X}"
        ) from None
    fin = bool(first & 0x80)
    if first & 0x70:
        if first & 0x30 or not allow_rsv1:
            raise WebSocketProtocolError(
                f"reserved bits set without a negotiated extension: "
                f"0x{(first & 0x70) >> 4:X}"
            )
    if bool(second & 0x80) != mask:
        raise WebSocketProtocolError(
            "incorrect masking: a client must mask its frames"
            if mask
            else "incorrect masking: a server must not mask its frames"
        )

    length = second & 0x7F
    if opcode >= Opcode.CLOSE:
        # Control frames: never fragmented, payload <= 125 bytes, and their
        # RSV1 has no meaning under permessage-deflate (RFC 7692 §6.1).
        if not fin:
            raise WebSocketProtocolError(f"fragmented control frame ({opcode.name})")
        if length > MAX_CONTROL_PAYLOAD:
            raise WebSocketProtocolError(
                f"control frame too long: {opcode.name} with a 7-bit length of {length}"
            )
        if first & 0x40:
            raise WebSocketProtocolError(f"RSV1 set on a control frame ({opcode.name})")
    elif length == 126:
        (length,) = _UNPACK_U16(read_exact(2))
    elif length == 127:
        (length,) = _UNPACK_U64(read_exact(8))
        if length >> 63:
            raise WebSocketProtocolError(
                "payload length with the most significant bit set"
            )

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

    return Frame(fin, opcode, data, bool(first & 0x40), bool(first & 0x20), bool(first & 0x10))


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
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if mask_key is not None else 0
    if length < 126:
        header = _PACK_2B(first, mask_bit | length)
    elif length < 0x10000:
        header = _PACK_2B_U16(first, mask_bit | 126, length)
    else:
        header = _PACK_2B_U64(first, mask_bit | 127, length)
    if mask_key is not None:
        header += mask_key
    return header


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
    frame's bytes (as :func:`serialize_frame` does).

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
    if opcode >= Opcode.CLOSE:
        name = Opcode(opcode).name
        if not fin:
            raise ValueError(f"a {name} frame can't be fragmented")
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(
                f"a {name} payload is at most {MAX_CONTROL_PAYLOAD} bytes, got {len(payload)}"
            )
        if rsv1:
            raise ValueError(f"RSV1 can't be set on a {name} frame")
    header = frame_header(fin, opcode, len(payload), rsv1=rsv1, mask_key=mask_key)
    if mask_key is not None:
        payload = apply_mask(payload, mask_key)
    return header, payload


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
    header, payload = encode_frame(
        frame.fin,
        frame.opcode,
        frame.data,
        rsv1=frame.rsv1,
        mask_key=os.urandom(4) if mask else None,
    )
    return header + bytes(payload)


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
