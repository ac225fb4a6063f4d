"""Socket-free tests of syncws.core: bytes in, events and bytes out.

Each test states one rule of RFC 6455 §5-7 / RFC 7692 as the core keeps it.
The peer's frames are built with :func:`syncws.framing.encode_frame` (masked
when the core is a server) and what the core wants to send is parsed back,
unmasked, with the masking checked. Sockets are unusable here (see the
``no_sockets`` fixture) to prove that the core needs none.
"""

from __future__ import annotations

import os
import random
import socket
import tracemalloc
import zlib
from typing import Any, List

import pytest

from core_helpers import (  # noqa: F401  (no_sockets is an autouse fixture)
    MASK,
    close_frame,
    join_messages,
    make,
    no_sockets,
    output,
    parse_frames,
    peer_deflate,
    peer_frame,
    raw_frame,
    sent,
)
from syncws.core import (
    PHASE_TRANSITIONS,
    PHASES,
    TRANSITIONS,
    Phase,
    CloseReceived,
    ConnectionCore,
    MAX_PINGS_WAITING,
    Failed,
    Fragment,
    PongReceived,
    State,
)
from syncws.close_codes import describe_close
from syncws.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidState
from syncws.framing import Frame, Opcode, serialize_close
from syncws.masking import apply_mask

SIDES = ["client", "server"]

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG


@pytest.fixture(params=SIDES)
def side(request: pytest.FixtureRequest) -> str:
    """Run a test on the client side and on the server side."""
    return request.param


def assert_failed(core: ConnectionCore, events: list, code: int, match: str = "") -> Failed:
    """The last event is a failure with ``code``, and a close frame with it was sent."""
    assert events, "no events"
    failed = events[-1]
    assert isinstance(failed, Failed), events
    assert failed.code == code
    assert match in failed.reason
    assert sent(core) == [close_frame(code, failed.reason)]
    assert core.state is State.CLOSING
    assert core.input_closed
    return failed


# -- the fixture itself ----------------------------------------------------------


def test_sockets_are_unusable() -> None:
    with pytest.raises(AssertionError):
        socket.socket()
    with pytest.raises(AssertionError):
        socket.create_connection(("127.0.0.1", 80))


# -- states and transitions --------------------------------------------------------


def test_transitions_table() -> None:
    assert TRANSITIONS == {
        State.CONNECTING: {State.OPEN, State.CLOSED},
        State.OPEN: {State.CLOSING, State.CLOSED},
        State.CLOSING: {State.CLOSED},
        State.CLOSED: set(),
    }


def test_transitions_never_go_back() -> None:
    for state, targets in TRANSITIONS.items():
        assert all(target > state for target in targets)


def test_core_starts_connecting(side: str) -> None:
    core = make(side, opened=False)
    assert core.state is State.CONNECTING
    assert core.close_code is None and core.close_reason is None


def test_open_moves_to_open(side: str) -> None:
    core = make(side, opened=False)
    core.open()
    assert core.state is State.OPEN


def test_open_sets_deflate() -> None:
    core = make("server", opened=False)
    codec = peer_deflate(make("client", opened=False))
    core.open(codec)
    assert core.deflate is codec


def test_open_twice_asserts() -> None:
    core = make()
    with pytest.raises(AssertionError, match="OPEN -> OPEN"):
        core.open()


def test_illegal_transition_asserts() -> None:
    core = make()
    with pytest.raises(AssertionError, match="OPEN -> CONNECTING"):
        core._set_phase(Phase.CONNECTING)


def test_closed_is_terminal() -> None:
    core = make()
    core.receive_eof()
    for phase in Phase:
        with pytest.raises(AssertionError):
            core._set_phase(phase)


def test_phases_never_go_back() -> None:
    order = list(Phase)
    for phase, targets in PHASE_TRANSITIONS.items():
        assert all(order.index(target) > order.index(phase) for target in targets), phase
        assert all(PHASES[target].state >= PHASES[phase].state for target in targets), phase


def test_only_open_can_send_and_closing_says_who_closed() -> None:
    assert [phase for phase, rules in PHASES.items() if rules.can_send] == [Phase.OPEN]
    assert [phase for phase, rules in PHASES.items() if rules.parses_input] == [Phase.OPEN, Phase.CLOSE_SENT]
    assert set(PHASES) == set(Phase) == set(PHASE_TRANSITIONS)


def _phases(core: ConnectionCore, *steps: Any) -> List[Phase]:
    """The phase after each step."""
    phases = [core.phase]
    for step in steps:
        step()
        phases.append(core.phase)
    return phases


def test_phases_of_each_way_to_close(side: str) -> None:
    ours = make(side)
    assert _phases(
        ours, ours.send_close, lambda: ours.receive_data(peer_frame(ours, CLOSE, serialize_close(1000))),
        ours.receive_eof,
    ) == [Phase.OPEN, Phase.CLOSE_SENT, Phase.CLOSE_EXCHANGED, Phase.CLOSED]
    theirs = make(side)
    assert _phases(
        theirs, lambda: theirs.receive_data(peer_frame(theirs, CLOSE, b"")), theirs.receive_eof,
    ) == [Phase.OPEN, Phase.CLOSE_RECEIVED, Phase.CLOSED]
    failed = make(side)
    assert _phases(
        failed, lambda: failed.fail(1011, "bug"), lambda: failed.abandon("gone"), failed.receive_eof,
    ) == [Phase.OPEN, Phase.FAILED, Phase.ABANDONED, Phase.CLOSED]
    abandoned = make(side)
    assert _phases(abandoned, lambda: abandoned.abandon("gone"), lambda: abandoned.fail(1011, "bug")) == [
        Phase.OPEN, Phase.ABANDONED, Phase.ABANDONED,
    ]
    assert output(abandoned) == b""  # nothing follows a connection given up


def test_can_send_and_input_closed_follow_the_phase(side: str) -> None:
    core = make(side, opened=False)
    assert (core.can_send, core.input_closed) == (False, True)
    core.open()
    assert (core.can_send, core.input_closed) == (True, False)
    core.send_close()
    assert (core.can_send, core.input_closed) == (False, False)
    core.receive_data(peer_frame(core, CLOSE, b""))
    assert (core.can_send, core.input_closed) == (False, True)


def test_fail_while_connecting_closes() -> None:
    core = make(opened=False)
    core.fail(1002, "bad")
    assert core.state is State.CLOSED and output(core) == b""
    assert (core.close_code, core.close_reason) == (1006, "bad")


def test_send_before_open_is_invalid_state(side: str) -> None:
    core = make(side, opened=False)
    with pytest.raises(InvalidState, match="opening handshake"):
        core.send_data(b"x", text=False)
    with pytest.raises(InvalidState):
        core.send_ping(b"x", None)
    assert output(core) == b""


def test_eof_while_connecting_closes() -> None:
    core = make(opened=False)
    core.receive_eof("handshake failed")
    assert core.state is State.CLOSED
    assert core.close_code == 1006
    assert core.close_reason == "handshake failed"


def test_state_path_of_a_normal_close(side: str) -> None:
    core = make(side)
    states = [core.state]
    core.send_close()
    states.append(core.state)
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1000)))
    states.append(core.state)
    core.receive_eof()
    states.append(core.state)
    assert states == [State.OPEN, State.CLOSING, State.CLOSING, State.CLOSED]


def test_eof_from_open_goes_to_closed() -> None:
    core = make()
    core.receive_eof()
    assert core.state is State.CLOSED


# -- masking: both sides -------------------------------------------------------------


def test_server_receives_masked_text() -> None:
    core = make("server")
    data = b"\x81\x85" + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(b"hello"))
    assert core.receive_data(data) == ["hello"]


def test_client_receives_unmasked_text() -> None:
    core = make("client")
    assert core.receive_data(b"\x81\x05hello") == ["hello"]


def test_server_refuses_unmasked_frame() -> None:
    core = make("server")
    events = core.receive_data(b"\x81\x05hello")
    assert_failed(core, events, 1002, "client must mask")


def test_client_refuses_masked_frame() -> None:
    core = make("client")
    events = core.receive_data(raw_frame(core, 0x81, b"hello", masked=True))
    assert_failed(core, events, 1002, "server must not mask")


def test_server_sends_exact_unmasked_bytes() -> None:
    core = make("server")
    core.send_data(b"hello", text=True)
    assert output(core) == b"\x81\x05hello"


def test_client_masks_its_frames() -> None:
    core = make("client")
    core.send_data(b"hello", text=True)
    data = output(core)
    assert data[:2] == b"\x81\x85"
    assert data[6:] != b"hello" or data[2:6] == b"\0\0\0\0"
    assert parse_frames(data, masked=True) == [Frame(True, TEXT, b"hello")]


def test_client_uses_a_new_mask_key_per_frame() -> None:
    core = make("client")
    for _ in range(8):
        core.send_data(b"x", text=False)
    data = output(core)
    keys = {data[i * 7 + 2 : i * 7 + 6] for i in range(8)}
    assert len(keys) > 1


