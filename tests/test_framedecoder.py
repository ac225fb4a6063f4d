"""Socket-free tests of syncws.framedecoder: bytes in, frames out.

The decoder is tested with a sink that only records frames (no protocol
rule but the header's own), against :func:`syncws.framing.read_frame`, the
reference parser, and with each implementation of its fast path (none, the
Python one, the C one); then with the connection core as its sink, for what
it says about its input (:attr:`FrameDecoder.simple_input`).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core_helpers import make, no_sockets, peer_frame, property_settings, raw_frame, reader  # noqa: F401  (an autouse fixture)
from syncws import framedecoder, framing
from syncws.exceptions import WebSocketProtocolError
from syncws.framedecoder import FrameDecoder, PartialFrame
from syncws.framing import Frame, Opcode, encode_frame, read_frame, serialize_close
from syncws.masking import apply_mask_inplace

NO_LIMIT = 2**63

try:
    from syncws import _speedups
except ImportError:
    _speedups = None


def no_fast_path(buffer: Any, position: int, end: int, masked: bool, limit: int, out: List[Any]) -> int:
    """A parse_simple_frames that parses nothing: every frame takes the general path."""
    return position


PARSERS: List[Tuple[str, Callable[..., int]]] = [
    ("none", no_fast_path),
    ("python", framing.py_parse_simple_frames),
]
if _speedups is not None:
    PARSERS.append(("c", _speedups.parse_simple_frames))


class RecordingSink:
    """A sink that records the frames it is handed, applying only check_header's rules.

    Partial frames start with a 3-byte buffer, so that it grows as they arrive.
    """

    def __init__(self, masked: bool) -> None:
        self.masked = masked
        self.can_send = True
        self.input_closed = False
        self.frames: List[Frame] = []
        self.errors: List[Exception] = []

    def check_header(self, first: int, second: int, length: int) -> Opcode:
        return framing.check_header(first, second, length, mask=self.masked, allow_rsv1=True)

    def receive_frame(self, fin: bool, opcode: Opcode, rsv1: bool, payload: Any, events: List[Any]) -> None:
        frame = Frame(fin, opcode, bytes(payload), rsv1)
        self.frames.append(frame)
        events.append(frame)

    def start_partial(
        self, fin: bool, opcode: Opcode, rsv1: bool, length: int, mask_key: Optional[bytes]
    ) -> PartialFrame:
        self.started = Frame(fin, opcode, b"", rsv1)
        return PartialFrame(fin, length, mask_key, True, 3)

    def process_partial(self, partial: PartialFrame, events: List[Any]) -> None:
        assert partial.buffer is not None
        start, end = partial.processed, partial.received
        if partial.mask_key is not None and end > start:
            offset = start % 4
            with memoryview(partial.buffer)[start:end] as view:
                apply_mask_inplace(view, partial.mask_key[offset:] + partial.mask_key[:offset])
        partial.processed = end

    def end_partial(self, partial: PartialFrame, events: List[Any]) -> None:
        frame = self.started._replace(data=partial.take_payload())
        self.frames.append(frame)
        events.append(frame)

    def end_input(self, events: List[Any], error: Optional[Exception]) -> None:
        if error is not None:
            # As the core fails the connection: nothing more is parsed.
            self.errors.append(error)
            self.input_closed, self.can_send = True, False


def as_frame(event: Any) -> Frame:
    """A fast-path message as the frame it came in."""
    if isinstance(event, str):
        return Frame(True, Opcode.TEXT, event.encode())
    if isinstance(event, bytes):
        return Frame(True, Opcode.BINARY, event)
    assert isinstance(event, Frame)
    return event


def decode(chunks: List[bytes], masked: bool, parser: Callable[..., int], limit: int = NO_LIMIT) -> Tuple[Any, ...]:
    """Feed ``chunks`` to a decoder using ``parser`` for its fast path; what came out."""
    sink = RecordingSink(masked)
    with mock.patch.object(framedecoder, "parse_simple_frames", parser):
        decoder = FrameDecoder(masked=masked, simple_limit=limit)
        frames = [as_frame(event) for chunk in chunks for event in decoder.receive_data(chunk, sink)]
    return frames, [str(error) for error in sink.errors], decoder.bytes_received


def reference(data: bytes, masked: bool) -> Tuple[List[Frame], List[str]]:
    """The frames read_frame finds in ``data``, and the error it stops on."""
    read_exact = reader(data)
    frames: List[Frame] = []
    while True:
        try:
            frame = read_frame(read_exact, mask=masked, allow_rsv1=True)
        except EOFError:
            break
        except WebSocketProtocolError as exc:
            return frames, [str(exc)]
        frames.append(frame._replace(data=bytes(frame.data)))
    return frames, []


PROPERTY = property_settings(200)

TEXTS = st.one_of(st.text(max_size=40).map(str.encode), st.binary(max_size=40))


@st.composite
def frame_stream(draw: st.DrawFn) -> Tuple[bool, List[bytes]]:
    """Frames as a peer sends them (valid and not), split anywhere."""
    masked = draw(st.booleans())
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        opcode = draw(st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3]))
        fin = draw(st.booleans()) if opcode < 0x8 else draw(st.sampled_from([True, True, True, False]))
        size = draw(st.sampled_from([0, 1, 5, 125, 126, 300, 70000]))
        payload = draw(TEXTS) if size < 126 and opcode == 0x1 else bytes(range(256)) * (size // 256) + b"p" * (size % 256)
        if opcode >= 0x8:
            payload = payload[: draw(st.sampled_from([0, 125, 126]))]
        wrong_mask = draw(st.integers(0, 20)) == 0
        key = draw(st.binary(min_size=4, max_size=4)) if masked != wrong_mask else None
        # Encoded as a binary frame, then given its first byte: encode_frame
        # refuses broken control frames.
        header, body = encode_frame(True, Opcode.BINARY, payload, mask_key=key)
        first = (0x80 if fin else 0) | (0x40 if draw(st.booleans()) else 0) | opcode
        parts.append(bytes([first]) + header[1:] + bytes(body))
    body = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
    return masked, [body[start:stop] for start, stop in zip([0] + cuts, cuts + [len(body)])]


@PROPERTY
@given(case=frame_stream())
def test_decoder_matches_read_frame(case: Tuple[bool, List[bytes]]) -> None:
    # decode_header (the general path), parse_simple_frames in Python and
    # in C (the fast path) and read_frame: the same frames, the same error.
    masked, chunks = case
    frames, errors = reference(b"".join(chunks), masked)
    for name, parser in PARSERS:
        assert decode(chunks, masked, parser)[:2] == (frames, errors), name


@PROPERTY
@given(case=frame_stream(), limit=st.sampled_from([0, 5, 125, 300, NO_LIMIT]))
def test_fast_path_limit_changes_nothing(case: Tuple[bool, List[bytes]], limit: int) -> None:
    masked, chunks = case
    expected = decode(chunks, masked, no_fast_path)
    for name, parser in PARSERS:
        assert decode(chunks, masked, parser, limit) == expected, name


def masked_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    header, body = encode_frame(fin, opcode, payload, mask_key=b"\x01\x02\x03\x04")
    return header + bytes(body)


def test_bytes_received_counts_every_byte() -> None:
    sink = RecordingSink(True)
    decoder = FrameDecoder(masked=True, simple_limit=NO_LIMIT)
    data = masked_frame(0x1, b"hi") + masked_frame(0x9, b"p")
    decoder.receive_data(data[:3], sink)
    decoder.receive_data(data[3:], sink)
    assert decoder.bytes_received == len(data)
    assert decoder.simple_messages == 1 and sink.frames == [Frame(True, Opcode.PING, b"p")]
    decoder.receive_data(masked_frame(0x2, b"x"), sink)
    assert decoder.simple_messages == 2 and decoder.simple_input


def test_get_buffer_receives_a_large_payload_in_place() -> None:
    sink = RecordingSink(True)
    decoder = FrameDecoder(masked=True, simple_limit=NO_LIMIT)
    payload = bytes(range(256)) * 40
    data = masked_frame(0x2, payload)
    assert decoder.get_buffer() is None
    assert decoder.receive_data(data[:100], sink) == []
    received = 100
    while received < len(data):
        view = decoder.get_buffer()
        assert view is not None
        size = min(len(view), len(data) - received)
        view[:size] = data[received : received + size]
        view.release()
        events = decoder.buffer_updated(size, sink)
        received += size
    assert events == [Frame(True, Opcode.BINARY, payload)]
    assert decoder.get_buffer() is None and decoder.bytes_received == len(data)


def test_a_control_frame_waits_whole() -> None:
    sink = RecordingSink(True)
    decoder = FrameDecoder(masked=True, simple_limit=NO_LIMIT)
    data = masked_frame(0x9, b"ping")
    assert decoder.receive_data(data[:-1], sink) == []
    assert decoder.get_buffer() is None  # pending, not a partial frame
    assert decoder.receive_data(data[-1:], sink) == [Frame(True, Opcode.PING, b"ping")]


def test_discard_forgets_the_input_under_way() -> None:
    sink = RecordingSink(True)
    decoder = FrameDecoder(masked=True, simple_limit=NO_LIMIT)
    decoder.receive_data(masked_frame(0x1, b"x" * 300, fin=False)[:50], sink)
    assert decoder.partial is not None and decoder.in_message
    decoder.discard()
    assert decoder.partial is None and not decoder.in_message and decoder.get_buffer() is None


def test_nothing_is_parsed_once_input_is_closed() -> None:
    sink = RecordingSink(True)
    sink.input_closed, sink.can_send = True, False
    decoder = FrameDecoder(masked=True, simple_limit=NO_LIMIT)
    assert decoder.receive_data(masked_frame(0x1, b"x"), sink) == []
    assert decoder.bytes_received == 7 and not decoder.simple_input


# -- simple_input, with the core as the sink --------------------------------------------


@pytest.fixture(params=["server", "client"])
def side(request: pytest.FixtureRequest) -> str:
    """Each side of the connection."""
    return request.param  # type: ignore[no-any-return]


def test_simple_input_says_whole_messages_only(side: str) -> None:
    core = make(side)
    assert not core.decoder.simple_input
    assert core.receive_data(peer_frame(core, Opcode.TEXT, "a") + peer_frame(core, Opcode.BINARY, b"b")) == ["a", b"b"]
    assert core.decoder.simple_input
    assert core.messages_received == 2


@pytest.mark.parametrize(
    "after",
    [
        pytest.param(lambda core: peer_frame(core, Opcode.PING, b"p"), id="ping"),
        pytest.param(lambda core: peer_frame(core, Opcode.PONG, b"p"), id="pong"),
        pytest.param(lambda core: peer_frame(core, Opcode.TEXT, "f", fin=False), id="fragment"),
        pytest.param(lambda core: peer_frame(core, Opcode.TEXT, "cut")[:-1], id="cut-frame"),
        pytest.param(lambda core: peer_frame(core, Opcode.TEXT, "cut")[:1], id="cut-header"),
        pytest.param(lambda core: peer_frame(core, Opcode.CLOSE, serialize_close(1000, "")), id="close"),
        pytest.param(lambda core: raw_frame(core, 0x83), id="protocol-error"),
    ],
)
def test_simple_input_is_false_after_anything_else(side: str, after) -> None:  # type: ignore[no-untyped-def]
    core = make(side)
    core.receive_data(peer_frame(core, Opcode.TEXT, "a"))
    assert core.decoder.simple_input
    events = core.receive_data(peer_frame(core, Opcode.TEXT, "b") + after(core))
    assert events[0] == "b"
    assert not core.decoder.simple_input
    assert core.messages_received == 2


def test_simple_input_is_false_while_a_frame_or_header_is_pending(side: str) -> None:
    core = make(side)
    data = peer_frame(core, Opcode.TEXT, "hello")
    core.receive_data(data[:1])
    assert not core.decoder.simple_input
    assert core.receive_data(data[1:]) == ["hello"]
    assert not core.decoder.simple_input  # it ended a frame begun before
    assert core.receive_data(data) == ["hello"]
    assert core.decoder.simple_input


def test_simple_input_is_false_after_buffer_updated(side: str) -> None:
    core = make(side)
    payload = bytes(range(256)) * 300
    data = peer_frame(core, Opcode.BINARY, payload)
    core.receive_data(peer_frame(core, Opcode.TEXT, "a") + data[:1000])
    view = core.get_buffer()
    assert view is not None and not core.decoder.simple_input
    size = len(data) - 1000
    view[:size] = data[1000:]
    view.release()
    assert core.buffer_updated(size) == [payload]
    assert not core.decoder.simple_input
    core.receive_data(peer_frame(core, Opcode.TEXT, "b"))
    assert core.decoder.simple_input
    core.fail(1011, "gone")
    assert core.buffer_updated(1) == []
    assert not core.decoder.simple_input


def test_simple_input_is_false_after_our_close_frame(side: str) -> None:
    core = make(side)
    core.send_close()
    assert core.receive_data(peer_frame(core, Opcode.TEXT, "dropped")) == []
    assert not core.decoder.simple_input
