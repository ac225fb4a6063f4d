"""Hypothesis properties of syncws.core, and a bounded fuzz run for CI.

* Splitting is invisible: any interleaving of fragmented messages, pings,
  pongs and a final close, serialized as the peer sends it and split at
  arbitrary byte boundaries (fed with ``receive_data`` or through
  ``get_buffer``/``buffer_updated``), gives the same messages, pongs, close
  and output as the stream fed whole, on both sides, with and without
  permessage-deflate.
* What one core sends (messages in fragments, compressed or not, pings,
  pongs, a close), another core of the other side reads back, split anyhow;
  its answers resolve the first core's pings.
* Arbitrary input never raises: errors come out as one :class:`Failed` event,
  after which input yields nothing, and what the core sends stays a valid
  sequence of frames.

The default run is derandomized and small (a few seconds).
``SYNCWS_FUZZ_EXAMPLES=N`` runs the fuzz tests with ``N`` random examples
each, e.g. in CI::

    SYNCWS_FUZZ_EXAMPLES=2000 python3 -m pytest -q tests/test_core_properties.py -k fuzz
"""

from __future__ import annotations

import os
import random
from typing import Any, List, NamedTuple, Optional, Tuple, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core_helpers import (  # noqa: F401  (no_sockets is an autouse fixture)
    join_messages,
    make,
    no_sockets,
    output,
    parse_frames,
    peer_deflate,
    peer_frame,
    property_settings,
    raw_frame,
)
from syncws.core import CloseReceived, ConnectionCore, Failed, Fragment, PongReceived, State
from syncws.exceptions import ConnectionClosed
from syncws.framing import Frame, Opcode, serialize_close

FUZZ_EXAMPLES = int(os.environ.get("SYNCWS_FUZZ_EXAMPLES", "0"))

# Small and reproducible by default; random and long when fuzzing.
PROPERTY = property_settings(40)
FUZZ = property_settings(FUZZ_EXAMPLES or 100, derandomize=not FUZZ_EXAMPLES)
# pytest-timeout's 60 s per test would stop a long fuzz run: allow 100 ms an example
# (about 6 ms each on an idle core), for a loaded CI machine.
FUZZ_TIMEOUT = pytest.mark.timeout(max(60, FUZZ_EXAMPLES // 10))

SIDES = st.sampled_from(["client", "server"])
SENDABLE_CODES = st.one_of(
    st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]),
    st.integers(3000, 4999),
)


# -- a peer's stream -------------------------------------------------------------------


class Message(NamedTuple):
    """A message the peer sends: its data, cut into frames, maybe compressed."""

    data: Union[str, bytes]
    cuts: List[int]
    compressed: bool


class Control(NamedTuple):
    """A ping or pong the peer sends."""

    opcode: Opcode
    payload: bytes


Item = Union[Message, Control]


@st.composite
def messages(draw: Any, deflate: bool) -> Message:
    """A text or binary message cut at arbitrary byte offsets into 1 to 5 frames."""
    if draw(st.booleans()):
        data: Union[str, bytes] = draw(st.text(max_size=40))
        size = len(data.encode())  # type: ignore[union-attr]
    else:
        data = draw(st.binary(max_size=60))
        size = len(data)
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=4)))
    return Message(data, cuts, deflate and draw(st.booleans()))


controls = st.builds(
    Control, st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125)
)


@st.composite
def conversations(draw: Any, deflate: bool) -> Tuple[List[Tuple[Item, List[Control]]], Any]:
    """Messages, each with control frames to put between its frames; a final close."""
    items = draw(
        st.lists(
            st.tuples(st.one_of(messages(deflate), controls), st.lists(controls, max_size=3)),
            max_size=6,
        )
    )
    close = draw(
        st.one_of(
            st.none(),
            st.just(b""),
            st.builds(serialize_close, SENDABLE_CODES, st.text(max_size=20)),
        )
    )
    return items, close