def test_client_masks_control_frames() -> None:
    core = make("client")
    core.send_ping(b"ping", None)
    core.send_pong(b"pong")
    core.send_close(1000, "bye")
    assert sent(core) == [
        Frame(True, PING, b"ping"),
        Frame(True, PONG, b"pong"),
        close_frame(1000, "bye"),
    ]


# -- data frames ---------------------------------------------------------------------


def test_receive_text(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, TEXT, "café")) == ["café"]


def test_receive_binary(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, BINARY, b"\x00\xff")) == [b"\x00\xff"]


def test_received_binary_is_bytes(side: str) -> None:
    core = make(side)
    [message] = core.receive_data(bytearray(peer_frame(core, BINARY, b"abc")))
    assert type(message) is bytes


def test_receive_empty_text(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, TEXT, b"")) == [""]


def test_receive_empty_binary(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, BINARY, b"")) == [b""]


def test_receive_two_messages_in_one_chunk(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, "a") + peer_frame(core, BINARY, b"b")
    assert core.receive_data(data) == ["a", b"b"]


def test_receive_frame_byte_by_byte(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, "hello")
    for byte in data[:-1]:
        assert core.receive_data(bytes([byte])) == []
    assert core.receive_data(data[-1:]) == ["hello"]


def test_receive_16_bit_length(side: str) -> None:
    core = make(side)
    payload = bytes(range(256)) * 2
    assert core.receive_data(peer_frame(core, BINARY, payload)) == [payload]


def test_receive_64_bit_length(side: str) -> None:
    core = make(side)
    payload = b"x" * 70000
    assert core.receive_data(peer_frame(core, BINARY, payload)) == [payload]


def test_receive_large_frame_in_chunks(side: str) -> None:
    core = make(side)
    payload = bytes(range(256)) * 300
    data = peer_frame(core, BINARY, payload)
    events = []
    for i in range(0, len(data), 1000):
        events += core.receive_data(data[i : i + 1000])
    assert events == [payload]


def test_receive_memoryview(side: str) -> None:
    core = make(side)
    assert core.receive_data(memoryview(peer_frame(core, TEXT, "mv"))) == ["mv"]


def test_messages_then_a_large_frame_in_one_read(side: str) -> None:
    # The general path takes over where the whole messages end.
    core = make(side)
    payload = bytes(range(256)) * 300
    data = peer_frame(core, TEXT, "a") + peer_frame(core, BINARY, payload)
    assert core.receive_data(data[:5000]) == ["a"]
    assert core.receive_data(data[5000:]) == [payload]
    assert core.messages_received == 2


def test_send_binary(side: str) -> None:
    core = make(side)
    core.send_data(b"\x01\x02", text=False)
    assert sent(core) == [Frame(True, BINARY, b"\x01\x02")]


def test_send_empty_text(side: str) -> None:
    core = make(side)
    core.send_data(b"", text=True)
    assert sent(core) == [Frame(True, TEXT, b"")]


def test_send_bytearray_and_memoryview(side: str) -> None:
    core = make(side)
    core.send_data(bytearray(b"ab"), text=False)
    core.send_data(memoryview(b"cd"), text=False)
    assert sent(core) == [Frame(True, BINARY, b"ab"), Frame(True, BINARY, b"cd")]


def test_send_16_bit_header() -> None:
    core = make("server")
    core.send_data(b"x" * 200, text=False)
    assert output(core) == b"\x82\x7e\x00\xc8" + b"x" * 200


def test_send_64_bit_header() -> None:
    core = make("server")
    core.send_data(b"x" * 65536, text=False)
    assert output(core) == b"\x82\x7f" + (65536).to_bytes(8, "big") + b"x" * 65536


def test_data_to_send_empties_the_buffer() -> None:
    core = make("server")
    assert not core.outgoing
    core.send_data(b"a", text=False)
    core.send_data(b"b", text=False)
    assert core.outgoing
    assert output(core) == b"\x82\x01a\x82\x01b"
    assert not core.outgoing
    assert core.data_to_send() == []


@pytest.mark.parametrize("deflate", [False, True])
def test_send_message_is_send_data_then_data_to_send(side: str, deflate: bool) -> None:
    one, two = make(side, deflate=deflate), make(side, deflate=deflate)
    for payload, text in [(b"hello", True), (b"\x00" * 300, False), (b"", True)]:
        one.send_data(payload, text=text)
        two_data = two.send_message(payload, text)
        assert not two.outgoing
        assert parse_frames(b"".join(two_data), masked=side == "client") == sent(one)
    assert two.messages_sent == one.messages_sent == 3
    assert two.bytes_sent == one.bytes_sent


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 65537, 70000])
def test_send_message_inline_frame_is_write_frames(side: str, size: int) -> None:
    """send_message() builds its frame inline, a copy of _write_frame()'s: the same bytes, masks included."""
    one, two = make(side), make(side)
    pool = bytes(range(256)) * 4
    for core in (one, two):
        core._mask_pool, core._mask_position = pool, 0
    for payload, text in [(os.urandom(size), False), ("\u00e9" * (size // 2), True)]:
        one.send_data(payload, text=text)
        assert b"".join(bytes(part) for part in two.send_message(payload, text)) == output(one)
    assert (two.messages_sent, two.bytes_sent, two._mask_position) == (
        one.messages_sent, one.bytes_sent, one._mask_position,
    )
    for core in (one, two):
        core.send_close()
    with pytest.raises(InvalidState) as by_data:
        one.send_data(b"late", text=False)
    with pytest.raises(InvalidState) as by_message:
        two.send_message(b"late", False)
    assert str(by_message.value) == str(by_data.value)


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("text", ["hello", "h\u00e9llo \u20ac \U0001f600", "", "x" * 70000, "\u00e9" * 40000])
def test_send_message_takes_a_str_as_its_utf8(side: str, deflate: bool, text: str) -> None:
    one, two = make(side, deflate=deflate), make(side, deflate=deflate)
    one.send_data(text.encode(), text=True)
    assert parse_frames(b"".join(two.send_message(text, True)), masked=side == "client") == sent(one)
    assert (two.messages_sent, two.bytes_sent) == (one.messages_sent, one.bytes_sent)


def test_send_data_takes_a_str_as_its_utf8(side: str) -> None:
    one, two = make(side), make(side)
    for fin in (False, True):
        one.send_data("\u00e9t\u00e9".encode(), text=True, fin=fin)
        two.send_data("\u00e9t\u00e9", text=True, fin=fin)
    assert parse_frames(output(two), masked=side == "client") == sent(one)


@pytest.mark.parametrize("deflate", [False, True])
def test_send_message_of_a_lone_surrogate_sends_nothing(side: str, deflate: bool) -> None:
    core = make(side, deflate=deflate)
    with pytest.raises(UnicodeEncodeError):
        core.send_message("\ud800", True)
    assert (core.outgoing, core.messages_sent, core.bytes_sent) == ([], 0, 0)
    assert core.send_message("ok", True)


def test_send_message_takes_frames_made_before_it() -> None:
    core = make("server")
    core.send_pong(b"p")
    assert b"".join(core.send_message(b"m", False)) == b"\x8a\x01p\x82\x01m"


def test_send_message_sends_nothing_during_a_fragmented_message() -> None:
    core = make("server")
    core.send_data(b"a", text=True, fin=False)
    output(core)
    assert core.send_message(b"b", True) is None
    assert not core.outgoing and core.messages_sent == 0
    core.send_data(b"b", text=True)
    assert output(core) == b"\x80\x01b"


def test_send_message_after_close_is_invalid_state(side: str) -> None:
    core = make(side)
    core.send_close(1000, "")
    output(core)
    with pytest.raises(InvalidState, match="closing"):
        core.send_message(b"x", False)
    assert core.messages_sent == 0


# -- fragmentation -------------------------------------------------------------------


def test_fragments_one_per_receive(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, TEXT, "a", fin=False)) == [Fragment("a", False)]
    assert core.receive_data(peer_frame(core, CONT, "b", fin=False)) == [Fragment("b", False)]
    assert core.receive_data(peer_frame(core, CONT, "c")) == [Fragment("c", True)]


def test_binary_fragments(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, BINARY, b"a", fin=False)) == [Fragment(b"a", False)]
    assert core.receive_data(peer_frame(core, CONT, b"b")) == [Fragment(b"b", True)]


def test_fragments_in_one_batch_are_coalesced(side: str) -> None:
    core = make(side)
    data = (
        peer_frame(core, TEXT, "a", fin=False)
        + peer_frame(core, CONT, "b", fin=False)
        + peer_frame(core, CONT, "c")
    )
    assert core.receive_data(data) == [Fragment("abc", True)]


def test_fragments_coalesced_up_to_the_end_of_the_batch(side: str) -> None:
    core = make(side)
    data = peer_frame(core, BINARY, b"a", fin=False) + peer_frame(core, CONT, b"b", fin=False)
    assert core.receive_data(data) == [Fragment(b"ab", False)]
    assert core.receive_data(peer_frame(core, CONT, b"c")) == [Fragment(b"c", True)]


def test_fragment_then_next_message_in_one_batch(side: str) -> None:
    core = make(side)
    data = (
        peer_frame(core, TEXT, "a", fin=False)
        + peer_frame(core, CONT, "b")
        + peer_frame(core, TEXT, "c")
    )
    assert core.receive_data(data) == [Fragment("ab", True), "c"]


def test_empty_fragments(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, TEXT, b"", fin=False)) == [Fragment("", False)]
    assert core.receive_data(peer_frame(core, CONT, b"")) == [Fragment("", True)]


