"""Tests for the hot paths of syncws.framing: parse_simple_frames, decode_header, pack_frame.

Every test runs on the pure-Python implementation and, whenever
``syncws._speedups`` imports, on the C one too (as in test_masking.py, CI
sets ``SYNCWS_REQUIRE_SPEEDUPS=1`` so that a missing extension fails there).
They are checked against independent references: :func:`read_frame` (the
general frame reader) for the parser, ``encode_frame``'s two parts joined for
the encoder; and the connection with its batch parser against the same
connection parsing every frame on its general path.
"""

from __future__ import annotations

import array
import io
import os
import struct
from typing import Any, Callable, List, NamedTuple, Optional, Tuple
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core_helpers import make, parse_frames, property_settings, reader
from syncws import framedecoder, framing
from syncws.exceptions import WebSocketProtocolError
from syncws.framing import Opcode, encode_frame, encode_frame_bytes, read_frame

try:
    from syncws import _speedups
except ImportError:
    _speedups = None


class Impl(NamedTuple):
    """One implementation of the two functions."""

    name: str
    parse_simple_frames: Callable[..., int]
    pack_frame: Callable[..., bytes]


IMPLS = [Impl("python", framing.py_parse_simple_frames, framing.py_pack_frame)]
if _speedups is not None:
    IMPLS.append(Impl("c", _speedups.parse_simple_frames, _speedups.pack_frame))


@pytest.fixture(params=IMPLS, ids=[impl.name for impl in IMPLS])
def impl(request: pytest.FixtureRequest) -> Impl:
    """Each available implementation in turn."""
    return request.param


PROPERTY = property_settings(150)

KEY = b"\x9a\x3c\x01\xf7"
NO_LIMIT = 2**63