def serialize(
    core: ConnectionCore, items: List[Tuple[Item, List[Control]]], close: Optional[bytes]
) -> Tuple[bytes, List[Union[str, bytes]], List[bytes], List[bytes]]:
    """The bytes the peer of ``core`` sends; the messages, pings and pongs in them."""
    codec = peer_deflate(core)
    stream = []
    sent_messages: List[Union[str, bytes]] = []
    pings: List[bytes] = []
    pongs: List[bytes] = []

    def control(item: Control) -> None:
        stream.append(peer_frame(core, item.opcode, item.payload))
        (pings if item.opcode is Opcode.PING else pongs).append(item.payload)

    for item, interleaved in items:
        if isinstance(item, Control):
            control(item)
            for extra in interleaved:
                control(extra)
            continue
        text = isinstance(item.data, str)
        raw = item.data.encode() if isinstance(item.data, str) else item.data
        bounds = [0] + item.cuts + [len(raw)]
        frames = [raw[start:end] for start, end in zip(bounds, bounds[1:])]
        for index, payload in enumerate(frames):
            fin = index == len(frames) - 1
            if item.compressed:
                payload = codec.compress(payload, fin)
            opcode = Opcode.CONT if index else (Opcode.TEXT if text else Opcode.BINARY)
            stream.append(
                peer_frame(core, opcode, payload, fin=fin, rsv1=item.compressed and not index)
            )
            # Control frames go between this message's frames (or after it).
            if index < len(interleaved):
                control(interleaved[index])
        for extra in interleaved[len(frames) :]:
            control(extra)
        sent_messages.append(item.data)
    if close is not None:
        stream.append(peer_frame(core, Opcode.CLOSE, close))
    return b"".join(stream), sent_messages, pings, pongs


def split(data: bytes, cuts: List[int]) -> List[bytes]:
    """Cut ``data`` at ``cuts`` (taken modulo its length + 1)."""
    bounds = [0] + sorted(cut % (len(data) + 1) for cut in cuts) + [len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:])]


def feed_chunks(
    core: ConnectionCore, chunks: List[bytes], use_buffer: List[bool]
) -> List[List[Any]]:
    """Feed ``chunks``, through get_buffer when ``use_buffer`` says so; the events of each call."""
    batches = []
    for index, chunk in enumerate(chunks):
        buffer = core.get_buffer()
        if buffer is not None and use_buffer[index % len(use_buffer)] and chunk:
            size = min(len(buffer), len(chunk))
            buffer[:size] = chunk[:size]
            batches.append(core.buffer_updated(size))
            chunk = chunk[size:]
        batches.append(core.receive_data(chunk))
    return batches


def feed(core: ConnectionCore, data: bytes, cuts: List[int], use_buffer: List[bool]) -> List[Any]:
    """Feed ``data`` cut at ``cuts``; all the events."""
    return [event for batch in feed_chunks(core, split(data, cuts), use_buffer) for event in batch]


def summary(core: ConnectionCore, events: List[Any]) -> Tuple[Any, ...]:
    """What must not depend on how the input was split."""
    return (
        list(join_messages(events)),
        [event for event in events if isinstance(event, PongReceived)],
        [event for event in events if isinstance(event, (CloseReceived, Failed))],
        parse_frames(output(core), masked=core.is_client),
        core.state,
        core.messages_received,
        core.bytes_received,
    )


# -- splitting is invisible ------------------------------------------------------------------


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
@PROPERTY
@given(data=st.data(), side=SIDES)
def test_split_stream_gives_the_same_events(deflate: bool, data: Any, side: str) -> None:
    whole = make(side, deflate=deflate)
    items, close = data.draw(conversations(deflate))
    stream, sent_messages, pings, pongs = serialize(whole, items, close)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    use_buffer = data.draw(st.lists(st.booleans(), min_size=1, max_size=5))

    expected = whole.receive_data(stream)
    split = make(side, deflate=deflate)
    events = feed(split, stream, cuts, use_buffer)
    result = summary(split, events)
    assert result == summary(whole, expected)

    # And what both got is what the peer sent; what they sent, the answers.
    got_messages, got_pongs, got_ends, got_output = result[:4]
    assert got_messages == sent_messages
    assert [pong.data for pong in got_pongs] == pongs
    answers = [Frame(True, Opcode.PONG, payload) for payload in pings]
    if close is None:
        assert got_ends == []
        assert split.state is State.OPEN
    else:
        code = int.from_bytes(close[:2], "big") if close else 1005
        assert got_ends == [CloseReceived(code, close[2:].decode())]
        answers.append(Frame(True, Opcode.CLOSE, close))
        assert split.state is State.CLOSING
    assert got_output == answers