def test_ping_between_fragments_is_answered(side: str) -> None:
    core = make(side)
    data = (
        peer_frame(core, TEXT, "a", fin=False)
        + peer_frame(core, PING, b"p")
        + peer_frame(core, CONT, "b")
    )
    assert core.receive_data(data) == [Fragment("a", False), Fragment("b", True)]
    assert sent(core) == [Frame(True, PONG, b"p")]


def test_pong_between_fragments_keeps_the_order(side: str) -> None:
    core = make(side)
    data = (
        peer_frame(core, BINARY, b"a", fin=False)
        + peer_frame(core, PONG, b"p")
        + peer_frame(core, CONT, b"b")
    )
    assert core.receive_data(data) == [
        Fragment(b"a", False),
        PongReceived(b"p", []),
        Fragment(b"b", True),
    ]


def test_close_between_fragments(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, "a", fin=False) + peer_frame(core, CLOSE, serialize_close(1000))
    assert core.receive_data(data) == [Fragment("a", False), CloseReceived(1000, "")]


def test_text_inside_fragmented_message(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, TEXT, "a", fin=False))
    events = core.receive_data(peer_frame(core, TEXT, "b"))
    assert_failed(core, events, 1002, "TEXT frame inside a fragmented message")


def test_binary_inside_fragmented_message(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, TEXT, "a", fin=False))
    events = core.receive_data(peer_frame(core, BINARY, b"b"))
    assert_failed(core, events, 1002, "BINARY frame inside")


def test_continuation_without_start(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, CONT, "a"))
    assert_failed(core, events, 1002, "continuation frame without a message")


def test_continuation_after_a_complete_message(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, "a", fin=False) + peer_frame(core, CONT, "b")
    core.receive_data(data)
    events = core.receive_data(peer_frame(core, CONT, "c"))
    assert_failed(core, events, 1002, "continuation")


def test_failure_emits_held_fragments_first(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, "a", fin=False) + peer_frame(core, TEXT, "b")
    events = core.receive_data(data)
    assert events[0] == Fragment("a", False)
    assert_failed(core, events, 1002)


def test_character_split_between_fragments(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, TEXT, b"caf\xc3", fin=False)) == [
        Fragment("caf", False)
    ]
    assert core.receive_data(peer_frame(core, CONT, b"\xa9!")) == [Fragment("é!", True)]


def test_send_fragmented_message(side: str) -> None:
    core = make(side)
    core.send_data(b"a", text=True, fin=False)
    assert core.sending_fragmented
    core.send_data(b"b", text=False, fin=False)
    core.send_data(b"c", text=False)
    assert not core.sending_fragmented
    assert sent(core) == [
        Frame(False, TEXT, b"a"),
        Frame(False, CONT, b"b"),
        Frame(True, CONT, b"c"),
    ]


def test_control_frame_while_sending_fragmented(side: str) -> None:
    core = make(side)
    core.send_data(b"a", text=False, fin=False)
    core.send_ping(b"p", None)
    core.send_data(b"b", text=False)
    assert sent(core) == [
        Frame(False, BINARY, b"a"),
        Frame(True, PING, b"p"),
        Frame(True, CONT, b"b"),
    ]


# -- reserved bits and opcodes ----------------------------------------------------------


def test_rsv1_without_deflate(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, TEXT, "a", rsv1=True))
    assert_failed(core, events, 1002, "reserved bits")


@pytest.mark.parametrize("bit", [0x20, 0x10])
def test_rsv2_rsv3(side: str, bit: int) -> None:
    core = make(side)
    events = core.receive_data(raw_frame(core, 0x81 | bit, b"a"))
    assert_failed(core, events, 1002, "reserved bits")


@pytest.mark.parametrize("bit", [0x20, 0x10])
def test_rsv2_rsv3_with_deflate(bit: int) -> None:
    core = make(deflate=True)
    events = core.receive_data(raw_frame(core, 0xC1 | bit, b"a"))
    assert_failed(core, events, 1002, "reserved bits")


def test_rsv1_on_continuation(side: str) -> None:
    core = make(side, deflate=True)
    core.receive_data(peer_frame(core, TEXT, "a", fin=False))
    events = core.receive_data(raw_frame(core, 0xC0, b"b"))
    assert_failed(core, events, 1002, "RSV1 set on a continuation")


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_rsv1_on_control_frame(opcode: Opcode) -> None:
    core = make(deflate=True)
    events = core.receive_data(raw_frame(core, 0xC0 | opcode, b""))
    assert_failed(core, events, 1002, "RSV1 set on a control frame")


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode(side: str, opcode: int) -> None:
    core = make(side)
    events = core.receive_data(raw_frame(core, 0x80 | opcode, b"x"))
    assert_failed(core, events, 1002, f"reserved opcode 0x{opcode:X}")


def test_64_bit_length_with_msb(side: str) -> None:
    core = make(side, max_message_size=None)
    header = b"\x82" + bytes([0xFF if not core.is_client else 0x7F]) + b"\x80" + b"\0" * 7
    if not core.is_client:
        header += MASK
    events = core.receive_data(header)
    assert_failed(core, events, 1002, "most significant bit")


# -- control frames ------------------------------------------------------------------


def test_fragmented_ping(side: str) -> None:
    core = make(side)
    events = core.receive_data(raw_frame(core, PING, b"p"))
    assert_failed(core, events, 1002, "fragmented control frame (PING)")


def test_fragmented_close(side: str) -> None:
    core = make(side)
    events = core.receive_data(raw_frame(core, CLOSE, serialize_close(1000)))
    assert_failed(core, events, 1002, "fragmented control frame (CLOSE)")


def test_ping_of_126_bytes(side: str) -> None:
    core = make(side)
    events = core.receive_data(raw_frame(core, 0x80 | PING, b"x" * 126))
    assert_failed(core, events, 1002, "control frame too long")


def test_close_of_126_bytes(side: str) -> None:
    core = make(side)
    events = core.receive_data(raw_frame(core, 0x80 | CLOSE, b"\x03\xe8" + b"x" * 124))
    assert_failed(core, events, 1002, "control frame too long")


def test_too_long_control_frame_refused_from_its_header(side: str) -> None:
    core = make(side)
    events = core.receive_data(raw_frame(core, 0x80 | PONG, b"x" * 200)[:8])
    assert_failed(core, events, 1002, "control frame too long")


@pytest.mark.parametrize("extended", [126, 127])
def test_control_frame_with_an_extended_length_is_refused(side: str, extended: int) -> None:
    # Its payload is short, but a control frame's length is never extended
    # (RFC 6455 §5.5), as framing.read_frame refuses too.
    core = make(side)
    mask_bit = 0x80 if not core.is_client else 0
    length = (5).to_bytes(2 if extended == 126 else 8, "big")
    frame = bytes([0x80 | PING, mask_bit | extended]) + length
    frame += MASK + apply_mask(b"hello", MASK) if mask_bit else b"hello"
    events = core.receive_data(frame)
    assert_failed(core, events, 1002, f"control frame too long: PING with a 7-bit length of {extended}")


def test_ping_of_125_bytes_is_answered(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, PING, b"x" * 125)) == []
    assert sent(core) == [Frame(True, PONG, b"x" * 125)]


def test_ping_is_answered_with_its_payload(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, PING, b"\x00abc")) == []
    assert sent(core) == [Frame(True, PONG, b"\x00abc")]


def test_empty_ping_is_answered(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, PING))
    assert sent(core) == [Frame(True, PONG, b"")]


def test_pings_answered_in_order(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, PING, b"1") + peer_frame(core, PING, b"2"))
    assert sent(core) == [Frame(True, PONG, b"1"), Frame(True, PONG, b"2")]