def frame(
    first: int, payload: bytes, *, masked: bool, width: Optional[int] = None, mask_bit: Optional[bool] = None
) -> bytes:
    """A frame built by hand, independently of framing: any first byte, any length encoding.

    Args:
        width: the length encoding: 7, 16 or 64 bits; the shortest if ``None``.
        mask_bit: the mask bit to set, ``masked`` if ``None`` (the key and
            the masking follow ``masked`` either way).
    """
    length = len(payload)
    if width is None:
        width = 7 if length < 126 else 16 if length < 0x10000 else 64
    bit = (masked if mask_bit is None else mask_bit) and 0x80
    if width == 7:
        header = bytes([first, bit | length])
    elif width == 16:
        header = bytes([first, bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return header + payload
    return header + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


def parse(impl: Impl, buffer: Any, masked: bool, limit: int = NO_LIMIT, position: int = 0, end: Optional[int] = None) -> Tuple[int, List[Any]]:
    """Run the implementation's parser; return the position and the messages."""
    out: List[Any] = []
    position = impl.parse_simple_frames(buffer, position, len(buffer) if end is None else end, masked, limit, out)
    return position, out


# -- parse_simple_frames: what it parses ------------------------------------------


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 1000, 65535, 65536, 70001])
def test_parse_text_and_binary_each_length(impl: Impl, masked: bool, size: int) -> None:
    text = ("é" * size)[: size // 2] + "a" * (size % 2)
    binary = os.urandom(size)
    buffer = frame(0x81, text.encode(), masked=masked) + frame(0x82, binary, masked=masked)
    position, out = parse(impl, buffer, masked)
    assert position == len(buffer)
    assert out == [text, binary]
    assert type(out[0]) is str and type(out[1]) is bytes


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("width", [16, 64])
def test_parse_non_minimal_lengths(impl: Impl, masked: bool, width: int) -> None:
    buffer = frame(0x82, b"abc", masked=masked, width=width)
    assert parse(impl, buffer, masked) == (len(buffer), [b"abc"])


@pytest.mark.parametrize("buffer_type", [bytes, bytearray, memoryview])
def test_parse_any_bytes_like(impl: Impl, buffer_type: Any) -> None:
    buffer = frame(0x81, b"hi", masked=True) + frame(0x82, b"yo", masked=True)
    position, out = parse(impl, buffer_type(buffer), True)
    assert (position, out) == (len(buffer), ["hi", b"yo"])
    assert type(out[1]) is bytes


def test_parse_array_as_raw_bytes(impl: Impl) -> None:
    data = frame(0x82, b"abcdef", masked=False)
    data += bytes(-len(data) % 4)
    buffer = array.array("I", data)
    out: List[Any] = []
    assert impl.parse_simple_frames(buffer, 0, 8, False, NO_LIMIT, out) == 8
    assert out == [b"abcdef"]


def test_parse_appends_to_out(impl: Impl) -> None:
    out: List[Any] = ["before"]
    buffer = frame(0x81, b"x", masked=False)
    assert impl.parse_simple_frames(buffer, 0, len(buffer), False, NO_LIMIT, out) == len(buffer)
    assert out == ["before", "x"]


def test_parse_from_position_to_end_only(impl: Impl) -> None:
    one = frame(0x81, b"one", masked=True)
    two = frame(0x81, b"two", masked=True)
    buffer = b"junk" + one + two + one
    position, out = parse(impl, buffer, True, position=4, end=4 + len(one) + len(two))
    assert (position, out) == (4 + len(one) + len(two), ["one", "two"])


# -- parse_simple_frames: where it stops ------------------------------------------


@pytest.mark.parametrize(
    "first",
    [0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0x83, 0x8B, 0xC1, 0xA1, 0x91, 0xC2, 0xF2],
    ids=hex,
)
def test_parse_stops_at_other_first_bytes(impl: Impl, first: int) -> None:
    good = frame(0x82, b"ok", masked=True)
    buffer = good + frame(first, b"x", masked=True) + good
    assert parse(impl, buffer, True) == (len(good), [b"ok"])


@pytest.mark.parametrize("masked", [True, False])
def test_parse_stops_at_wrong_mask_bit(impl: Impl, masked: bool) -> None:
    good = frame(0x81, b"ok", masked=masked)
    buffer = good + frame(0x81, b"x", masked=not masked) + good
    assert parse(impl, buffer, masked) == (len(good), ["ok"])


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("size", [0, 10, 125, 126, 1000, 65536])
def test_parse_limit_is_inclusive(impl: Impl, masked: bool, size: int) -> None:
    buffer = frame(0x82, bytes(size), masked=masked)
    assert parse(impl, buffer, masked, limit=size) == (len(buffer), [bytes(size)])
    assert parse(impl, buffer, masked, limit=size - 1) == (0, [])


def test_parse_negative_limit_accepts_nothing(impl: Impl) -> None:
    buffer = frame(0x82, b"", masked=False)
    assert parse(impl, buffer, False, limit=-1) == (0, [])
    assert parse(impl, buffer, False, limit=-(2**70)) == (0, [])


def test_parse_huge_limit_is_no_limit(impl: Impl) -> None:
    buffer = frame(0x82, b"x", masked=False)
    assert parse(impl, buffer, False, limit=2**100) == (len(buffer), [b"x"])


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("size", [5, 200, 70000])
def test_parse_stops_at_each_cut(impl: Impl, masked: bool, size: int) -> None:
    good = frame(0x81, b"ok", masked=masked)
    cut = frame(0x82, bytes(size), masked=masked)
    # Every cut of the header, then a few of the payload.
    header_size = len(cut) - size
    for end in list(range(header_size + 1)) + [header_size + 1, len(cut) - 1]:
        buffer = good + cut[:end] + good  # bytes past end must not be read
        position, out = parse(impl, buffer, masked, end=len(good) + end)
        assert (position, out) == (len(good), ["ok"]), end


def test_parse_length_with_top_bit_set_stops(impl: Impl) -> None:
    buffer = b"\x82\x7f" + struct.pack("!Q", 2**63) + b"x" * 20
    assert parse(impl, buffer, False) == (0, [])
    buffer = b"\x82\x7f" + struct.pack("!Q", 2**64 - 1) + b"x" * 20
    assert parse(impl, buffer, False) == (0, [])


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize(
    "payload", [b"\xff", b"\xc3", b"abc\xed\xa0\x80", b"\xf4\x90\x80\x80", b"caf\xc3\xa9\xc0"]
)
def test_parse_stops_before_invalid_utf8(impl: Impl, masked: bool, payload: bytes) -> None:
    good = frame(0x81, "café".encode(), masked=masked)
    buffer = good + frame(0x81, payload, masked=masked) + good
    assert parse(impl, buffer, masked) == (len(good), ["café"])
    # In binary, the same bytes are fine.
    buffer = frame(0x82, payload, masked=masked)
    assert parse(impl, buffer, masked) == (len(buffer), [payload])


def test_parse_empty_and_one_byte(impl: Impl) -> None:
    assert parse(impl, b"", True) == (0, [])
    assert parse(impl, b"\x81", True) == (0, [])


# -- parse_simple_frames: argument errors -----------------------------------------


@pytest.mark.parametrize(
    "position, end", [(-1, 2), (3, 2), (0, 5), (5, 5), (2**70, 2**70), (0, 2**70), (-(2**70), 0)]
)
def test_parse_position_and_end_out_of_range(impl: Impl, position: int, end: int) -> None:
    with pytest.raises(ValueError, match=r"expected 0 <= position <= end <= len\(buffer\) = 4"):
        impl.parse_simple_frames(b"\x82\x00\x82\x00", position, end, False, NO_LIMIT, [])


def test_parse_range_error_message_is_the_same(impl: Impl) -> None:
    with pytest.raises(ValueError) as info:
        impl.parse_simple_frames(b"ab", 1, 3, False, NO_LIMIT, [])
    assert str(info.value) == "expected 0 <= position <= end <= len(buffer) = 2, got position=1, end=3"


@pytest.mark.parametrize("out", [(), None, {}, type("L", (list,), {})()])
def test_parse_out_must_be_a_list(impl: Impl, out: Any) -> None:
    with pytest.raises(TypeError, match=r"out must be a list, got "):
        impl.parse_simple_frames(b"", 0, 0, False, NO_LIMIT, out)


@pytest.mark.parametrize("buffer", ["text", 42, None])
def test_parse_buffer_must_be_bytes_like(impl: Impl, buffer: Any) -> None:
    with pytest.raises(TypeError):
        impl.parse_simple_frames(buffer, 0, 0, False, NO_LIMIT, [])


def test_parse_buffer_must_be_contiguous(impl: Impl) -> None:
    with pytest.raises(TypeError, match="buffer must be C-contiguous, got a strided memoryview"):
        impl.parse_simple_frames(memoryview(b"\x82\x00\x82\x00")[::2], 0, 0, False, NO_LIMIT, [])


# -- parse_simple_frames against the general frame reader -------------------------


def reference_parse(buffer: bytes, position: int, end: int, masked: bool, limit: int) -> Tuple[int, List[Any]]:
    """What parse_simple_frames must do, written with read_frame, for obviousness."""
    stream = io.BytesIO(buffer[position:end])

    def read_exact(size: int) -> bytes:
        data = stream.read(size)
        if len(data) < size:
            raise EOFError
        return data

    out: List[Any] = []
    parsed = 0  # bytes of the frames taken so far
    while True:
        try:
            fin, opcode, data, rsv1, rsv2, rsv3 = read_frame(read_exact, mask=masked, allow_rsv1=True)
        except (EOFError, WebSocketProtocolError):
            break
        if not fin or rsv1 or opcode not in (Opcode.TEXT, Opcode.BINARY) or len(data) > limit:
            break
        if opcode is Opcode.TEXT:
            try:
                out.append(bytes(data).decode())
            except UnicodeDecodeError:
                break
        else:
            out.append(bytes(data))
        parsed = stream.tell()
    return position + parsed, out


@st.composite
def frame_bytes(draw: st.DrawFn, masked: bool) -> Tuple[bytes, int]:
    """One frame as a peer may send it (mostly simple, sometimes anything else), and its payload length."""
    first = draw(
        st.one_of(
            st.sampled_from([0x81, 0x82]),
            st.sampled_from([0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0xC2, 0xA1, 0x92, 0x83]),
            st.integers(0, 255),
        )
    )
    payload = draw(
        st.one_of(
            st.text(max_size=40).map(str.encode),
            st.binary(max_size=40),
            st.sampled_from([b"\xff", b"ab\xc3", b"\xed\xa0\x80", b"\xf0\x9f\x98"]),
            st.integers(120, 300).map(lambda n: ("é" * n).encode()[:n]),
            st.just(b"z" * 65536),
        )
    )
    width = draw(st.sampled_from([None, None, None, 16, 64]))
    if width == 16 and len(payload) > 0xFFFF:
        width = None
    mask_bit = draw(st.sampled_from([masked] * 9 + [not masked]))
    return frame(first, payload, masked=masked, width=width, mask_bit=mask_bit), len(payload)


def limits(lengths: List[int]) -> st.SearchStrategy[int]:
    """Limits for frames of these payload lengths: often one of them, as the limit is inclusive."""
    return st.one_of(
        st.sampled_from([NO_LIMIT, 2**100, 0, 125, 126, 65535, 65536, -1]),
        st.sampled_from(lengths or [0]).flatmap(lambda n: st.sampled_from([n - 1, n, n + 1])),
    )


@st.composite
def parse_case(draw: st.DrawFn) -> Tuple[bytes, int, int, bool, int]:
    """A buffer of frames with junk around it, the range to parse, the side and the limit."""
    masked = draw(st.booleans())
    frames = draw(st.lists(frame_bytes(masked), max_size=8))
    before = draw(st.binary(max_size=3))
    body = b"".join(data for data, _ in frames)
    cut = draw(st.sampled_from([len(body), len(body), draw(st.integers(0, len(body)))]))
    after = draw(st.binary(max_size=12))
    limit = draw(limits([length for _, length in frames]))
    return before + body + after, len(before), len(before) + cut, masked, limit


@PROPERTY
@given(case=parse_case())
def test_parse_matches_read_frame(case: Tuple[bytes, int, int, bool, int]) -> None:
    buffer, position, end, masked, limit = case
    expected = reference_parse(buffer, position, end, masked, limit)
    for impl in IMPLS:
        out: List[Any] = []
        result = impl.parse_simple_frames(buffer, position, end, masked, limit, out)
        assert (result, out) == expected, impl.name
        assert [type(message) for message in out] == [type(message) for message in expected[1]], impl.name


# -- decode_header, the connection's header decoder, against read_frame --------------


def read_one(data: bytes, masked: bool) -> Any:
    """read_frame on ``data``: the frame, or the exception it raised."""
    try:
        return read_frame(reader(data), mask=masked, allow_rsv1=True)
    except (EOFError, WebSocketProtocolError) as exc:
        return exc


@st.composite
def header_case(draw: st.DrawFn) -> Tuple[bytes, int, int]:
    """A frame (of any first byte, either mask bit) with junk before it, and where the bytes end."""
    data, _ = draw(frame_bytes(draw(st.booleans())))
    before = draw(st.binary(max_size=3))
    buffer = before + data + draw(st.binary(max_size=5))
    end = draw(st.sampled_from([len(buffer), len(before) + len(data), draw(st.integers(len(before), len(buffer)))]))
    return buffer, len(before), end


@PROPERTY
@given(case=header_case())
def test_decode_header_matches_read_frame(case: Tuple[bytes, int, int]) -> None:
    buffer, position, end = case
    masked = bool(len(buffer) > position + 1 and buffer[position + 1] & 0x80)
    header = framing.decode_header(buffer, position, end)
    expected = read_one(buffer[position:end], masked)
    if header is None:
        # Not whole: read_frame runs out of bytes (or refuses the first two
        # bytes, which it checks first).
        assert isinstance(expected, (EOFError, WebSocketProtocolError))
        if isinstance(expected, WebSocketProtocolError):
            first, second = buffer[position : position + 2]
            with pytest.raises(WebSocketProtocolError, match=str(expected)):
                framing.check_header(first, second, second & 0x7F, mask=masked, allow_rsv1=True)
        return
    first, second, length, start, mask_key = header
    assert (mask_key is not None) == masked
    try:
        opcode = framing.check_header(first, second, length, mask=masked, allow_rsv1=True)
    except WebSocketProtocolError as exc:
        assert isinstance(expected, WebSocketProtocolError) and str(expected) == str(exc)
        return
    if start + length > end:
        assert isinstance(expected, EOFError)
        return
    payload = buffer[start : start + length]
    if mask_key is not None:
        payload = framing.apply_mask(payload, mask_key)
    fin, rsv1, rsv2, rsv3 = (bool(first & bit) for bit in (0x80, 0x40, 0x20, 0x10))
    assert expected == framing.Frame(fin, opcode, payload, rsv1, rsv2, rsv3)


# -- the decoder: batch parser against its general path alone ---------------------


def general_path_only(buffer: Any, position: int, end: int, masked: bool, limit: int, out: List[Any]) -> int:
    """A parse_simple_frames that parses nothing: every frame takes the general path."""
    return position


def run_core(side: str, limit: Optional[int], chunks: List[bytes], parser: Callable[..., int]) -> Tuple[Any, ...]:
    """Feed ``chunks`` to a fresh core whose decoder parses with ``parser``; return all it did."""
    with mock.patch.object(framedecoder, "parse_simple_frames", parser):
        core = make(side, max_message_size=limit)
        events = [core.receive_data(chunk) for chunk in chunks]
    sent = parse_frames(b"".join(bytes(part) for part in core.data_to_send()), masked=core.is_client)
    return (
        events,
        sent,
        core.messages_received,
        core.bytes_received,
        core.state,
        core.close_rcvd,
        core.close_sent,
        core.input_closed,
    )


@st.composite
def core_case(draw: st.DrawFn) -> Tuple[str, Optional[int], List[bytes]]:
    """Frames as a client or server peer sends them, split into receives."""
    side = draw(st.sampled_from(["server", "client"]))
    masked = side == "server"
    frames = draw(st.lists(frame_bytes(masked), max_size=8))
    body = b"".join(data for data, _ in frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    chunks = [body[start:stop] for start, stop in zip([0] + cuts, cuts + [len(body)])]
    limit = draw(st.one_of(st.none(), limits([length for _, length in frames]).filter(lambda n: 0 <= n < 2**63)))
    return side, limit, chunks


@PROPERTY
@given(case=core_case())
def test_core_batch_parser_changes_nothing(case: Tuple[str, Optional[int], List[bytes]]) -> None:
    """The decoder's fast path (its first step and its loop's) against its general path alone."""
    side, limit, chunks = case
    expected = run_core(side, limit, chunks, general_path_only)
    for impl in IMPLS:
        assert run_core(side, limit, chunks, impl.parse_simple_frames) == expected, impl.name


# -- pack_frame --------------------------------------------------------------------


SIZES = [0, 1, 3, 4, 5, 17, 125, 126, 127, 1000, 65535, 65536, 70001]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mask_key", [None, KEY], ids=["unmasked", "masked"])
@pytest.mark.parametrize("first", [0x81, 0x82, 0x01, 0x00, 0x80, 0xC1, 0x89, 0x8A, 0x88])
def test_pack_matches_encode_frame(impl: Impl, size: int, mask_key: Optional[bytes], first: int) -> None:
    payload = os.urandom(size)
    opcode = first & 0x0F
    if opcode >= Opcode.CLOSE:
        payload = payload[:125]
    header, body = encode_frame(bool(first & 0x80), opcode, payload, rsv1=bool(first & 0x40), mask_key=mask_key)
    packed = impl.pack_frame(first, payload, mask_key)
    assert type(packed) is bytes
    assert packed == header + bytes(body)
    assert packed == frame(first, payload, masked=mask_key is not None)


@pytest.mark.parametrize("payload_type", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("key_type", [bytes, bytearray, memoryview])
def test_pack_any_bytes_like(impl: Impl, payload_type: Any, key_type: Any) -> None:
    packed = impl.pack_frame(0x82, payload_type(b"hello"), key_type(KEY))
    assert packed == frame(0x82, b"hello", masked=True)
    assert impl.pack_frame(0x82, payload_type(b"hello"), None) == frame(0x82, b"hello", masked=False)


@pytest.mark.parametrize("mask_key", [None, KEY], ids=["unmasked", "masked"])
def test_pack_strided_and_wide_payloads(impl: Impl, mask_key: Optional[bytes]) -> None:
    data = bytes(range(200))
    assert impl.pack_frame(0x82, memoryview(data)[::2], mask_key) == frame(0x82, data[::2], masked=mask_key is not None)
    wide = array.array("I", range(50))
    assert impl.pack_frame(0x82, wide, mask_key) == frame(0x82, wide.tobytes(), masked=mask_key is not None)


def test_pack_first_byte_accepts_an_index(impl: Impl) -> None:
    class Index:
        def __index__(self) -> int:
            return 0x81

    assert impl.pack_frame(Index(), b"x", None) == b"\x81\x01x"
    assert impl.pack_frame(True, b"", None) == b"\x01\x00"


@pytest.mark.parametrize("first", [-1, 256, 2**70, -(2**70)])
def test_pack_first_byte_out_of_range(impl: Impl, first: int) -> None:
    with pytest.raises(ValueError) as info:
        impl.pack_frame(first, b"", None)
    assert str(info.value) == f"the first header byte must be in 0..255, got {first}"


@pytest.mark.parametrize("first", [1.0, "1", None])
def test_pack_first_byte_not_an_integer(impl: Impl, first: Any) -> None:
    with pytest.raises(TypeError):
        impl.pack_frame(first, b"", None)


@pytest.mark.parametrize("mask_key", [b"", b"abc", b"abcde", bytearray(5)])
def test_pack_mask_key_length(impl: Impl, mask_key: bytes) -> None:
    with pytest.raises(ValueError) as info:
        impl.pack_frame(0x82, b"x", mask_key)
    assert str(info.value) == f"mask must be exactly 4 bytes long, got {len(mask_key)} bytes"


@pytest.mark.parametrize("pool_type", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("size", [0, 5, 200])
def test_pack_takes_the_key_at_an_offset_of_a_pool(impl: Impl, pool_type: Any, size: int) -> None:
    pool = os.urandom(64)
    payload = os.urandom(size)
    for offset in (0, 1, 31, 60):
        key = pool[offset : offset + 4]
        assert impl.pack_frame(0x82, payload, pool_type(pool), offset) == impl.pack_frame(0x82, payload, key)
    # Without a key, there is nothing to take: the offset doesn't matter.
    assert impl.pack_frame(0x82, payload, None, 12) == frame(0x82, payload, masked=False)


@pytest.mark.parametrize("offset", [-1, 61, 64, 2**40])
def test_pack_key_offset_out_of_the_pool(impl: Impl, offset: int) -> None:
    with pytest.raises(ValueError) as info:
        impl.pack_frame(0x82, b"x", bytes(64), offset)
    assert str(info.value) == f"no 4-byte mask at offset {offset} of 64 bytes"


@pytest.mark.parametrize("offset", [1.0, "1"])
def test_pack_key_offset_not_an_integer(impl: Impl, offset: Any) -> None:
    with pytest.raises(TypeError):
        impl.pack_frame(0x82, b"x", bytes(64), offset)


@pytest.mark.parametrize("payload, mask_key", [(42, KEY), (42, None), (b"x", "abcd"), (b"x", 1234), ("x", "abcd")])
def test_pack_not_bytes_like(impl: Impl, payload: Any, mask_key: Any) -> None:
    with pytest.raises(TypeError):
        impl.pack_frame(0x82, payload, mask_key)


class Text(str):
    """A str subclass: packed as its UTF-8 too."""


@pytest.mark.parametrize("size", [0, 1, 125, 126, 1000, 65535, 65536, 70001])
@pytest.mark.parametrize("mask_key", [None, KEY], ids=["unmasked", "masked"])
@pytest.mark.parametrize("chars", ["a", "\u00e9", "\u20ac", "\U0001f600", "a\u00e9"], ids=["ascii", "latin1", "bmp", "astral", "mixed"])
def test_pack_a_str_as_its_utf8(impl: Impl, size: int, mask_key: Optional[bytes], chars: str) -> None:
    text = (chars * size)[:size]
    for payload in (text, Text(text)):
        assert impl.pack_frame(0x81, payload, mask_key) == impl.pack_frame(0x81, text.encode(), mask_key)
    pool = os.urandom(64)
    assert impl.pack_frame(0x81, text, pool, 8) == impl.pack_frame(0x81, text.encode(), pool[8:12])


@pytest.mark.parametrize("mask_key", [None, KEY, b"abc"], ids=["unmasked", "masked", "bad key"])
def test_pack_a_lone_surrogate(impl: Impl, mask_key: Optional[bytes]) -> None:
    # Encoding comes first, in both versions: a bad key too raises this.
    with pytest.raises(UnicodeEncodeError):
        impl.pack_frame(0x81, "a\ud800", mask_key)


# -- encode_frame_bytes -------------------------------------------------------------


@PROPERTY
@given(
    fin=st.booleans(),
    opcode=st.sampled_from(list(Opcode)),
    payload=st.one_of(st.binary(max_size=300), st.just(b"y" * 65536)),
    rsv1=st.booleans(),
    masked=st.booleans(),
)
def test_encode_frame_bytes_is_encode_frame_joined(
    fin: bool, opcode: Opcode, payload: bytes, rsv1: bool, masked: bool
) -> None:
    mask_key = KEY if masked else None
    try:
        header, body = encode_frame(fin, opcode, payload, rsv1=rsv1, mask_key=mask_key)
    except ValueError as exc:
        with pytest.raises(ValueError) as info:
            encode_frame_bytes(fin, opcode, payload, rsv1=rsv1, mask_key=mask_key)
        assert str(info.value) == str(exc)
        return
    assert encode_frame_bytes(fin, opcode, payload, rsv1=rsv1, mask_key=mask_key) == header + bytes(body)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("shape", [(300, 2), (70000, 2)], ids=["short", "long"])
def test_encode_frame_counts_a_memoryview_in_bytes(shape: Tuple[int, int], masked: bool) -> None:
    """A view of several dimensions (len() counts its rows) is framed with
    its length in bytes, by both serializers."""
    rows, width = shape
    data = bytes(range(256)) * (rows * width // 256) + bytes(rows * width % 256)
    view = memoryview(data).cast("B", shape)
    assert len(view) == rows
    mask_key = KEY if masked else None
    header, body = encode_frame(True, Opcode.BINARY, view, mask_key=mask_key)
    frame = read_frame(io.BytesIO(header + bytes(body)).read, mask=masked, max_size=None)
    assert frame.data == data
    assert encode_frame_bytes(True, Opcode.BINARY, view, mask_key=mask_key) == header + bytes(body)


def test_public_names_pick_one_implementation() -> None:
    if framing.SPEEDUPS is not None:
        assert framing.parse_simple_frames is framing.SPEEDUPS.parse_simple_frames
        assert framing.pack_frame is framing.SPEEDUPS.pack_frame
    else:
        assert framing.parse_simple_frames is framing.py_parse_simple_frames
        assert framing.pack_frame is framing.py_pack_frame