@PROPERTY
@given(data=st.data(), side=SIDES)
def test_split_stream_with_limits_fails_the_same_way(data: Any, side: str) -> None:
    limits = {
        "max_message_size": data.draw(st.one_of(st.none(), st.integers(0, 100))),
        "max_fragment_size": data.draw(st.one_of(st.none(), st.integers(0, 50))),
    }
    whole = make(side, **limits)
    items, close = data.draw(conversations(False))
    stream, _, _, _ = serialize(whole, items, close)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    expected = whole.receive_data(stream)
    split = make(side, **limits)
    events = feed(split, stream, cuts, [True, False])
    assert summary(split, events)[:5] == summary(whole, expected)[:5]


# -- what a core sends, another core reads ------------------------------------------------------


@st.composite
def calls(draw: Any) -> List[Tuple[str, Any]]:
    """send_data/send_ping/send_pong calls: messages in fragments, controls between."""
    result: List[Tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            result.append((draw(st.sampled_from(["ping", "pong"])), draw(st.binary(max_size=125))))
            continue
        text = draw(st.booleans())
        piece = st.text(max_size=20) if text else st.binary(max_size=30)
        pieces = draw(st.lists(piece, min_size=1, max_size=4))
        compress = draw(st.sampled_from([None, True, False]))
        for index, piece in enumerate(pieces):
            fin = index == len(pieces) - 1
            payload = piece.encode() if isinstance(piece, str) else piece
            result.append(("data", (payload, text, fin, compress)))
        result.append(("message", pieces[0][:0].join(pieces)))
    return result


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
@PROPERTY
@given(data=st.data(), side=SIDES, threshold=st.integers(0, 40))
def test_round_trip_between_two_cores(deflate: bool, data: Any, side: str, threshold: int) -> None:
    sender = make(side, deflate=deflate, threshold=threshold)
    receiver = make("server" if side == "client" else "client", deflate=deflate)
    script = data.draw(calls())
    expected_messages = []
    pongs = []
    for name, argument in script:
        if name == "data":
            payload, text, fin, compress = argument
            sender.send_data(payload, text=text, fin=fin, compress=compress)
        elif name == "message":
            expected_messages.append(argument)
        elif name == "ping":
            if argument not in pongs:  # a payload may wait for one pong only
                sender.send_ping(argument, argument)
                pongs.append(argument)
        else:
            sender.send_pong(argument)
    sender.send_close(1000, "done")
    stream = output(sender)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    events = feed(receiver, stream, cuts, [True, False])
    assert list(join_messages(events)) == expected_messages
    assert events[-1] == CloseReceived(1000, "done")
    # The receiver's answers (pongs, then the close echo) resolve the sender's pings.
    answers = sender.receive_data(output(receiver))
    waiters = [w for event in answers if isinstance(event, PongReceived) for w in event.waiters]
    assert waiters == pongs
    assert answers[-1] == CloseReceived(1000, "done")
    assert sender.bytes_sent == receiver.bytes_received


# -- arbitrary input never raises -------------------------------------------------------------


def check_events(core: ConnectionCore, batches: List[List[Any]]) -> None:
    """Events are of the documented types; nothing follows a failure or a close."""
    ended = False
    for events in batches:
        if ended:
            assert events == []
        for index, event in enumerate(events):
            assert isinstance(event, (str, bytes, Fragment, PongReceived, CloseReceived, Failed))
            if isinstance(event, (Failed, CloseReceived)):
                assert index == len(events) - 1
                ended = True
            if isinstance(event, Failed):
                assert event.code in (1002, 1007, 1009)
    # What the core sent is a valid sequence of frames, ending with at most one close.
    frames = parse_frames(output(core), masked=core.is_client)
    closes = [index for index, frame in enumerate(frames) if frame.opcode is Opcode.CLOSE]
    assert closes in ([], [len(frames) - 1])
    core.receive_eof()
    exc = core.closed_exception()
    assert isinstance(exc, ConnectionClosed)
    assert (exc.code, exc.reason) == (core.close_code, core.close_reason)


def fuzz(core: ConnectionCore, chunks: List[bytes], use_buffer: List[bool]) -> None:
    """Feed ``chunks`` to ``core`` every way, checking what comes out."""
    check_events(core, feed_chunks(core, chunks, use_buffer))


# Frames a peer could send, well-formed or not: any first byte, the right or
# wrong masking, a true or false announced length, payloads that are text,
# compressed text or noise.
@st.composite
def frame_soup(draw: Any, core: ConnectionCore) -> bytes:
    frames = []
    for _ in range(draw(st.integers(1, 8))):
        first = draw(
            st.one_of(
                st.sampled_from([0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0x41]),
                st.integers(0, 255),
            )
        )
        payload = draw(
            st.one_of(
                st.binary(max_size=200),
                st.text(max_size=50).map(str.encode),
                st.text(max_size=200).map(
                    lambda text: peer_deflate(core).compress(text.encode(), True)
                ),
                st.builds(serialize_close, SENDABLE_CODES, st.text(max_size=10)),
            )
        )
        masked = draw(st.sampled_from([None, None, None, True, False]))
        length = draw(
            st.one_of(
                st.none(), st.none(), st.integers(0, 2**16 + 10), st.integers(0, 2**64 - 1)
            )
        )
        frames.append(raw_frame(core, first, payload, masked=masked, length=length))
    return b"".join(frames)


@FUZZ_TIMEOUT
@FUZZ
@given(
    side=SIDES,
    deflate=st.booleans(),
    chunks=st.lists(st.binary(max_size=300), max_size=10),
    use_buffer=st.lists(st.booleans(), min_size=1, max_size=4),
    limit=st.one_of(st.none(), st.integers(0, 1000)),
)
def test_fuzz_arbitrary_bytes(
    side: str, deflate: bool, chunks: List[bytes], use_buffer: List[bool], limit: Optional[int]
) -> None:
    core = make(side, deflate=deflate, max_message_size=limit)
    fuzz(core, chunks, use_buffer)


@FUZZ_TIMEOUT
@FUZZ
@given(
    data=st.data(),
    side=SIDES,
    deflate=st.booleans(),
    cuts=st.lists(st.integers(0, 2**16), max_size=12),
    use_buffer=st.lists(st.booleans(), min_size=1, max_size=4),
    limit=st.one_of(st.none(), st.integers(0, 1000)),
    fragment_limit=st.one_of(st.none(), st.integers(0, 300)),
)
def test_fuzz_frame_soup(
    data: Any,
    side: str,
    deflate: bool,
    cuts: List[int],
    use_buffer: List[bool],
    limit: Optional[int],
    fragment_limit: Optional[int],
) -> None:
    core = make(side, deflate=deflate, max_message_size=limit, max_fragment_size=fragment_limit)
    stream = data.draw(frame_soup(core))
    fuzz(core, split(stream, cuts), use_buffer)


@FUZZ_TIMEOUT
@FUZZ
@given(
    data=st.data(),
    side=SIDES,
    deflate=st.booleans(),
    cuts=st.lists(st.integers(0, 2**16), max_size=12),
    flips=st.lists(st.tuples(st.integers(0, 2**16), st.integers(1, 255)), min_size=1, max_size=3),
)
def test_fuzz_corrupted_conversation(
    data: Any, side: str, deflate: bool, cuts: List[int], flips: List[Tuple[int, int]]
) -> None:
    # A valid conversation with a few bytes changed: errors deep in a stream.
    core = make(side, deflate=deflate)
    items, close = data.draw(conversations(deflate))
    stream, _, _, _ = serialize(core, items, close)
    corrupted = bytearray(stream)
    for position, xor in flips:
        if corrupted:
            corrupted[position % len(corrupted)] ^= xor
    fuzz(core, split(bytes(corrupted), cuts), [True, False])


def test_fuzz_seeded_random_bytes() -> None:
    # Plain random streams, reproducible: a cheap complement to Hypothesis.
    rng = random.Random(6455)
    for _ in range(max(200, FUZZ_EXAMPLES // 10)):
        core = make(rng.choice(["client", "server"]), deflate=rng.random() < 0.5)
        chunks = [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 6))]
        fuzz(core, chunks, [rng.random() < 0.5])