def test_unsent_pongs_are_bounded_the_newest_ping_answered(side: str) -> None:
    """Pings while nobody takes the output (a send blocks): 64 pongs wait, the last for the newest ping."""
    core = make(side)
    pings = b"".join(peer_frame(core, PING, b"%d" % number) for number in range(1000))
    core.receive_data(pings[: len(pings) // 2])
    core.receive_data(pings[len(pings) // 2 :])
    assert len(core.outgoing) == 64
    assert sent(core) == [Frame(True, PONG, b"%d" % number) for number in [*range(63), 999]]
    # Taken, the buffer holds every pong again, up to the limit.
    core.receive_data(peer_frame(core, PING, b"next"))
    assert sent(core) == [Frame(True, PONG, b"next")]


def test_unsent_pongs_bound_replaces_only_a_pong(side: str) -> None:
    """Past the bound, a pong replaces the newest pong waiting, never another frame."""
    core = make(side)
    core.receive_data(b"".join(peer_frame(core, PING, b"%d" % number) for number in range(63)))
    core.send_data(b"data", text=False)  # left in the buffer, as a writer never does today
    core.receive_data(peer_frame(core, PING, b"63") + peer_frame(core, PING, b"64"))
    assert sent(core) == [
        *(Frame(True, PONG, b"%d" % number) for number in range(63)),
        Frame(True, Opcode.BINARY, b"data"),
        Frame(True, PONG, b"64"),
    ]


def test_control_frame_split_across_receives(side: str) -> None:
    core = make(side)
    data = peer_frame(core, PING, b"hello")
    assert core.receive_data(data[:3]) == []
    assert output(core) == b""
    core.receive_data(data[3:])
    assert sent(core) == [Frame(True, PONG, b"hello")]


def test_send_ping_too_long() -> None:
    core = make()
    with pytest.raises(ValueError, match="at most 125"):
        core.send_ping(b"x" * 126, None)
    assert output(core) == b""


def test_send_pong_too_long() -> None:
    core = make()
    with pytest.raises(ValueError, match="at most 125"):
        core.send_pong(b"x" * 126)


def test_send_unsolicited_pong(side: str) -> None:
    core = make(side)
    core.send_pong(b"beat")
    assert sent(core) == [Frame(True, PONG, b"beat")]


# -- UTF-8 ---------------------------------------------------------------------------


def test_invalid_utf8_in_one_frame(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, TEXT, b"caf\xe9"))
    assert_failed(core, events, 1007, "invalid UTF-8")


def test_invalid_utf8_in_a_fragment(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, TEXT, "ok", fin=False)) == [Fragment("ok", False)]
    events = core.receive_data(peer_frame(core, CONT, b"\xff", fin=False))
    assert_failed(core, events, 1007, "invalid UTF-8")


def test_invalid_utf8_fails_before_the_message_ends(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, TEXT, b"\xc0\xaf", fin=False))
    assert_failed(core, events, 1007)


def test_truncated_character_at_the_end_of_a_message(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, TEXT, b"caf\xc3"))
    assert_failed(core, events, 1007)


def test_truncated_character_at_the_end_of_a_fragmented_message(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, TEXT, b"a", fin=False))
    events = core.receive_data(peer_frame(core, CONT, b"\xe2\x82"))
    assert_failed(core, events, 1007)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_valid_character_split_anywhere_across_frames(side: str, cut: int) -> None:
    core = make(side)
    euro = "€".encode() + "😀".encode()  # 3 + 4 bytes
    data = peer_frame(core, TEXT, euro[:cut], fin=False) + peer_frame(core, CONT, euro[cut:])
    assert list(join_messages(core.receive_data(data))) == ["€😀"]


def test_invalid_prefix_split_between_fragments_autobahn_6_4_2(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, TEXT, b"\xf4", fin=False)) == [Fragment("", False)]
    events = core.receive_data(peer_frame(core, CONT, b"\x90", fin=False))
    assert_failed(core, events, 1007)


def test_truncated_character_then_empty_last_fragment(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, TEXT, b"\xc3", fin=False))
    events = core.receive_data(peer_frame(core, CONT, b""))
    assert_failed(core, events, 1007)


def test_surrogate_in_one_frame(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, TEXT, b"a\xed\xa0\x80b"))
    assert_failed(core, events, 1007)


def test_surrogate_in_a_partial_frame(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, b"a\xed\xa0\x80" + b"b" * 100)
    events = core.receive_data(data[:-50])
    assert_failed(core, events, 1007)


def test_code_point_above_u10ffff(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, TEXT, b"\xf4\x90\x80\x80"))
    assert_failed(core, events, 1007)


_AUTOBAHN_6_4 = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited"


@pytest.mark.parametrize(
    "cut, failing",
    [
        # 6.4.3: chunks "κόσμε", f4 90 80 80, "edited": fails with the 2nd.
        (10, 4),
        # 6.4.4: cut after f4, then 90 alone: f4 90 can't start a valid
        # character, so it fails with the chunk holding 90.
        (11, 1),
    ],
    ids=["autobahn-6.4.3", "autobahn-6.4.4"],
)
def test_fail_fast_inside_one_frame(side: str, cut: int, failing: int) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, _AUTOBAHN_6_4)
    start = len(data) - len(_AUTOBAHN_6_4)
    assert core.receive_data(data[: start + cut]) == []
    events = core.receive_data(data[start + cut : start + cut + failing])
    assert_failed(core, events, 1007)
    assert core.receive_data(data[start + cut + failing :]) == []


def test_valid_text_frame_in_chunks_keeps_no_early_failure(side: str) -> None:
    core = make(side)
    text = "κόσμε€😀" * 20
    data = peer_frame(core, TEXT, text)
    events = []
    for i in range(len(data)):
        events += core.receive_data(data[i : i + 1])
    assert events == [text]


def test_fail_fast_on_a_surrogate_prefix(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, b"a\xed\xa0\x80" + b"b" * 100)
    header = len(data) - 104
    events = core.receive_data(data[: header + 3])  # "a" ed a0: already invalid
    assert events and isinstance(events[-1], Failed)


# -- max_size: message and fragment limits ----------------------------------------------


def test_message_at_max_size_is_accepted(side: str) -> None:
    core = make(side, max_message_size=100)
    assert core.receive_data(peer_frame(core, BINARY, b"x" * 100)) == [b"x" * 100]


def test_message_over_max_size(side: str) -> None:
    core = make(side, max_message_size=100)
    events = core.receive_data(peer_frame(core, BINARY, b"x" * 101))
    assert_failed(core, events, 1009, "exceeds max_size")


def test_announced_length_refused_before_the_payload(side: str) -> None:
    core = make(side, max_message_size=1000)
    header = peer_frame(core, BINARY, b"x" * 5000)[:8]  # 4 header bytes + mask (or part)
    events = core.receive_data(header)
    assert_failed(core, events, 1009)
    assert core.get_buffer() is None


def test_huge_announced_length_allocates_nothing(side: str) -> None:
    core = make(side, max_message_size=2**20)
    header = raw_frame(core, 0x82, b"", length=2**40)
    events = core.receive_data(header)
    assert_failed(core, events, 1009)


def test_fragmented_message_over_max_size(side: str) -> None:
    core = make(side, max_message_size=100)
    assert core.receive_data(peer_frame(core, BINARY, b"x" * 60, fin=False)) == [
        Fragment(b"x" * 60, False)
    ]
    frame = peer_frame(core, CONT, b"x" * 41)
    events = core.receive_data(frame[:-41])  # its header only
    assert_failed(core, events, 1009, "101 bytes so far")


def test_fragmented_message_at_max_size(side: str) -> None:
    core = make(side, max_message_size=100)
    data = peer_frame(core, BINARY, b"x" * 60, fin=False) + peer_frame(core, CONT, b"x" * 40)
    assert core.receive_data(data) == [Fragment(b"x" * 100, True)]


def test_fragment_over_max_fragment_size(side: str) -> None:
    core = make(side, max_message_size=None, max_fragment_size=10)
    events = core.receive_data(peer_frame(core, BINARY, b"x" * 11, fin=False))
    assert_failed(core, events, 1009, "fragment limit of 10")


def test_fragments_under_max_fragment_size(side: str) -> None:
    core = make(side, max_message_size=None, max_fragment_size=10)
    data = b"".join(
        peer_frame(core, CONT if i else BINARY, b"x" * 10, fin=i == 9) for i in range(10)
    )
    assert core.receive_data(data) == [Fragment(b"x" * 100, True)]


def test_no_limit(side: str) -> None:
    core = make(side, max_message_size=None)
    payload = b"x" * (2**20 + 1)
    assert core.receive_data(peer_frame(core, BINARY, payload)) == [payload]


def test_control_frames_dont_count_against_max_size(side: str) -> None:
    core = make(side, max_message_size=10)
    data = (
        peer_frame(core, BINARY, b"x" * 10, fin=False)
        + peer_frame(core, PING, b"y" * 100)
        + peer_frame(core, CONT, b"")
    )
    assert core.receive_data(data) == [Fragment(b"x" * 10, False), Fragment(b"", True)]


def test_compressed_message_inflating_over_max_size(side: str) -> None:
    core = make(side, deflate=True, max_message_size=1000)
    payload = peer_deflate(core).compress(b"a" * 1001, True)
    assert len(payload) < 100
    events = core.receive_data(peer_frame(core, BINARY, payload, rsv1=True))
    assert_failed(core, events, 1009)


def test_compressed_message_at_max_size(side: str) -> None:
    core = make(side, deflate=True, max_message_size=1000)
    payload = peer_deflate(core).compress(b"a" * 1000, True)
    assert core.receive_data(peer_frame(core, BINARY, payload, rsv1=True)) == [b"a" * 1000]


def test_compressed_fragment_over_max_fragment_size(side: str) -> None:
    core = make(side, deflate=True, max_message_size=None, max_fragment_size=100)
    payload = peer_deflate(core).compress(b"a" * 101, False)
    events = core.receive_data(peer_frame(core, TEXT, payload, fin=False, rsv1=True))
    assert_failed(core, events, 1009)


