"""Tests for syncws.framing: every rule of RFC 6455 §5, close payloads, fuzzing."""

from __future__ import annotations

import io
import struct
from typing import Callable, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncws.exceptions import PayloadTooBig, WebSocketProtocolError
from syncws.framing import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    CloseCode,
    Frame,
    Opcode,
    apply_mask,
    describe_close_code,
    frame_header,
    is_valid_close_code,
    parse_close,
    read_frame,
    serialize_close,
    serialize_frame,
)

MASK_KEY = b"\x12\x34\x56\x78"


def exact_reader(data: bytes) -> Callable[[int], bytes]:
    """A ``read_exact`` over ``data`` that raises EOFError on a short read."""
    stream = io.BytesIO(data)

    def read_exact(n: int) -> bytes:
        chunk = stream.read(n)
        if len(chunk) < n:
            raise EOFError(f"wanted {n} bytes, got {len(chunk)}")
        return chunk

    return read_exact


class RecordingReader:
    """A ``read_exact`` that records every request and serves from ``data``."""

    def __init__(self, data: bytes, *, bytearray_from: Optional[int] = None) -> None:
        self.stream = io.BytesIO(data)
        self.requests: List[int] = []
        # Requests of at least this many bytes come back as a bytearray, as
        # HeadReader does past its read_limit.
        self.bytearray_from = bytearray_from
        self.returned: List[object] = []

    def __call__(self, n: int) -> bytes:
        self.requests.append(n)
        chunk = self.stream.read(n)
        if len(chunk) < n:
            raise EOFError(f"wanted {n} bytes, got {len(chunk)}")
        result: bytes = chunk
        if self.bytearray_from is not None and n >= self.bytearray_from:
            result = bytearray(chunk)  # type: ignore[assignment]
        self.returned.append(result)
        return result