def test_compressed_fragments_over_max_size_in_total(side: str) -> None:
    core = make(side, deflate=True, max_message_size=100)
    codec = peer_deflate(core)
    first = codec.compress(b"a" * 60, False)
    second = codec.compress(b"a" * 60, True)
    data = peer_frame(core, BINARY, first, fin=False, rsv1=True) + peer_frame(core, CONT, second)
    events = core.receive_data(data)
    assert events[0] == Fragment(b"a" * 60, False)
    assert_failed(core, events, 1009)


def _compressible_kilobyte() -> bytes:
    # 1000 random a/b bytes: about 200 bytes compressed, inflating steadily.
    rng = random.Random(2)
    return bytes(rng.choice(b"ab") for _ in range(1000))


def test_compressed_frame_over_max_fragment_size_whole(side: str) -> None:
    core = make(side, deflate=True, max_message_size=None, max_fragment_size=300)
    payload = peer_deflate(core).compress(_compressible_kilobyte(), True)
    assert len(payload) < 300
    events = core.receive_data(peer_frame(core, BINARY, payload, rsv1=True))
    assert_failed(core, events, 1009)


def test_compressed_frame_over_max_fragment_size_in_chunks(side: str) -> None:
    core = make(side, deflate=True, max_message_size=None, max_fragment_size=300)
    payload = peer_deflate(core).compress(_compressible_kilobyte(), True)
    data = peer_frame(core, BINARY, payload, rsv1=True)
    events = []
    for i in range(len(data)):
        events += core.receive_data(data[i : i + 1])
    assert events and isinstance(events[-1], Failed) and events[-1].code == 1009


def test_decompression_bomb_output_is_bounded(side: str) -> None:
    core = make(side, deflate=True, max_message_size=64 * 1024)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(bytes(16 * 2**20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    data = peer_frame(core, BINARY, payload[:-4], rsv1=True)
    tracemalloc.start()
    try:
        events = core.receive_data(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_failed(core, events, 1009)
    assert peak < 1 * 2**20  # far below the 16 MiB the bomb inflates to


# -- permessage-deflate ------------------------------------------------------------------


def test_receive_compressed_text(side: str) -> None:
    core = make(side, deflate=True)
    payload = peer_deflate(core).compress(("café " * 20).encode(), True)
    assert core.receive_data(peer_frame(core, TEXT, payload, rsv1=True)) == ["café " * 20]


def test_receive_compressed_binary(side: str) -> None:
    core = make(side, deflate=True)
    payload = peer_deflate(core).compress(b"\x00\x01" * 100, True)
    assert core.receive_data(peer_frame(core, BINARY, payload, rsv1=True)) == [b"\x00\x01" * 100]


def test_receive_compressed_message_in_many_frames(side: str) -> None:
    core = make(side, deflate=True)
    codec = peer_deflate(core)
    parts = [b"first ", b"second ", b"third"]
    events = []
    for i, part in enumerate(parts):
        fin = i == len(parts) - 1
        payload = codec.compress(part, fin)
        frame = peer_frame(core, CONT if i else TEXT, payload, fin=fin, rsv1=i == 0)
        events += core.receive_data(frame)
    assert events == [
        Fragment("first ", False),
        Fragment("second ", False),
        Fragment("third", True),
    ]


def test_receive_compressed_frame_in_chunks(side: str) -> None:
    core = make(side, deflate=True)
    text = "compress me " * 500
    data = peer_frame(core, TEXT, peer_deflate(core).compress(text.encode(), True), rsv1=True)
    events = []
    for i in range(0, len(data), 7):
        events += core.receive_data(data[i : i + 7])
    assert list(join_messages(events)) == [text]


def test_receive_compressed_messages_with_context_takeover(side: str) -> None:
    core = make(side, deflate=True)
    codec = peer_deflate(core)
    data = b"".join(
        peer_frame(core, TEXT, codec.compress(b"same text", True), rsv1=True) for _ in range(3)
    )
    assert core.receive_data(data) == ["same text"] * 3


def test_receive_uncompressed_message_with_deflate(side: str) -> None:
    core = make(side, deflate=True)
    assert core.receive_data(peer_frame(core, TEXT, "plain")) == ["plain"]


def test_receive_empty_compressed_message(side: str) -> None:
    core = make(side, deflate=True)
    payload = peer_deflate(core).compress(b"", True)
    assert core.receive_data(peer_frame(core, BINARY, payload, rsv1=True)) == [b""]


def test_corrupt_compressed_data(side: str) -> None:
    core = make(side, deflate=True)
    events = core.receive_data(peer_frame(core, BINARY, b"\xff\xff\xff\xff", rsv1=True))
    assert_failed(core, events, 1007, "invalid compressed data")


def test_compressed_text_with_invalid_utf8(side: str) -> None:
    core = make(side, deflate=True)
    payload = peer_deflate(core).compress(b"caf\xe9", True)
    events = core.receive_data(peer_frame(core, TEXT, payload, rsv1=True))
    assert_failed(core, events, 1007, "invalid UTF-8")


def _peer_receives(core: ConnectionCore) -> list:
    """Feed what ``core`` sent to a peer core with deflate; return its events."""
    peer = make("server" if core.is_client else "client", deflate=True)
    return peer.receive_data(output(core))


def test_send_over_threshold_is_compressed(side: str) -> None:
    core = make(side, deflate=True, threshold=10)
    core.send_data(b"x" * 10, text=False)
    data = output(core)
    [frame] = parse_frames(data, masked=core.is_client)
    assert frame.rsv1 and frame.data != b"x" * 10
    peer = make("server" if core.is_client else "client", deflate=True)
    assert peer.receive_data(data) == [b"x" * 10]


def test_send_under_threshold_is_not_compressed(side: str) -> None:
    core = make(side, deflate=True, threshold=10)
    core.send_data(b"x" * 9, text=False)
    assert sent(core) == [Frame(True, BINARY, b"x" * 9)]


def test_send_compress_true_forces_compression(side: str) -> None:
    core = make(side, deflate=True, threshold=1000)
    core.send_data(b"small", text=True, compress=True)
    assert _peer_receives(core) == ["small"]


def test_send_compress_true_sets_rsv1(side: str) -> None:
    core = make(side, deflate=True, threshold=1000)
    core.send_data(b"small", text=True, compress=True)
    assert [frame.rsv1 for frame in sent(core)] == [True]


def test_send_compress_false_never_compresses(side: str) -> None:
    core = make(side, deflate=True, threshold=0)
    core.send_data(b"x" * 1000, text=False, compress=False)
    assert sent(core) == [Frame(True, BINARY, b"x" * 1000)]


def test_send_compress_true_without_deflate_sends_plain(side: str) -> None:
    core = make(side)
    core.send_data(b"x", text=False, compress=True)
    assert sent(core) == [Frame(True, BINARY, b"x")]


def test_send_fragmented_message_compressed(side: str) -> None:
    core = make(side, deflate=True, threshold=1000)
    core.send_data(b"a", text=True, fin=False)
    core.send_data(b"b", text=True, fin=False)
    core.send_data(b"c", text=True)
    data = output(core)
    frames = parse_frames(data, masked=core.is_client)
    assert [(f.opcode, f.fin, f.rsv1) for f in frames] == [
        (TEXT, False, True),
        (CONT, False, False),
        (CONT, True, False),
    ]
    peer = make("server" if core.is_client else "client", deflate=True)
    assert list(join_messages(peer.receive_data(data))) == ["abc"]


def test_send_fragmented_message_compress_false(side: str) -> None:
    core = make(side, deflate=True)
    core.send_data(b"a", text=False, fin=False, compress=False)
    core.send_data(b"b", text=False, compress=True)  # fixed by the first frame
    assert sent(core) == [Frame(False, BINARY, b"a"), Frame(True, CONT, b"b")]


def test_send_compressed_messages_with_context_takeover(side: str) -> None:
    core = make(side, deflate=True)
    for _ in range(3):
        core.send_data(b"repeat " * 10, text=False)
    assert _peer_receives(core) == [b"repeat " * 10] * 3


# -- the closing handshake: the peer closes first ----------------------------------------------


def test_peer_close_is_echoed(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, CLOSE, serialize_close(1000, "bye")))
    assert events == [CloseReceived(1000, "bye")]
    assert sent(core) == [close_frame(1000, "bye")]
    assert core.state is State.CLOSING
    assert core.close_rcvd == (1000, "bye") and core.close_sent == (1000, "bye")


@pytest.mark.parametrize("code", [1001, 1003, 1011, 3000, 4999])
def test_peer_close_code_is_echoed(code: int) -> None:
    core = make()
    assert core.receive_data(peer_frame(core, CLOSE, serialize_close(code))) == [
        CloseReceived(code, "")
    ]
    assert sent(core) == [close_frame(code)]


def test_empty_close_is_answered_with_an_empty_close(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, CLOSE, b"")) == [CloseReceived(1005, "")]
    assert sent(core) == [Frame(True, CLOSE, b"")]


def test_peer_close_then_eof(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1000, "bye")))
    output(core)  # our reply is written
    core.receive_eof()
    assert core.state is State.CLOSED
    assert (core.close_code, core.close_reason) == (1000, "bye")
    exc = core.closed_exception()
    assert type(exc) is ConnectionClosedOK and (exc.code, exc.reason) == (1000, "bye")


def test_peer_empty_close_then_eof_is_ok(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, CLOSE, b""))
    output(core)
    core.receive_eof()
    exc = core.closed_exception()
    assert type(exc) is ConnectionClosedOK and exc.code == 1005 and exc.reason == ""


def test_peer_close_1001_is_ok() -> None:
    core = make()
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1001, "going")))
    output(core)
    core.receive_eof()
    assert type(core.closed_exception()) is ConnectionClosedOK


@pytest.mark.parametrize("code", [1002, 1011, 3000, 4000])
def test_peer_close_with_an_error_code(code: int) -> None:
    core = make()
    core.receive_data(peer_frame(core, CLOSE, serialize_close(code, "err")))
    output(core)
    core.receive_eof("ignored cause")
    exc = core.closed_exception()
    assert type(exc) is ConnectionClosedError and (exc.code, exc.reason) == (code, "err")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_peer_close_with_an_invalid_code(side: str, code: int) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, CLOSE, code.to_bytes(2, "big")))
    assert_failed(core, events, 1002, f"invalid close code {code}")


def test_peer_close_with_a_1_byte_payload(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, CLOSE, b"\x03"))
    assert_failed(core, events, 1002, "1-byte payload")


def test_peer_close_with_a_bad_utf8_reason(side: str) -> None:
    core = make(side)
    events = core.receive_data(peer_frame(core, CLOSE, b"\x03\xe8\xff"))
    assert_failed(core, events, 1007, "close reason isn't valid UTF-8")


def test_peer_close_failure_sets_the_close_code_1006(side: str) -> None:
    core = make(side)
    [failed] = core.receive_data(peer_frame(core, CLOSE, b"\x03"))
    assert isinstance(failed, Failed)
    core.receive_eof()
    assert (core.close_code, core.close_reason) == (1006, failed.reason)


def test_input_after_peer_close_is_discarded(side: str) -> None:
    core = make(side)
    data = peer_frame(core, CLOSE, serialize_close(1000)) + peer_frame(core, TEXT, "late")
    assert core.receive_data(data) == [CloseReceived(1000, "")]
    assert core.receive_data(peer_frame(core, PING, b"p")) == []
    assert sent(core) == [close_frame(1000)]


def test_send_after_peer_close_is_invalid_state(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1000)))
    output(core)
    with pytest.raises(InvalidState, match="closing"):
        core.send_data(b"x", text=False)
    with pytest.raises(InvalidState):
        core.send_close()
    assert output(core) == b""


# -- the closing handshake: we close first ------------------------------------------------------


def test_send_close(side: str) -> None:
    core = make(side)
    core.send_close(1000, "done")
    assert sent(core) == [close_frame(1000, "done")]
    assert core.state is State.CLOSING
    assert core.close_sent == (1000, "done")
    assert core.close_code is None


def test_send_close_then_peer_answers(side: str) -> None:
    core = make(side)
    core.send_close(1000, "done")
    output(core)
    assert core.receive_data(peer_frame(core, CLOSE, serialize_close(1000, "done"))) == [
        CloseReceived(1000, "done")
    ]
    assert output(core) == b""  # no second close frame
    core.receive_eof()
    assert (core.close_code, core.close_reason) == (1000, "done")
    assert type(core.closed_exception()) is ConnectionClosedOK


def test_close_code_is_the_peers_not_ours() -> None:
    core = make()
    core.send_close(1000)
    output(core)
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1001, "away")))
    core.receive_eof()
    assert (core.close_code, core.close_reason) == (1001, "away")
    assert core.close_sent == (1000, "")


def test_send_close_without_answer(side: str) -> None:
    core = make(side)
    core.send_close(1000)
    output(core)
    core.receive_eof()
    assert core.close_code == 1006
    assert core.close_reason == "no close frame received after sending 1000 (OK)"
    assert type(core.closed_exception()) is ConnectionClosedError


def test_a_close_frame_is_sent_once_written_not_once_made(side: str) -> None:
    core = make(side)
    core.send_close(1000, "done")
    data = core.data_to_send()
    assert core.close_sent is None and core.close_frame is not None
    core.data_written(data[:-1])  # what came before it: still not sent
    assert core.close_sent is None
    core.data_written(data)
    assert core.close_sent == (1000, "done") and core.close_frame is None


@pytest.mark.parametrize("code", [1000, 1001, 4000])
def test_a_peer_close_whose_reply_wasnt_written_is_abnormal(side: str, code: int) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, CLOSE, serialize_close(code, "bye")))
    core.data_to_send()  # taken by a writer whose write then failed
    core.abandon("a write timed out: the peer stopped reading")
    core.receive_eof()
    assert core.close_rcvd == (code, "bye") and core.close_sent is None
    assert core.close_code == 1006
    assert core.close_reason == (
        f"received {describe_close(code)}, but our close frame wasn't sent: a write timed out: the peer stopped reading"
    )
    exc = core.closed_exception()
    assert type(exc) is ConnectionClosedError and (exc.code, exc.reason) == (1006, core.close_reason)


def test_our_close_not_written_before_the_peers_came_is_abnormal(side: str) -> None:
    core = make(side)
    core.send_close(1000)
    core.data_to_send()  # still being written when the peer's close arrives
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1000, "")))
    core.receive_eof("connection lost while writing: reset")
    assert core.close_code == 1006 and core.close_sent is None
    assert type(core.closed_exception()) is ConnectionClosedError


def test_data_after_our_close_is_dropped(side: str) -> None:
    core = make(side)
    core.send_close()
    output(core)
    data = peer_frame(core, TEXT, "late") + peer_frame(core, BINARY, b"x", fin=False)
    data += peer_frame(core, CONT, b"y")
    assert core.receive_data(data) == []
    assert core.receive_data(peer_frame(core, CLOSE, serialize_close(1000))) == [
        CloseReceived(1000, "")
    ]


def test_invalid_utf8_after_our_close_is_dropped(side: str) -> None:
    core = make(side)
    core.send_close()
    assert core.receive_data(peer_frame(core, TEXT, b"\xff")) == []


def test_large_frame_after_our_close_is_not_buffered(side: str) -> None:
    core = make(side, max_message_size=1000)
    core.send_close()
    data = peer_frame(core, BINARY, b"x" * 5000)
    assert core.receive_data(data[:100]) == []
    assert core.get_buffer() is None
    assert core.receive_data(data[100:] + peer_frame(core, CLOSE, b"")) == [CloseReceived(1005, "")]


def test_fragmented_message_interrupted_by_our_close(side: str) -> None:
    core = make(side)
    assert core.receive_data(peer_frame(core, TEXT, "a", fin=False)) == [Fragment("a", False)]
    core.send_close()
    assert core.receive_data(peer_frame(core, CONT, "b")) == []
    assert core.receive_data(peer_frame(core, TEXT, "c")) == []
    assert not core.input_closed


def test_protocol_errors_after_our_close_still_fail(side: str) -> None:
    core = make(side)
    core.send_close()
    output(core)
    events = core.receive_data(raw_frame(core, 0x83, b""))
    assert isinstance(events[-1], Failed) and events[-1].code == 1002
    assert output(core) == b""  # our close frame was sent already


def test_pings_after_our_close_are_not_answered(side: str) -> None:
    core = make(side)
    core.send_close()
    output(core)
    assert core.receive_data(peer_frame(core, PING, b"p")) == []
    assert output(core) == b""


def test_pongs_after_our_close_are_delivered(side: str) -> None:
    core = make(side)
    core.send_ping(b"p", "waiter")
    core.send_close()
    assert core.receive_data(peer_frame(core, PONG, b"p")) == [PongReceived(b"p", ["waiter"])]


@pytest.mark.parametrize(
    "call",
    [
        lambda core: core.send_data(b"x", text=True),
        lambda core: core.send_ping(b"x", None),
        lambda core: core.send_pong(b"x"),
        lambda core: core.send_close(),
    ],
    ids=["data", "ping", "pong", "close"],
)
def test_nothing_is_sent_after_our_close(side: str, call) -> None:
    core = make(side)
    core.send_close()
    output(core)
    with pytest.raises(InvalidState):
        call(core)
    assert output(core) == b""


@pytest.mark.parametrize("code", [1005, 1006, 1015, 999, 5000])
def test_send_close_with_an_unsendable_code(code: int) -> None:
    core = make()
    with pytest.raises(ValueError):
        core.send_close(code)
    assert core.state is State.OPEN and core.close_sent is None
    assert output(core) == b""


def test_send_close_with_a_too_long_reason() -> None:
    core = make()
    with pytest.raises(ValueError):
        core.send_close(1000, "x" * 124)
    assert core.state is State.OPEN