def raw_frame(
    first: int, payload: bytes = b"", *, mask_key: Optional[bytes] = None, length: Optional[int] = None
) -> bytes:
    """Build a frame byte by byte from its first byte, bypassing serialize_frame."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if mask_key is not None else 0
    if n < 126:
        header = bytes([first, mask_bit | n])
    elif n < 0x10000:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if mask_key is not None:
        return header + mask_key + apply_mask(payload, mask_key)
    return header + payload


def parse(data: bytes, *, mask: bool = False, max_size: Optional[int] = None, allow_rsv1: bool = False) -> Frame:
    return read_frame(exact_reader(data), mask=mask, max_size=max_size, allow_rsv1=allow_rsv1)


# --- read_frame: valid frames -------------------------------------------------


@pytest.mark.parametrize("opcode", sorted(DATA_OPCODES | CONTROL_OPCODES))
def test_read_each_opcode(opcode: Opcode) -> None:
    frame = parse(raw_frame(0x80 | opcode, b"spam"))
    assert frame == Frame(True, opcode, b"spam", False, False, False)
    assert type(frame.opcode) is Opcode


def test_read_not_fin_data_frame() -> None:
    assert parse(raw_frame(Opcode.TEXT, b"frag")) == Frame(False, Opcode.TEXT, b"frag")
    assert parse(raw_frame(Opcode.CONT, b"ment")) == Frame(False, Opcode.CONT, b"ment")


def test_read_unmasked_frame_exact_bytes() -> None:
    assert parse(b"\x81\x05Hello") == Frame(True, Opcode.TEXT, b"Hello")


def test_read_masked_frame_rfc_example() -> None:
    # RFC 6455 §5.7: a single-frame masked text message containing "Hello".
    data = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
    assert parse(data, mask=True) == Frame(True, Opcode.TEXT, b"Hello")


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_read_zero_length_frame(opcode: Opcode, mask: bool) -> None:
    reader = RecordingReader(raw_frame(0x80 | opcode, b"", mask_key=MASK_KEY if mask else None))
    frame = read_frame(reader, mask=mask)
    assert frame == Frame(True, opcode, b"")
    assert reader.requests == ([2, 4, 0] if mask else [2, 0])
    assert reader.stream.read() == b""


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("length", [125])
def test_read_7bit_length_maximum(length: int, mask: bool) -> None:
    payload = bytes(range(256))[:length]
    reader = RecordingReader(raw_frame(0x82, payload, mask_key=MASK_KEY if mask else None))
    assert read_frame(reader, mask=mask).data == payload
    assert reader.requests == ([2, 4, length] if mask else [2, length])


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("length", [126, 127, 1000, 0xFFFF])
def test_read_16bit_length(length: int, mask: bool) -> None:
    payload = bytes(i % 251 for i in range(length))
    data = raw_frame(0x82, payload, mask_key=MASK_KEY if mask else None)
    assert data[1] & 0x7F == 126
    reader = RecordingReader(data)
    assert read_frame(reader, mask=mask) == Frame(True, Opcode.BINARY, payload)
    assert reader.requests == ([2, 2, 4, length] if mask else [2, 2, length])


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("length", [0x10000, 0x10001, 200_000])
def test_read_64bit_length(length: int, mask: bool) -> None:
    payload = bytes(i % 253 for i in range(length))
    data = raw_frame(0x82, payload, mask_key=MASK_KEY if mask else None)
    assert data[1] & 0x7F == 127
    reader = RecordingReader(data)
    assert read_frame(reader, mask=mask) == Frame(True, Opcode.BINARY, payload)
    assert reader.requests == ([2, 8, 4, length] if mask else [2, 8, length])


def test_read_non_minimal_lengths_are_accepted() -> None:
    # A 16-bit or 64-bit length holding a small value is decoded as announced.
    assert parse(b"\x82\x7e\x00\x03abc") == Frame(True, Opcode.BINARY, b"abc")
    assert parse(b"\x82\x7f" + struct.pack("!Q", 3) + b"abc") == Frame(True, Opcode.BINARY, b"abc")


def test_read_leaves_following_bytes_unread() -> None:
    read_exact = exact_reader(b"\x81\x02hi\x82\x01!")
    assert read_frame(read_exact, mask=False) == Frame(True, Opcode.TEXT, b"hi")
    assert read_frame(read_exact, mask=False) == Frame(True, Opcode.BINARY, b"!")
    with pytest.raises(EOFError):
        read_frame(read_exact, mask=False)


def test_read_large_bytearray_payload_unmasked_in_place() -> None:
    payload = bytes(i % 256 for i in range(100_000))
    reader = RecordingReader(raw_frame(0x82, payload, mask_key=MASK_KEY), bytearray_from=65_537)
    frame = read_frame(reader, mask=True)
    assert frame.data == payload
    # The very bytearray read_exact returned was unmasked and handed back.
    assert type(frame.data) is bytearray
    assert frame.data is reader.returned[-1]


def test_read_small_bytes_payload_masked_returns_bytes() -> None:
    frame = parse(raw_frame(0x81, b"abc", mask_key=MASK_KEY), mask=True)
    assert frame.data == b"abc"
    assert isinstance(frame.data, bytes)


def test_read_propagates_eof_in_header_and_payload() -> None:
    with pytest.raises(EOFError):
        parse(b"")
    with pytest.raises(EOFError):
        parse(b"\x81")
    with pytest.raises(EOFError):
        parse(b"\x81\x05Hell")
    with pytest.raises(EOFError):
        parse(b"\x82\x7e\x01")
    with pytest.raises(EOFError):
        parse(b"\x81\x85\x01\x02", mask=True)


# --- read_frame: reserved bits --------------------------------------------------


@pytest.mark.parametrize(
    "bits, shown", [(0x40, "0x4"), (0x20, "0x2"), (0x10, "0x1"), (0x60, "0x6"), (0x70, "0x7"), (0x30, "0x3")]
)
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING])
def test_reserved_bits_rejected_without_extension(bits: int, shown: str, opcode: Opcode) -> None:
    with pytest.raises(WebSocketProtocolError, match="reserved bits set without a negotiated extension") as exc:
        parse(raw_frame(0x80 | bits | opcode, b"x"))
    assert str(exc.value).endswith(shown)
    assert exc.value.code == 1002


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONT])
def test_rsv1_allowed_on_data_frames_with_extension(opcode: Opcode) -> None:
    frame = parse(raw_frame(0xC0 | opcode, b"deflated"), allow_rsv1=True)
    assert frame == Frame(True, opcode, b"deflated", True, False, False)
    frame = parse(raw_frame(0x40 | opcode, b"x", mask_key=MASK_KEY), mask=True, allow_rsv1=True)
    assert frame == Frame(False, opcode, b"x", True, False, False)


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_rsv1_rejected_on_control_frames_even_with_extension(opcode: Opcode) -> None:
    with pytest.raises(WebSocketProtocolError, match=f"RSV1 set on a control frame \\({opcode.name}\\)") as exc:
        parse(raw_frame(0xC0 | opcode, b""), allow_rsv1=True)
    assert exc.value.code == 1002


@pytest.mark.parametrize("bits", [0x20, 0x10, 0x30, 0x60, 0x50, 0x70])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.CLOSE])
def test_rsv2_rsv3_always_rejected(bits: int, opcode: Opcode) -> None:
    with pytest.raises(WebSocketProtocolError, match="reserved bits set without a negotiated extension"):
        parse(raw_frame(0x80 | bits | opcode, b""), allow_rsv1=True)


def test_rsv_rejected_before_payload_is_read() -> None:
    reader = RecordingReader(raw_frame(0xA2, b"x" * 1000))
    with pytest.raises(WebSocketProtocolError):
        read_frame(reader, mask=False)
    assert reader.requests == [2]


# --- read_frame: opcodes, control frames, lengths, masking ----------------------


@pytest.mark.parametrize("value", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_rejected(value: int) -> None:
    reader = RecordingReader(raw_frame(0x80 | value, b"abc"))
    with pytest.raises(WebSocketProtocolError, match=f"^reserved opcode 0x{value:X}$") as exc:
        read_frame(reader, mask=False)
    assert exc.value.code == 1002
    assert reader.requests == [2]


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
@pytest.mark.parametrize("length", [126, 127])
def test_control_frame_too_long(opcode: Opcode, length: int) -> None:
    # 126 and 127 announce an extended length, which a control frame can't have.
    reader = RecordingReader(bytes([0x80 | opcode, length]) + b"\x00" * 8 + b"x" * 200)
    with pytest.raises(WebSocketProtocolError, match="control frame too long") as exc:
        read_frame(reader, mask=False)
    assert f"{opcode.name} with a 7-bit length of {length}" in str(exc.value)
    assert reader.requests == [2]


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_control_frame_125_bytes_accepted(opcode: Opcode) -> None:
    assert parse(raw_frame(0x80 | opcode, b"p" * 125)).data == b"p" * 125


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_fragmented_control_frame(opcode: Opcode) -> None:
    with pytest.raises(WebSocketProtocolError, match=f"fragmented control frame \\({opcode.name}\\)") as exc:
        parse(raw_frame(opcode, b"ping"))
    assert exc.value.code == 1002


def test_64bit_length_with_top_bit_set() -> None:
    reader = RecordingReader(b"\x82\x7f" + struct.pack("!Q", 1 << 63) + b"x" * 16)
    with pytest.raises(WebSocketProtocolError, match="most significant bit set"):
        read_frame(reader, mask=False)
    assert reader.requests == [2, 8]
    with pytest.raises(WebSocketProtocolError, match="most significant bit set"):
        parse(b"\x82\x7f" + b"\xff" * 8, max_size=10)


def test_server_requires_masked_frames() -> None:
    with pytest.raises(WebSocketProtocolError, match="incorrect masking: a client must mask its frames") as exc:
        parse(raw_frame(0x81, b"hi"), mask=True)
    assert exc.value.code == 1002


def test_client_forbids_masked_frames() -> None:
    with pytest.raises(WebSocketProtocolError, match="incorrect masking: a server must not mask its frames"):
        parse(raw_frame(0x81, b"hi", mask_key=MASK_KEY), mask=False)


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.CLOSE])
def test_masking_rule_applies_to_control_frames(opcode: Opcode) -> None:
    with pytest.raises(WebSocketProtocolError, match="incorrect masking"):
        parse(raw_frame(0x80 | opcode, b""), mask=True)
    with pytest.raises(WebSocketProtocolError, match="incorrect masking"):
        parse(raw_frame(0x80 | opcode, b"", mask_key=MASK_KEY), mask=False)


# --- read_frame: max_size ---------------------------------------------------------


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize(
    "length, header_requests", [(11, [2]), (126, [2, 2]), (70_000, [2, 8])]
)
def test_max_size_checked_before_payload_is_read(mask: bool, length: int, header_requests: List[int]) -> None:
    reader = RecordingReader(raw_frame(0x82, b"z" * length, mask_key=MASK_KEY if mask else None))
    with pytest.raises(PayloadTooBig, match=f"frame of {length} bytes exceeds max_size=10"):
        read_frame(reader, mask=mask, max_size=10)
    # Only the header was asked for: neither the mask key nor the payload.
    assert reader.requests == header_requests


def test_max_size_huge_announced_length_never_read() -> None:
    # An announced 2**62 bytes must not reach read_exact (it would allocate).
    reader = RecordingReader(b"\x82\x7f" + struct.pack("!Q", 1 << 62))
    with pytest.raises(PayloadTooBig, match=f"frame of {1 << 62} bytes exceeds max_size=1048576"):
        read_frame(reader, mask=False, max_size=1 << 20)
    assert reader.requests == [2, 8]


@pytest.mark.parametrize("mask", [False, True])
def test_max_size_exactly_reached_is_accepted(mask: bool) -> None:
    data = raw_frame(0x82, b"z" * 10, mask_key=MASK_KEY if mask else None)
    assert parse(data, mask=mask, max_size=10).data == b"z" * 10
    assert parse(raw_frame(0x82, b"", mask_key=MASK_KEY if mask else None), mask=mask, max_size=0).data == b""


def test_max_size_applies_to_control_frames() -> None:
    with pytest.raises(PayloadTooBig, match="frame of 5 bytes exceeds max_size=4"):
        parse(raw_frame(0x89, b"12345"), max_size=4)


def test_max_size_none_means_no_limit() -> None:
    assert len(parse(raw_frame(0x82, b"a" * 100_000), max_size=None).data) == 100_000


# --- serialize_frame / frame_header -------------------------------------------------


def test_serialize_unmasked_exact_bytes() -> None:
    assert serialize_frame(Frame(True, Opcode.TEXT, b"Hello"), mask=False) == b"\x81\x05Hello"
    assert serialize_frame(Frame(False, Opcode.BINARY, b""), mask=False) == b"\x02\x00"
    assert serialize_frame(Frame(True, Opcode.CONT, b"x", rsv1=True), mask=False) == b"\xc0\x01x"
    assert serialize_frame(Frame(True, Opcode.PING, b""), mask=False) == b"\x89\x00"


@pytest.mark.parametrize("length, header", [
    (125, b"\x82\x7d"),
    (126, b"\x82\x7e\x00\x7e"),
    (0xFFFF, b"\x82\x7e\xff\xff"),
    (0x10000, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_serialize_length_encodings(length: int, header: bytes) -> None:
    payload = b"\x00" * length
    assert serialize_frame(Frame(True, Opcode.BINARY, payload), mask=False) == header + payload
    assert frame_header(True, Opcode.BINARY, length) == header


def test_serialize_masked_frame() -> None:
    frame = Frame(True, Opcode.TEXT, b"Hello, world")
    data = serialize_frame(frame, mask=True)
    assert data[:2] == b"\x81\x8c"
    mask_key = data[2:6]
    assert apply_mask(data[6:], mask_key) == b"Hello, world"
    assert parse(data, mask=True) == frame
    with pytest.raises(WebSocketProtocolError, match="a server must not mask"):
        parse(data, mask=False)


def test_serialize_masked_uses_fresh_keys() -> None:
    frame = Frame(True, Opcode.BINARY, b"\x00" * 16)
    keys = {serialize_frame(frame, mask=True)[2:6] for _ in range(20)}
    assert len(keys) > 1


def test_frame_header_with_mask_key() -> None:
    assert frame_header(True, Opcode.TEXT, 5, mask_key=MASK_KEY) == b"\x81\x85" + MASK_KEY
    assert frame_header(False, Opcode.TEXT, 5, rsv1=True) == b"\x41\x05"
    assert frame_header(True, Opcode.BINARY, 126, mask_key=MASK_KEY) == b"\x82\xfe\x00\x7e" + MASK_KEY


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_serialize_rejects_fragmented_control_frame(opcode: Opcode) -> None:
    with pytest.raises(ValueError, match=f"a {opcode.name} frame can't be fragmented"):
        serialize_frame(Frame(False, opcode, b""), mask=False)


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_serialize_rejects_long_control_frame(opcode: Opcode) -> None:
    with pytest.raises(ValueError, match=f"a {opcode.name} payload is at most 125 bytes, got 126"):
        serialize_frame(Frame(True, opcode, b"x" * 126), mask=True)
    assert len(serialize_frame(Frame(True, opcode, b"x" * 125), mask=False)) == 127


@pytest.mark.parametrize("opcode", sorted(CONTROL_OPCODES))
def test_serialize_rejects_rsv1_on_control_frame(opcode: Opcode) -> None:
    # RFC 7692 §6.1: RSV1 has no meaning on control frames, and read_frame
    # rejects it even with permessage-deflate; serializing it must fail too
    # rather than emit a frame the peer will close the connection over.
    with pytest.raises(ValueError, match=f"RSV1 can't be set on a {opcode.name} frame"):
        serialize_frame(Frame(True, opcode, b"", rsv1=True), mask=False)


@pytest.mark.parametrize("rsv", [{"rsv2": True}, {"rsv3": True}])
def test_serialize_rejects_rsv2_rsv3(rsv: dict) -> None:
    with pytest.raises(ValueError, match="RSV2 and RSV3"):
        serialize_frame(Frame(True, Opcode.TEXT, b"", **rsv), mask=False)


# --- close payloads -------------------------------------------------------------------


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_close_valid_codes_round_trip(code: int) -> None:
    assert is_valid_close_code(code)
    payload = serialize_close(code, "bye")
    assert payload == struct.pack("!H", code) + b"bye"
    assert parse_close(payload) == (code, "bye")


def test_close_valid_code_set_is_exact() -> None:
    expected = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
    assert {code for code in range(0, 70000) if is_valid_close_code(code)} == expected


@pytest.mark.parametrize("code", INVALID_CODES)
def test_close_invalid_codes_rejected(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(WebSocketProtocolError, match=f"invalid close code {code}") as exc:
        parse_close(struct.pack("!H", code) + b"reason")
    assert exc.value.code == 1002
    with pytest.raises(ValueError, match=f"close code {code} can't be sent"):
        serialize_close(code)


def test_parse_close_empty_payload() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close(b"") == (CloseCode.NO_STATUS_RCVD, "")


def test_parse_close_code_only() -> None:
    assert parse_close(b"\x03\xe8") == (1000, "")
    assert serialize_close(1000) == b"\x03\xe8"


def test_parse_close_one_byte_payload() -> None:
    with pytest.raises(WebSocketProtocolError, match="close frame with a 1-byte payload") as exc:
        parse_close(b"\x03")
    assert exc.value.code == 1002


@pytest.mark.parametrize("reason", [b"\xff", b"caf\xc3", b"\xed\xa0\x80", b"ok\xc0\xaf"])
def test_parse_close_invalid_utf8_reason(reason: bytes) -> None:
    with pytest.raises(WebSocketProtocolError, match="close reason isn't valid UTF-8") as exc:
        parse_close(b"\x03\xe8" + reason)
    assert exc.value.code == 1007


def test_parse_close_utf8_reason_and_buffer_types() -> None:
    payload = b"\x03\xe9" + "café ☃".encode()
    assert parse_close(payload) == (1001, "café ☃")
    assert parse_close(bytearray(payload)) == (1001, "café ☃")
    assert parse_close(memoryview(payload)) == (1001, "café ☃")


def test_serialize_close_reason_limit() -> None:
    assert len(serialize_close(1000, "x" * 123)) == 125
    with pytest.raises(ValueError, match="close reason is 124 bytes in UTF-8; the limit is 123"):
        serialize_close(1000, "x" * 124)
    # The limit is in encoded bytes, not characters: 62 × 2 bytes = 124.
    with pytest.raises(ValueError, match="124 bytes"):
        serialize_close(1000, "é" * 62)
    assert parse_close(serialize_close(4000, "é" * 61)) == (4000, "é" * 61)


def test_close_payload_fits_a_close_frame() -> None:
    payload = serialize_close(1000, "x" * 123)
    data = serialize_frame(Frame(True, Opcode.CLOSE, payload), mask=True)
    assert parse_close(parse(data, mask=True).data) == (1000, "x" * 123)


@pytest.mark.parametrize("code, text", [
    (1000, "OK"),
    (1001, "going away"),
    (1002, "protocol error"),
    (1003, "unsupported data"),
    (1005, "no status received"),
    (1006, "abnormal closure"),
    (1007, "invalid frame payload data"),
    (1008, "policy violation"),
    (1009, "message too big"),
    (1010, "mandatory extension"),
    (1011, "internal error"),
    (1012, "service restart"),
    (1013, "try again later"),
    (1014, "bad gateway"),
    (1015, "TLS handshake failure"),
    (3000, "registered"),
    (3999, "registered"),
    (4000, "private use"),
    (4999, "private use"),
    (1004, "unknown"),
    (999, "unknown"),
    (2999, "unknown"),
    (5000, "unknown"),
])
def test_describe_close_code(code: int, text: str) -> None:
    assert describe_close_code(code) == text


# --- property tests -----------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    opcode = draw(st.sampled_from(sorted(DATA_OPCODES | CONTROL_OPCODES)))
    if opcode in CONTROL_OPCODES:
        return Frame(True, opcode, draw(st.binary(max_size=125)))
    return Frame(
        draw(st.booleans()), opcode, draw(st.binary(max_size=4096)), rsv1=draw(st.booleans())
    )


@given(frame=frames(), mask=st.booleans())
@settings(max_examples=300, deadline=None)
def test_serialize_read_round_trip(frame: Frame, mask: bool) -> None:
    data = serialize_frame(frame, mask=mask)
    read_exact = exact_reader(data)
    assert read_frame(read_exact, mask=mask, allow_rsv1=True) == frame
    with pytest.raises(EOFError):
        read_exact(1)  # exactly the serialized bytes were consumed


@given(length=st.integers(min_value=0, max_value=70_000), mask=st.booleans())
@settings(max_examples=30, deadline=None)
def test_round_trip_around_length_boundaries(length: int, mask: bool) -> None:
    frame = Frame(True, Opcode.BINARY, bytes(length))
    assert parse(serialize_frame(frame, mask=mask), mask=mask) == frame


@given(
    data=st.one_of(
        st.binary(max_size=200),
        # Start from a plausible header so that the fuzzer gets past it often.
        st.builds(
            lambda first, second, rest: bytes([first, second]) + rest,
            st.integers(0, 255),
            st.integers(0, 255),
            st.binary(max_size=200),
        ),
    ),
    mask=st.booleans(),
    allow_rsv1=st.booleans(),
    max_size=st.one_of(st.none(), st.integers(0, 300)),
)
@settings(max_examples=1000, deadline=None)
def test_read_frame_fuzz_raises_only_documented_errors(
    data: bytes, mask: bool, allow_rsv1: bool, max_size: Optional[int]
) -> None:
    try:
        frame = read_frame(exact_reader(data), mask=mask, max_size=max_size, allow_rsv1=allow_rsv1)
    except (WebSocketProtocolError, PayloadTooBig, EOFError):
        return
    assert isinstance(frame.opcode, Opcode)
    if max_size is not None:
        assert len(frame.data) <= max_size
    if frame.opcode in CONTROL_OPCODES:
        assert frame.fin and not frame.rsv1 and len(frame.data) <= 125
    assert not frame.rsv2 and not frame.rsv3
    assert allow_rsv1 or not frame.rsv1