def test_send_close_with_a_reason_of_123_bytes(side: str) -> None:
    core = make(side)
    core.send_close(1000, "x" * 123)
    assert sent(core) == [close_frame(1000, "x" * 123)]


def test_send_close_when_closed() -> None:
    core = make()
    core.receive_eof()
    with pytest.raises(InvalidState, match="closed"):
        core.send_close()


# -- failing the connection ----------------------------------------------------------------


def test_fail_sends_a_close_frame(side: str) -> None:
    core = make(side)
    core.fail(1011, "internal error")
    assert sent(core) == [close_frame(1011, "internal error")]
    assert core.state is State.CLOSING
    assert core.close_sent == (1011, "internal error")


def test_input_after_fail_is_discarded_close_included(side: str) -> None:
    core = make(side)
    core.fail(1011, "oops")
    output(core)
    data = peer_frame(core, TEXT, "x") + peer_frame(core, CLOSE, serialize_close(1000))
    assert core.receive_data(data) == []
    assert core.close_rcvd is None
    assert output(core) == b""


def test_input_after_failed_event_is_discarded(side: str) -> None:
    core = make(side)
    data = raw_frame(core, 0x83, b"") + peer_frame(core, TEXT, "x")
    events = core.receive_data(data)
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert core.receive_data(peer_frame(core, TEXT, "y")) == []


def test_fail_in_the_middle_of_a_frame_discards_its_rest(side: str) -> None:
    core = make(side)
    data = peer_frame(core, BINARY, b"x" * 1000)
    core.receive_data(data[:500])
    core.fail(1011, "stop")
    assert core.get_buffer() is None
    assert core.receive_data(data[500:]) == []


def test_fail_after_our_close_sends_nothing_more(side: str) -> None:
    core = make(side)
    core.send_close(1000)
    output(core)
    core.fail(1011, "late failure")
    assert output(core) == b""
    assert core.close_sent == (1000, "")


def test_fail_truncates_a_long_reason(side: str) -> None:
    core = make(side)
    core.fail(1011, "é" * 100)
    [frame] = sent(core)
    assert len(frame.data) <= 125
    assert frame.data[2:].decode().endswith("...")


def test_fail_after_eof_changes_nothing() -> None:
    core = make()
    core.receive_eof("gone")
    core.fail(1011, "late")
    assert core.state is State.CLOSED and output(core) == b""
    assert core.close_reason == "gone"


@pytest.mark.parametrize("code", [1002, 1007, 1009, 1011])
def test_fail_close_code_and_reason(side: str, code: int) -> None:
    core = make(side)
    core.fail(code, "the cause")
    core.receive_eof()
    assert (core.close_code, core.close_reason) == (1006, "the cause")
    exc = core.closed_exception()
    assert type(exc) is ConnectionClosedError
    assert (exc.code, exc.reason) == (core.close_code, core.close_reason)


@pytest.mark.parametrize(
    "build, code",
    [
        (lambda core: raw_frame(core, 0x83, b""), 1002),
        (lambda core: peer_frame(core, TEXT, b"\xff"), 1007),
        (lambda core: peer_frame(core, BINARY, b"x" * 11), 1009),
    ],
    ids=["1002", "1007", "1009"],
)
def test_protocol_error_close_code_and_reason(side: str, build, code: int) -> None:
    core = make(side, max_message_size=10)
    [failed] = core.receive_data(build(core))
    assert isinstance(failed, Failed) and failed.code == code
    core.receive_eof("TCP reset")
    assert (core.close_code, core.close_reason) == (1006, failed.reason)
    exc = core.closed_exception()
    assert type(exc) is ConnectionClosedError and exc.reason == failed.reason


# -- receive_eof and abandon ---------------------------------------------------------------


def test_eof_without_close_frame(side: str) -> None:
    core = make(side)
    core.receive_eof()
    assert (core.close_code, core.close_reason) == (1006, "TCP closed without a close frame")
    assert type(core.closed_exception()) is ConnectionClosedError


def test_eof_with_a_cause(side: str) -> None:
    core = make(side)
    core.receive_eof("keepalive ping timeout")
    assert (core.close_code, core.close_reason) == (1006, "keepalive ping timeout")
    exc = core.closed_exception()
    assert (exc.code, exc.reason) == (1006, "keepalive ping timeout")


def test_eof_cause_doesnt_replace_the_peers_reason() -> None:
    core = make()
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1000, "bye")))
    output(core)
    core.receive_eof("connection reset")
    assert core.close_reason == "bye"


def test_eof_in_the_middle_of_a_frame(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, "x" * 1000)
    assert core.receive_data(data[:500]) == []
    core.receive_eof()
    assert core.state is State.CLOSED
    assert core.get_buffer() is None
    assert core.receive_data(data[500:]) == []


def test_eof_twice_keeps_the_first_cause() -> None:
    core = make()
    core.receive_eof("first")
    core.receive_eof("second")
    assert core.close_reason == "first"


def test_abandon_sends_nothing(side: str) -> None:
    core = make(side)
    core.abandon("send timed out")
    assert output(core) == b""
    assert core.state is State.CLOSING
    assert core.close_sent is None


def test_abandon_then_eof(side: str) -> None:
    core = make(side)
    core.abandon("send timed out")
    core.receive_eof()
    assert (core.close_code, core.close_reason) == (1006, "send timed out")
    assert type(core.closed_exception()) is ConnectionClosedError


def test_abandon_while_connecting_closes() -> None:
    core = make(opened=False)
    core.abandon("handshake timed out")
    assert core.state is State.CLOSED
    assert core.close_reason == "handshake timed out"


def test_send_after_abandon_is_invalid_state(side: str) -> None:
    core = make(side)
    core.abandon("gone")
    with pytest.raises(InvalidState):
        core.send_data(b"x", text=False)


def test_ping_after_abandon_is_not_answered(side: str) -> None:
    core = make(side)
    core.abandon("gone")
    core.receive_data(peer_frame(core, PING, b"p"))
    assert output(core) == b""


@pytest.mark.parametrize("late", ["message", "bad frame", "close frame"])
def test_input_after_abandon_is_discarded_unparsed(side: str, late: str) -> None:
    """As after a failure (RFC 6455 §7.1.7): no message, no error, and the close code stays ours."""
    core = make(side)
    core.abandon("send timed out")
    assert core.input_closed
    data = {
        "message": peer_frame(core, TEXT, "late"),
        "bad frame": raw_frame(core, 0xF3),  # a reserved opcode
        "close frame": peer_frame(core, CLOSE, serialize_close(1000, "bye")),
    }[late]
    assert core.receive_data(data) == []
    core.receive_eof()
    assert (core.close_code, core.close_reason) == (1006, "send timed out")


def test_peer_close_after_abandon_is_not_answered(side: str) -> None:
    core = make(side)
    core.abandon("send timed out")
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1000)))
    assert output(core) == b""


def test_closed_exception_before_closed_asserts() -> None:
    core = make()
    with pytest.raises(AssertionError):
        core.closed_exception()
    core.send_close()
    with pytest.raises(AssertionError):
        core.closed_exception()


def test_close_code_is_none_while_closing(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, CLOSE, serialize_close(1000)))
    assert core.close_code is None and core.close_reason is None


# -- the ping registry ---------------------------------------------------------------------


def test_send_ping_returns_the_payload(side: str) -> None:
    core = make(side)
    assert core.send_ping(b"abc", None) == b"abc"
    assert sent(core) == [Frame(True, PING, b"abc")]


def test_send_ping_random_payloads(side: str) -> None:
    core = make(side)
    payloads = [core.send_ping(None, i) for i in range(20)]
    assert all(len(payload) == 4 for payload in payloads)
    assert len(set(payloads)) == 20
    assert [frame.data for frame in sent(core)] == payloads


def test_pong_returns_its_waiter(side: str) -> None:
    core = make(side)
    core.send_ping(b"a", "waiter a")
    assert core.receive_data(peer_frame(core, PONG, b"a")) == [PongReceived(b"a", ["waiter a"])]


def test_pong_acknowledges_earlier_pings_in_order(side: str) -> None:
    core = make(side)
    for name in "abc":
        core.send_ping(name.encode(), name)
    assert core.receive_data(peer_frame(core, PONG, b"b")) == [PongReceived(b"b", ["a", "b"])]
    assert core.receive_data(peer_frame(core, PONG, b"c")) == [PongReceived(b"c", ["c"])]


def test_pong_for_an_acknowledged_ping_is_unsolicited(side: str) -> None:
    core = make(side)
    core.send_ping(b"a", "a")
    core.send_ping(b"b", "b")
    core.receive_data(peer_frame(core, PONG, b"b"))
    assert core.receive_data(peer_frame(core, PONG, b"a")) == [PongReceived(b"a", [])]


def test_unsolicited_pong(side: str) -> None:
    core = make(side)
    core.send_ping(b"a", "a")
    assert core.receive_data(peer_frame(core, PONG, b"zzz")) == [PongReceived(b"zzz", [])]
    assert core.receive_data(peer_frame(core, PONG, b"a")) == [PongReceived(b"a", ["a"])]


def test_pings_a_peer_never_answers_are_bounded(side: str) -> None:
    """A peer that answers no ping (keepalive with ping_timeout=None pings it
    for ever) can't grow the pings waiting for a pong without bound: past
    MAX_PINGS_WAITING, the oldest is forgotten."""
    core = make(side)
    total = MAX_PINGS_WAITING + 10
    payloads = [core.send_ping(None, n) for n in range(total)]
    # The oldest ten are forgotten: their pongs are unsolicited now.
    assert core.receive_data(peer_frame(core, PONG, payloads[9])) == [PongReceived(payloads[9], [])]
    # The newest acknowledges every ping still remembered, oldest first.
    acknowledged = core.receive_data(peer_frame(core, PONG, payloads[-1]))
    assert acknowledged == [PongReceived(payloads[-1], list(range(10, total)))]
    # The payload of a forgotten ping may be sent again.
    core.send_ping(payloads[0], "again")
    assert core.receive_data(peer_frame(core, PONG, payloads[0])) == [PongReceived(payloads[0], ["again"])]


def test_duplicate_ping_payload(side: str) -> None:
    core = make(side)
    core.send_ping(b"a", 1)
    output(core)
    with pytest.raises(ValueError, match="already waiting"):
        core.send_ping(b"a", 2)
    assert output(core) == b""


def test_ping_payload_reusable_after_its_pong(side: str) -> None:
    core = make(side)
    core.send_ping(b"a", 1)
    core.receive_data(peer_frame(core, PONG, b"a"))
    core.send_ping(b"a", 2)
    assert core.receive_data(peer_frame(core, PONG, b"a")) == [PongReceived(b"a", [2])]


def test_empty_ping_payload_has_a_waiter(side: str) -> None:
    core = make(side)
    core.send_ping(b"", "w")
    assert core.receive_data(peer_frame(core, PONG, b"")) == [PongReceived(b"", ["w"])]


# -- get_buffer / buffer_updated -------------------------------------------------------------


def _feed_via_buffer(core: ConnectionCore, data: bytes, first: int, step: int) -> list:
    """Feed ``data[:first]`` with receive_data, the rest through get_buffer in ``step``s."""
    events = core.receive_data(data[:first])
    position = first
    while position < len(data):
        buffer = core.get_buffer()
        if buffer is None:
            events += core.receive_data(data[position:])
            break
        size = min(step, len(buffer), len(data) - position)
        buffer[:size] = data[position : position + size]
        position += size
        events += core.buffer_updated(size)
    return events


def test_get_buffer_is_none_between_frames() -> None:
    core = make()
    assert core.get_buffer() is None
    core.receive_data(peer_frame(core, TEXT, "whole"))
    assert core.get_buffer() is None


def test_get_buffer_gives_the_missing_part(side: str) -> None:
    core = make(side)
    data = peer_frame(core, BINARY, b"x" * 1000)
    core.receive_data(data[: len(data) - 600])
    buffer = core.get_buffer()
    assert buffer is not None and len(buffer) == 600


@pytest.mark.parametrize(
    "opcode, payload", [(BINARY, bytes(range(256)) * 200), (TEXT, "é€😀" * 3000)]
)
def test_buffer_updated_gives_the_same_events(side: str, opcode: Opcode, payload) -> None:
    a, b = make(side), make(side)
    data = peer_frame(a, opcode, payload) + peer_frame(a, TEXT, "next")
    expected = a.receive_data(data)
    assert _feed_via_buffer(b, data, 20, 4099) == expected
    assert b.bytes_received == a.bytes_received == len(data)


def test_buffer_updated_fragments(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, "a" * 5000, fin=False) + peer_frame(core, CONT, "b" * 5000)
    events = _feed_via_buffer(core, data, 10, 3000)
    assert list(join_messages(events)) == ["a" * 5000 + "b" * 5000]


def test_buffer_updated_invalid_utf8_fails_fast(side: str) -> None:
    core = make(side)
    payload = b"x" * 100 + b"\xff" + b"x" * 5000
    data = peer_frame(core, TEXT, payload)
    start = len(data) - len(payload)
    assert core.receive_data(data[: start + 50]) == []
    buffer = core.get_buffer()
    assert buffer is not None
    buffer[:100] = data[start + 50 : start + 150]
    events = core.buffer_updated(100)
    assert_failed(core, events, 1007)
    assert core.get_buffer() is None


def test_buffer_updated_compressed(side: str) -> None:
    core = make(side, deflate=True)
    text = "squeeze " * 5000
    data = peer_frame(core, TEXT, peer_deflate(core).compress(text.encode(), True), rsv1=True)
    assert list(join_messages(_feed_via_buffer(core, data, 6, 50))) == [text]


def test_buffer_updated_after_failure_yields_nothing(side: str) -> None:
    core = make(side)
    data = peer_frame(core, BINARY, b"x" * 1000)
    core.receive_data(data[:100])
    buffer = core.get_buffer()
    assert buffer is not None
    core.fail(1011, "stop")
    buffer[:10] = data[100:110]
    assert core.buffer_updated(10) == []


# -- counters ------------------------------------------------------------------------------


def test_bytes_received_counts_every_byte(side: str) -> None:
    core = make(side)
    data = peer_frame(core, TEXT, "hello") + peer_frame(core, PING, b"p")
    core.receive_data(data[:3])
    core.receive_data(data[3:])
    assert core.bytes_received == len(data)


def test_bytes_received_counts_discarded_input(side: str) -> None:
    core = make(side)
    core.fail(1011, "x")
    core.receive_data(b"garbage")
    assert core.bytes_received == 7


def test_bytes_sent_matches_the_output(side: str) -> None:
    core = make(side)
    core.send_data(b"x" * 300, text=False)
    core.send_ping(b"p", None)
    core.receive_data(peer_frame(core, PING, b"q"))
    core.send_close()
    assert core.bytes_sent == len(output(core))


def test_messages_counters(side: str) -> None:
    core = make(side)
    data = (
        peer_frame(core, TEXT, "a")
        + peer_frame(core, BINARY, b"b", fin=False)
        + peer_frame(core, PING)
        + peer_frame(core, CONT, b"c")
    )
    core.receive_data(data)
    core.send_data(b"x", text=True)
    core.send_data(b"y", text=False, fin=False)
    assert (core.messages_received, core.messages_sent) == (2, 1)
    core.send_data(b"z", text=False)
    core.send_ping(b"p", None)
    assert core.messages_sent == 2


def test_invalid_text_message_is_not_counted(side: str) -> None:
    core = make(side)
    core.receive_data(peer_frame(core, TEXT, b"\xff"))
    assert core.messages_received == 0


def test_messages_received_counts_compressed_messages(side: str) -> None:
    core = make(side, deflate=True)
    codec = peer_deflate(core)
    core.receive_data(peer_frame(core, TEXT, codec.compress(b"abc", True), rsv1=True))
    assert core.messages_received == 1


# -- input buffers -------------------------------------------------------------------------


def test_receive_nothing(side: str) -> None:
    core = make(side)
    assert core.receive_data(b"") == []
    assert core.bytes_received == 0


def test_events_dont_alias_the_input_buffer(side: str) -> None:
    core = make(side)
    data = bytearray(
        peer_frame(core, BINARY, b"whole")
        + peer_frame(core, BINARY, b"frag", fin=False)
        + peer_frame(core, PONG, b"pong")
        + peer_frame(core, CONT, b"ment")
    )
    events = core.receive_data(memoryview(data))
    data[:] = bytes(len(data))
    assert events == [
        b"whole",
        Fragment(b"frag", False),
        PongReceived(b"pong", []),
        Fragment(b"ment", True),
    ]


def test_64_bit_header_one_byte_at_a_time(side: str) -> None:
    core = make(side, max_message_size=None)
    payload = bytes(range(256)) * 300
    data = peer_frame(core, BINARY, payload)
    for i in range(14):
        assert core.receive_data(data[i : i + 1]) == []
    assert core.receive_data(data[14:]) == [payload]


def test_client_mask_keys_are_refilled() -> None:
    core = make("client")
    for i in range(600):  # more frames than one pool of keys
        core.send_data(i.to_bytes(2, "big"), text=False)
    frames = sent(core)
    assert [frame.data for frame in frames] == [i.to_bytes(2, "big") for i in range(600)]


def test_a_huge_announced_frame_without_a_limit_costs_nothing_until_its_bytes_come(side: str) -> None:
    # With max_size=None a peer may announce a frame of 2**40 bytes: the
    # buffer grows with what arrives instead of being allocated up front.
    core = make(side, max_message_size=None, max_fragment_size=None)
    tracemalloc.start()
    try:
        assert core.receive_data(raw_frame(core, 0x82, b"x" * 1000, length=2**40)) == []
        for _ in range(100):
            assert core.receive_data(b"y" * 1000) == []
        buffer = core.get_buffer()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert buffer is not None and len(buffer) < 2**20
    assert peak < 2**20, peak
