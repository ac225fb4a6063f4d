"""The live connection as a socket-free state machine (RFC 6455 §5-7, RFC 7692).

Theory of operation
-------------------
:class:`ConnectionCore` holds every rule that applies to a WebSocket
connection once its opening handshake is done, and does no I/O:

* **bytes in, events out.** :meth:`~ConnectionCore.receive_data` parses
  whatever bytes the socket gave, however they are split, and returns events
  (its frame parser is :class:`~syncws.framedecoder.FrameDecoder`, which
  hands each frame to the core's rules, :class:`~syncws.framedecoder.FrameSink`):
  a whole message received in one frame comes out as itself (``str`` or
  ``bytes``, so the common case costs no event object), the frames of a
  fragmented message as :class:`Fragment` events, and then :class:`PongReceived`,
  :class:`CloseReceived` and :class:`Failed`. Pings are answered here.
  :meth:`~ConnectionCore.receive_eof` says the peer closed TCP.
* **calls in, bytes out.** :meth:`~ConnectionCore.send_data`,
  :meth:`~ConnectionCore.send_ping`, :meth:`~ConnectionCore.send_pong`,
  :meth:`~ConnectionCore.send_close` and :meth:`~ConnectionCore.fail` append
  serialized frames to an output buffer that
  :meth:`~ConnectionCore.data_to_send` empties, in order.

It never reads a clock, starts a thread or touches a socket: what it can't
know (a ping's sender wants to be told of its pong; the connection was lost,
and why) is passed in. So each rule is tested with bytes alone
(``tests/test_core.py``) and the whole machine can be fuzzed.

The rules it keeps, each in one place:

1. **Phases** change only in :meth:`~ConnectionCore._set_phase`, along
   :data:`PHASE_TRANSITIONS`. A :class:`Phase` says what the public
   :class:`State` (``CONNECTING → OPEN → CLOSING → CLOSED``) can't: who
   closed first, whether the connection failed or was abandoned; and
   :data:`PHASES` says, for each, what it allows: whether messages may be
   sent (:attr:`~ConnectionCore.can_send`) and whether input is parsed or
   discarded (:attr:`~ConnectionCore.input_closed`). ``CLOSING`` starts when
   a close frame is sent or received; ``CLOSED`` when the transport is gone.
2. **Nothing follows our close frame** (§5.5.1): only ``OPEN`` can send, and
   every frame goes through the one output buffer.
3. **A failure stops the input** (§7.1.7): after :meth:`fail` (or a protocol
   error found here), further bytes are discarded, the peer's close frame
   included. Failing, abandoning and the end of TCP share one teardown
   (:meth:`~ConnectionCore._end_input`).
4. **Data after our close frame is dropped** (§1.4 allows it): a peer that
   keeps streaming while we close can't grow our memory.
5. **Sizes** are checked before a payload is buffered: a frame's announced
   length against ``max_fragment_size`` and what is left of
   ``max_message_size``; a compressed frame's output while it inflates.
6. **UTF-8** is validated as the bytes arrive, inside a frame too, so a bad
   text message fails with the chunk that holds its first invalid byte.
7. **The close code** of a closed connection (:attr:`close_code`) is the one
   the peer's close frame carried (1005 if it carried none), or 1006 when no
   close frame was received or ours wasn't written (:attr:`close_sent` is
   set only once the writer says so, :meth:`data_written`);
   :attr:`close_reason` is the peer's reason, or else what ended the
   connection. The exception for a closed connection
   (:meth:`closed_exception`) carries the same two values.

Threads: the core is not thread-safe. :mod:`syncws.protocol` calls it under
one lock, never held during I/O; :meth:`receive_data` is only ever called by
one thread at a time (the reader thread).
"""

from __future__ import annotations

import codecs
import enum
import os
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple, Union

from .close_codes import OK_CLOSE_CODES, CloseCode, describe_close
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    PayloadTooBig,
    WebSocketProtocolError,
)
from .framing import (
    FIN,
    MAX_CONTROL_PAYLOAD,
    RSV1,
    Opcode,
    check_header,
    encode_frame,
    encode_frame_bytes,
    pack_frame,
    parse_close,
    serialize_close,
)
from .framedecoder import FrameDecoder, PartialFrame
from .masking import apply_mask_inplace

__all__ = [
    "State",
    "Phase",
    "PhaseRules",
    "PHASES",
    "PHASE_TRANSITIONS",
    "TRANSITIONS",
    "ConnectionCore",
    "MAX_PINGS_WAITING",
    "Fragment",
    "PongReceived",
    "CloseReceived",
    "Failed",
    "Event",
    "Data",
]

Data = Union[str, bytes]
BytesLike = Union[bytes, bytearray, memoryview]


class State(enum.IntEnum):
    """The state of a connection."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Phase(enum.Enum):
    """Where a connection is in its life, as precisely as its rules need.

    Each phase's :class:`PhaseRules` are in :data:`PHASES`; the moves
    between phases in :data:`PHASE_TRANSITIONS`.
    """

    CONNECTING = "the opening handshake is under way"
    OPEN = "messages go both ways"
    CLOSE_SENT = "we closed first; the peer's close frame may come"
    CLOSE_RECEIVED = "the peer closed first, and we answered"
    CLOSE_EXCHANGED = "we closed first, and the peer answered"
    FAILED = "we failed the connection (RFC 6455 §7.1.7)"
    ABANDONED = "given up without a closing handshake"
    CLOSED = "the transport is gone"


class PhaseRules(NamedTuple):
    """What a :class:`Phase` allows.

    Attributes:
        state: the public :class:`State` it belongs to.
        can_send: whether messages (and pings, pongs, a close frame) may be
            sent: only while open, since nothing may follow our close frame.
        parses_input: whether received bytes are parsed; otherwise they are
            counted and discarded (after the peer's close frame, a failure,
            or when the connection was given up).
    """

    state: State
    can_send: bool
    parses_input: bool


#: What each phase allows.
PHASES: Dict[Phase, PhaseRules] = {
    # Nothing is received before the handshake is done.
    Phase.CONNECTING: PhaseRules(State.CONNECTING, can_send=False, parses_input=False),
    Phase.OPEN: PhaseRules(State.OPEN, can_send=True, parses_input=True),
    # Until the peer's close frame comes, its control frames are handled
    # and its data dropped (rule 4).
    Phase.CLOSE_SENT: PhaseRules(State.CLOSING, can_send=False, parses_input=True),
    # Nothing may follow the peer's close frame.
    Phase.CLOSE_RECEIVED: PhaseRules(State.CLOSING, can_send=False, parses_input=False),
    Phase.CLOSE_EXCHANGED: PhaseRules(State.CLOSING, can_send=False, parses_input=False),
    Phase.FAILED: PhaseRules(State.CLOSING, can_send=False, parses_input=False),
    Phase.ABANDONED: PhaseRules(State.CLOSING, can_send=False, parses_input=False),
    Phase.CLOSED: PhaseRules(State.CLOSED, can_send=False, parses_input=False),
}

_ENDING = frozenset({Phase.FAILED, Phase.ABANDONED, Phase.CLOSED})

#: The moves a connection may make between phases; every other one is a bug.
PHASE_TRANSITIONS: Dict[Phase, FrozenSet[Phase]] = {
    Phase.CONNECTING: frozenset({Phase.OPEN, Phase.CLOSED}),
    Phase.OPEN: frozenset({Phase.CLOSE_SENT, Phase.CLOSE_RECEIVED}) | _ENDING,
    Phase.CLOSE_SENT: frozenset({Phase.CLOSE_EXCHANGED}) | _ENDING,
    Phase.CLOSE_RECEIVED: _ENDING,
    Phase.CLOSE_EXCHANGED: _ENDING,
    Phase.FAILED: frozenset({Phase.ABANDONED, Phase.CLOSED}),
    Phase.ABANDONED: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}

#: The transitions of the public :class:`State`, as the phases' make them.
TRANSITIONS: Dict[State, FrozenSet[State]] = {
    state: frozenset(
        PHASES[target].state
        for phase, targets in PHASE_TRANSITIONS.items() if PHASES[phase].state is state
        for target in targets if PHASES[target].state is not state
    )
    for state in State
}


class Fragment(NamedTuple):
    """One frame of a fragmented message.

    Attributes:
        data: the frame's payload, decompressed; ``str`` in a text message
            (a character split between frames comes whole with the later
            one), ``bytes`` in a binary one.
        fin: whether this is the message's last frame.
    """

    data: Data
    fin: bool


class PongReceived(NamedTuple):
    """A pong arrived.

    Attributes:
        data: its payload.
        waiters: the waiters given to :meth:`ConnectionCore.send_ping` for
            the pings it acknowledges (its own and every earlier one), oldest
            first; empty for an unsolicited pong.
    """

    data: bytes
    waiters: List[Any]


class CloseReceived(NamedTuple):
    """The peer's close frame arrived; it was answered if we hadn't closed.

    Attributes:
        code: its code (1005 when it had none).
        reason: its reason.
    """

    code: int
    reason: str


class Failed(NamedTuple):
    """The peer broke the protocol (or a limit) and the connection was failed.

    A close frame with ``code`` was queued if none had been sent; the input
    that follows is discarded.

    Attributes:
        code: the close code the failure calls for (1002, 1007, 1009...).
        reason: what the peer did.
    """

    code: int
    reason: str


Event = Union[str, bytes, Fragment, PongReceived, CloseReceived, Failed]


# Enum members as plain names, which the code below reads: reading
# State.OPEN is a lookup through the enum's metaclass, and every connection
# reads a few dozen of them (hot path: see
# docs/performance.rst#how-fast-against-what).
_CONNECTING, _OPEN, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSED
_CONT, _TEXT, _BINARY = Opcode.CONT, Opcode.TEXT, Opcode.BINARY
_CLOSE, _PING, _PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG
_NO_STATUS_RCVD = CloseCode.NO_STATUS_RCVD
_utf8_decode = codecs.utf_8_decode


# Without a size limit, a partial frame's first buffer; it doubles as bytes
# arrive.
_FIRST_BUFFER = 2**16
# Larger than any frame length (a 64-bit length with its top bit clear).
_NO_LIMIT = 2**63
# The first header byte of a whole text or binary message.
_FIN_TEXT, _FIN_BINARY = FIN | _TEXT, FIN | _BINARY
# Random bytes drawn at a time for masking keys: one system call per 256 frames.
_MASK_POOL_SIZE = 1024
#: The most pings that wait for their pong. Keepalive with
#: ``ping_timeout=None`` pings a peer that never answers for as long as the
#: connection lasts: past this many, sending a ping forgets the oldest, whose
#: waiter is then never returned (a pong acknowledges every earlier ping, so
#: a peer that answers at all keeps far fewer waiting).
MAX_PINGS_WAITING = 64
# The most frames that wait to be written before a ping's pong replaces
# the newest pong waiting, rather than joining it (see _receive_control).
_MAX_UNSENT_PONGS = 64


def _deflate_bound(size: int) -> int:
    """The most bytes deflate may take to encode ``size`` bytes (zlib's ``compressBound``)."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13


def _whole_message(text: bool, payload: BytesLike) -> Data:
    """A message received whole in one uncompressed frame, as recv() returns it.

    Raises:
        WebSocketProtocolError: a text message that isn't UTF-8 (1007).
    """
    if not text:
        return payload if type(payload) is bytes else bytes(payload)
    try:
        return str(payload, "utf-8")
    except UnicodeDecodeError as exc:
        raise WebSocketProtocolError(
            f"invalid UTF-8 in a text message: {exc.reason}", code=CloseCode.INVALID_DATA
        ) from None


def _truncate_reason(reason: str) -> str:
    """Cut a close reason to the 123 bytes a close frame can carry."""
    encoded = reason.encode()
    if len(encoded) <= MAX_CONTROL_PAYLOAD - 2:
        return reason
    return encoded[: MAX_CONTROL_PAYLOAD - 5].decode(errors="ignore") + "..."


class _Message:
    """The message being received: what its frames share.

    Attributes:
        text: a text message (its frames are decoded as UTF-8).
        compressed: its first frame had RSV1 (permessage-deflate).
        size: bytes received so far, decompressed.
        carry: the bytes of a UTF-8 character cut at the end of the last piece.
        fragmented: a frame of it was delivered already, as a :class:`Fragment`.
        frame_size: bytes of the current frame so far, decompressed.
    """

    __slots__ = ("text", "compressed", "size", "carry", "fragmented", "frame_size")

    def __init__(self, text: bool, compressed: bool) -> None:
        self.text = text
        self.compressed = compressed
        self.size = 0
        self.carry = b""
        self.fragmented = False
        self.frame_size = 0


class ConnectionCore:
    """One WebSocket connection's protocol, without I/O.

    Args:
        is_client: whether this is the client side: it masks the frames it
            sends and requires unmasked ones.
        max_message_size: the largest message accepted, in bytes after
            decompression; ``None`` for no limit. Over it: 1009.
        max_fragment_size: the largest frame accepted, likewise.
        deflate: the negotiated permessage-deflate codec
            (:class:`~syncws.extensions.permessage_deflate.PerMessageDeflate`),
            or ``None``.
        join_limit: data frames sent with a payload of at most this many
            bytes are output as one ``bytes`` object (see :meth:`data_to_send`);
            larger unmasked ones as their header and the payload, uncopied.
            A ``str`` message of at most this many characters is encoded
            straight into its frame (up to 4 bytes a character).

    The core starts in ``CONNECTING``; :meth:`open` starts the connection.
    """

    __slots__ = (
        "is_client", "max_message_size", "max_fragment_size", "join_limit", "decoder", "deflate",
        "phase", "state", "can_send", "close_rcvd", "close_sent", "close_frame", "_close_made", "bytes_sent", "_messages_delivered",
        "messages_sent", "_cause", "_message", "_held", "input_closed",
        "sending_fragmented", "_sending_compressed", "_pings", "outgoing", "_mask_pool", "_mask_position",
        "_last_pong",
    )

    def __init__(
        self,
        *,
        is_client: bool,
        max_message_size: Optional[int] = 2**20,
        max_fragment_size: Optional[int] = None,
        deflate: Any = None,
        join_limit: int = 2**16,
    ) -> None:
        self.is_client = is_client
        self.max_message_size = max_message_size
        self.max_fragment_size = max_fragment_size
        #: Unmasked data frames with a larger payload are output as header
        #: and payload apart, to be written without copying the payload.
        self.join_limit = join_limit
        #: The frame parser: bytes in, frames out (to this core's rules).
        #: Its fast path takes frames within both limits.
        self.decoder = FrameDecoder(
            masked=not is_client,
            simple_limit=min(_NO_LIMIT if limit is None else limit for limit in (max_message_size, max_fragment_size)),
        )
        self.deflate = deflate
        #: The :class:`Phase`; only :meth:`_set_phase` changes it, and with
        #: it the three attributes that follow, its :data:`PHASES` rules,
        #: kept as plain attributes for the paths that read them for every
        #: message.
        self.phase = Phase.CONNECTING
        #: The public :class:`State`.
        self.state = _CONNECTING
        #: Whether messages (and pings, pongs, a close frame) may be sent:
        #: only while ``OPEN``, since nothing may follow our close frame.
        self.can_send = False
        #: ``(code, reason)`` of the close frame received, or ``None``.
        self.close_rcvd: Optional[Tuple[int, str]] = None
        #: ``(code, reason)`` of the close frame sent: written whole to the
        #: transport (:meth:`data_written` says so), not merely made; or ``None``.
        self.close_sent: Optional[Tuple[int, str]] = None
        #: Our close frame (the object in :attr:`outgoing`) from when it is
        #: made until :meth:`data_written` sees it written; ``None`` otherwise.
        self.close_frame: Optional[BytesLike] = None
        # (code, reason) of the close frame we made, written or not: nothing
        # may follow it, and the peer's data is dropped after it (rule 4).
        self._close_made: Optional[Tuple[int, str]] = None
        #: Bytes sent (frame headers included), messages sent; the input's
        #: are :attr:`bytes_received` and :attr:`messages_received`.
        self.bytes_sent = 0
        self.messages_sent = 0
        # Messages received but those the decoder's fast path delivered.
        self._messages_delivered = 0
        # What ended the connection, when no close frame says it.
        self._cause = ""
        # The message being received (its first frame came).
        self._message: Optional[_Message] = None
        # Frames of the current message received in this batch of input,
        # not emitted yet (see _deliver).
        self._held: List[Data] = []
        #: ``True`` while input is discarded unparsed: before the opening
        #: handshake is done, and once the peer's close frame arrived
        #: (nothing may follow it) or the connection failed or was
        #: abandoned. Only the end of TCP matters then.
        self.input_closed = True
        #: Whether a fragmented message was started and not finished (read
        #: it; send_data() changes it). A plain attribute: send_message()
        #: reads it for every message.
        self.sending_fragmented = False
        # Whether the fragmented message being sent is compressed.
        self._sending_compressed = False
        # Pings waiting for their pong: payload -> waiter, in sending order.
        self._pings: Dict[bytes, Any] = {}
        #: Serialized frames waiting to be written, in order (headers and
        #: payloads); :meth:`data_to_send` takes them.
        self.outgoing: List[BytesLike] = []
        # The last pong put there, replaced when too many frames wait.
        self._last_pong: Optional[BytesLike] = None
        # Random bytes for masking keys (RFC 6455 §5.3), drawn
        # _MASK_POOL_SIZE bytes at a time: one system call per 256 frames
        # instead of one per frame. The
        # next key's offset; at the end, the first frame draws the pool.
        self._mask_pool = b""
        self._mask_position = _MASK_POOL_SIZE

    # -- state -----------------------------------------------------------------

    def _set_phase(self, phase: Phase) -> None:
        """Move to ``phase``: the one place where the phase, and the state, change.

        Input that the new phase discards leaves nothing of itself behind:
        the decoder drops its partial frame and pending bytes.
        """
        assert phase in PHASE_TRANSITIONS[self.phase], f"{self.phase.name} -> {phase.name}"
        rules = PHASES[phase]
        self.phase = phase
        self.state = rules.state
        self.can_send = rules.can_send
        self.input_closed = not rules.parses_input
        if self.input_closed:
            self.decoder.discard()

    def open(self, deflate: Any = None) -> None:
        """Start the connection once the opening handshake succeeded.

        Args:
            deflate: the negotiated permessage-deflate codec, if any.
        """
        if deflate is not None:
            self.deflate = deflate
        self._set_phase(Phase.OPEN)

    @property
    def close_code(self) -> Optional[int]:
        """The connection's close code (RFC 6455 §7.1.5); ``None`` until it is closed.

        The code of the close frame received (1005 if it had none), or 1006
        when none was received, or when ours wasn't sent: the closing
        handshake didn't happen (a close frame received is always answered,
        or follows ours, so it is the peer that never got one).
        """
        if self.state is not _CLOSED:
            return None
        if self.close_rcvd is None or self.close_sent is None:
            return CloseCode.ABNORMAL_CLOSURE
        return self.close_rcvd[0]

    @property
    def close_reason(self) -> Optional[str]:
        """The connection's close reason; ``None`` until it is closed.

        The reason of the close frame received; without one, what ended the
        connection (a failure we detected, a keepalive timeout, a lost
        connection...); when ours wasn't sent, the code received and what
        stopped ours.
        """
        if self.state is not _CLOSED:
            return None
        if self.close_rcvd is None:
            return self._cause
        if self.close_sent is None:
            return f"received {describe_close(self.close_rcvd[0])}, but our close frame wasn't sent: {self._cause}"
        return self.close_rcvd[1]

    def closed_exception(self) -> ConnectionClosed:
        """The exception for an operation on this closed connection.

        Its ``code`` and ``reason`` are :attr:`close_code` and
        :attr:`close_reason`; it is :exc:`~syncws.ConnectionClosedOK` when
        the code is one of :data:`~syncws.close_codes.OK_CLOSE_CODES`.

        Raises:
            AssertionError: the connection isn't closed yet.
        """
        assert self.state is _CLOSED, "closed_exception() before CLOSED"
        code = self.close_code
        reason = self.close_reason
        assert code is not None and reason is not None
        if code in OK_CLOSE_CODES:
            return ConnectionClosedOK(code, reason)
        return ConnectionClosedError(code, reason)

    # -- input -------------------------------------------------------------------

    @property
    def bytes_received(self) -> int:
        """Bytes received, frame headers included."""
        return self.decoder.bytes_received

    @property
    def messages_received(self) -> int:
        """Messages received whole (the last frame of a fragmented one included)."""
        return self._messages_delivered + self.decoder.simple_messages

    def receive_data(self, data: BytesLike) -> List[Event]:
        """Parse bytes received from the peer.

        The frames are parsed by :attr:`decoder`, which hands each to this
        core's rules (the reader thread calls the decoder itself, with this
        core: a call fewer per read).

        Args:
            data: the next bytes of the stream, split anywhere.

        Returns:
            The events they complete, in order. Protocol errors don't raise:
            they fail the connection and come out as a :class:`Failed` event.
        """
        return self.decoder.receive_data(data, self)

    def get_buffer(self) -> Optional[memoryview]:
        """Where the next bytes of a large frame's payload may be received directly.

        See :meth:`FrameDecoder.get_buffer <syncws.framedecoder.FrameDecoder.get_buffer>`.

        Returns:
            A view of the missing part of the partial frame's payload, or ``None``.
        """
        return self.decoder.get_buffer()

    def buffer_updated(self, size: int) -> List[Event]:
        """Account for ``size`` bytes received into :meth:`get_buffer`'s view.

        Returns:
            The events they complete, as for :meth:`receive_data`.
        """
        return self.decoder.buffer_updated(size, self)

    # -- the decoder's frames (FrameSink) ------------------------------------------

    def end_input(self, events: List[Event], error: Optional[Exception]) -> None:
        """The decoder parsed its input (up to ``error``, a protocol error, if any)."""
        if isinstance(error, WebSocketProtocolError):
            self._fail_on_input(error.code, str(error), events)
        elif error is not None:
            self._fail_on_input(CloseCode.MESSAGE_TOO_BIG, str(error), events)
        if self._held:
            self._release_held(events)

    def check_header(self, first: int, second: int, length: int) -> Opcode:
        """Apply RFC 6455 §5.2 and the size limits to a frame header.

        Returns:
            The frame's opcode.

        Raises:
            WebSocketProtocolError: the header breaks the protocol.
            PayloadTooBig: the announced length exceeds a limit.
        """
        opcode = check_header(
            first, second, length, mask=not self.is_client, allow_rsv1=self.deflate is not None
        )
        if opcode >= _CLOSE:
            return opcode
        if opcode is _CONT:
            if self._message is None:
                raise WebSocketProtocolError("continuation frame without a message to continue")
            if first & 0x40:
                raise WebSocketProtocolError("RSV1 set on a continuation frame")
        elif self._message is not None:
            raise WebSocketProtocolError(
                f"{opcode.name} frame inside a fragmented message: expected a continuation frame"
            )
        if self._close_made is None:
            compressed = bool(first & 0x40) or (self._message is not None and self._message.compressed)
            self._check_size(length, compressed)
        return opcode

    def _check_size(self, length: int, compressed: bool) -> None:
        """Refuse a frame whose announced length goes over a limit.

        A compressed frame's payload may exceed the size it inflates to by
        deflate's worst-case overhead on data that doesn't compress; its
        output is checked exactly while it inflates.
        """
        received = self._message.size if self._message is not None else 0
        slack = _deflate_bound if compressed else int
        after = " after decompression" if compressed else ""
        if self.max_fragment_size is not None and length > slack(self.max_fragment_size):
            raise PayloadTooBig(
                f"frame of {length} bytes exceeds max_size's fragment limit of "
                f"{self.max_fragment_size} bytes{after}"
            )
        if self.max_message_size is not None and length > slack(self.max_message_size - received):
            raise PayloadTooBig(
                f"message of more than {self.max_message_size} bytes{after} exceeds max_size "
                f"({received + length} bytes so far)"
            )

    def start_partial(
        self, fin: bool, opcode: Opcode, rsv1: bool, length: int, mask_key: Optional[bytes]
    ) -> PartialFrame:
        """Begin a data frame whose payload spans several receives."""
        if opcode is not _CONT:
            self._message = _Message(opcode is _TEXT, rsv1)
        elif self._message is not None:
            self._message.frame_size = 0
        first_size = length if self.decoder.simple_limit < _NO_LIMIT else _FIRST_BUFFER
        return PartialFrame(fin, length, mask_key, self._close_made is None, first_size)

    def process_partial(self, partial: PartialFrame, events: List[Event]) -> None:
        """Unmask and decode the newly arrived bytes of a partial frame.

        Text and compressed payloads are handled as they arrive, so invalid
        UTF-8 or a decompression bomb fails the connection before the frame
        is complete; a binary payload waits for its end.
        """
        message = self._message
        assert message is not None and partial.buffer is not None
        start, end = partial.processed, partial.received
        if end == start:
            return
        # Released on the way out: a PayloadBuffer is taken only without views.
        with memoryview(partial.buffer)[start:end] as view:
            if partial.mask_key is not None:
                offset = start % 4
                key = partial.mask_key[offset:] + partial.mask_key[:offset]
                apply_mask_inplace(view, key)
            if message.text or message.compressed:
                last = partial.fin and end == partial.length
                partial.pieces.append(self._decode(message, view, last))
        partial.processed = end

    def end_partial(self, partial: PartialFrame, events: List[Event]) -> None:
        """Deliver a partial frame once its payload is complete."""
        if partial.buffer is None:  # dropped: received after our close
            if partial.fin:
                self._message = None
            return
        message = self._message
        assert message is not None
        if not message.text and not message.compressed:
            message.size += partial.length
            self._deliver(message, partial.take_payload(), partial.fin, events)
            return
        pieces = partial.pieces
        data: Data = pieces[0] if len(pieces) == 1 else pieces[0][:0].join(pieces)  # type: ignore[arg-type]
        self._deliver(message, data, partial.fin, events)

    def _decode(self, message: _Message, data: BytesLike, last: bool) -> Data:
        """Decompress and decode one piece of a message's payload.

        Args:
            message: the message the piece belongs to.
            data: the (unmasked) piece.
            last: whether it ends the message.

        Returns:
            ``str`` for a text message, ``bytes`` for a binary one.
        """
        if message.compressed:
            remaining = None
            if self.max_message_size is not None:
                remaining = self.max_message_size - message.size
            if self.max_fragment_size is not None:
                left_in_frame = self.max_fragment_size - message.frame_size
                if remaining is None or left_in_frame < remaining:
                    remaining = left_in_frame
            data = self.deflate.decompress(data, last, remaining)
        # Decompressed bytes count against max_size.
        message.size += len(data)
        message.frame_size += len(data)
        if not message.text:
            return data if type(data) is bytes else bytes(data)
        if message.carry:
            data = message.carry + data
        try:
            text, consumed = _utf8_decode(data, "strict", last)
        except UnicodeDecodeError as exc:
            raise WebSocketProtocolError(
                f"invalid UTF-8 in a text message: {exc.reason}", code=CloseCode.INVALID_DATA
            ) from None
        carry = bytes(data[consumed:])
        if len(carry) >= 2 and carry[0] == 0xED and carry[1] >= 0xA0:
            # CPython waits for a surrogate's last byte to refuse it; its
            # first two already make the text invalid (fail fast).
            raise WebSocketProtocolError(
                "invalid UTF-8 in a text message: a surrogate (ED A0-BF)", code=CloseCode.INVALID_DATA
            )
        message.carry = carry
        return text

    def receive_frame(
        self, fin: bool, opcode: Opcode, rsv1: bool, payload: BytesLike, events: List[Event]
    ) -> None:
        """Handle a whole frame (its payload unmasked)."""
        if opcode >= _CLOSE:
            self._receive_control(opcode, payload, events)
            return
        if self._close_made is not None:
            # Rule 4: after our close frame, data is dropped; only the
            # message boundaries are followed, to keep parsing right.
            self._message = None if fin else (self._message or _Message(False, False))
            return
        message = self._message
        if opcode is not _CONT:
            if fin and not rsv1:
                # The common case: a whole uncompressed message in one frame.
                events.append(_whole_message(opcode is _TEXT, payload))
                self._messages_delivered += 1
                return
            message = self._message = _Message(opcode is _TEXT, rsv1)
        assert message is not None
        message.frame_size = 0
        self._deliver(message, self._decode(message, payload, fin), fin, events)

    def _deliver(self, message: _Message, data: Data, fin: bool, events: List[Event]) -> None:
        """Emit one decoded frame of a message: as the whole message, or as fragments.

        The frames of a fragmented message that arrive in one batch of input
        are held and come out as one :class:`Fragment` (see
        :meth:`_release_held`): a peer sending tiny fragments can't make the
        connection hold an object per fragment.
        """
        if fin and not message.fragmented:
            self._message = None
            self._messages_delivered += 1
            events.append(data)
            return
        message.fragmented = True
        self._held.append(data)
        if fin:
            self._message = None
            self._messages_delivered += 1
            self._release_held(events, fin=True)

    def _release_held(self, events: List[Event], fin: bool = False) -> None:
        """Emit the held frames of the message being received as one fragment."""
        held = self._held
        if held:
            self._held = []
            data: Data = held[0] if len(held) == 1 else held[0][:0].join(held)  # type: ignore[arg-type]
            events.append(Fragment(data, fin))

    def _receive_control(self, opcode: Opcode, payload: BytesLike, events: List[Event]) -> None:
        """Handle a ping, a pong or a close frame."""
        self._release_held(events)
        data = bytes(payload)
        if opcode is _PING:
            # Answered unless we closed: nothing may follow our close frame.
            if self.can_send:
                outgoing = self.outgoing
                if len(outgoing) >= _MAX_UNSENT_PONGS and outgoing[-1] is self._last_pong:
                    # Nobody takes the output (a send blocked on a peer that
                    # doesn't read holds the writer), and a peer that pings
                    # meanwhile would grow our pongs without bound: past the
                    # limit, the newest pong waiting answers only the newest
                    # ping, as RFC 6455 §5.5.3 allows. Only a pong is
                    # replaced: whatever else waits is someone's to send.
                    outgoing.pop()
                self._write_frame(_PONG, data)
                self._last_pong = self.outgoing[-1]
        elif opcode is _PONG:
            events.append(PongReceived(data, self._acknowledge_pings(data)))
        else:
            code, reason = parse_close(data)
            self.close_rcvd = (code, reason)
            if self.can_send:
                # Echo the code (RFC 6455 §5.5.1); a close frame without one
                # is answered with an empty one.
                echo = b"" if code == _NO_STATUS_RCVD else serialize_close(code, reason)
                self._write_close(code, reason, echo)
                self._set_phase(Phase.CLOSE_RECEIVED)
            else:  # the one other phase that parses input
                self._set_phase(Phase.CLOSE_EXCHANGED)
            events.append(CloseReceived(code, reason))

    def _acknowledge_pings(self, data: bytes) -> List[Any]:
        """Pop the pings a pong with ``data`` acknowledges; return their waiters."""
        if data not in self._pings:
            return []  # an unsolicited pong: a heartbeat
        waiters = []
        while True:
            key = next(iter(self._pings))
            waiters.append(self._pings.pop(key))
            if key == data:
                return waiters

    def _fail_on_input(self, code: int, reason: str, events: List[Event]) -> None:
        """Fail the connection over what the peer sent."""
        self._release_held(events)
        reason = _truncate_reason(reason)
        self.fail(code, reason)
        events.append(Failed(code, reason))

    def receive_eof(self, cause: str = "") -> None:
        """The transport is gone: the peer closed TCP, or it was aborted.

        Args:
            cause: why, for :attr:`close_reason` when no close frame
                arrived (a close frame's reason or an earlier cause wins).
        """
        if not cause:
            if self.close_sent is not None and self.close_rcvd is None:
                cause = f"no close frame received after sending {describe_close(*self.close_sent)}"
            else:
                cause = "TCP closed without a close frame"
        self._end_input(cause, Phase.CLOSED)

    def _end_input(self, cause: str, phase: Phase) -> None:
        """The one teardown: remember ``cause`` (the first one wins) and move to ``phase``.

        :meth:`fail`, :meth:`abandon` and :meth:`receive_eof` end here; the
        phase they move to discards the input (see :meth:`_set_phase`).
        A move that :data:`PHASE_TRANSITIONS` doesn't allow is no move: the
        teardown may come twice, and a connection given up isn't failed
        after all, nor does a closed one reopen.
        """
        if not self._cause:
            self._cause = cause
        if phase in PHASE_TRANSITIONS[self.phase]:
            self._set_phase(phase)

    # -- output ------------------------------------------------------------------

    def data_to_send(self) -> List[BytesLike]:
        """Take the bytes waiting to be written, in order.

        Each item is a whole frame, or, for an unmasked data frame over
        ``join_limit`` bytes, its header then its payload.
        """
        outgoing = self.outgoing
        if outgoing:
            self.outgoing = []
        return outgoing

    def _cannot_send(self) -> InvalidState:
        """Why nothing may be sent now (:attr:`can_send` is ``False``)."""
        if self.state is _CONNECTING:
            return InvalidState("the opening handshake isn't done yet")
        return InvalidState(f"the connection is {self.state.name.lower()}")

    def send_data(
        self,
        payload: Union[BytesLike, str],
        *,
        text: bool,
        fin: bool = True,
        compress: Optional[bool] = None,
    ) -> None:
        """Send one frame of a message: a whole message, or its next fragment.

        The frames of a fragmented message are sent by calls with
        ``fin=False`` then one with ``fin=True``; the first sets the type.

        Args:
            payload: the frame's payload: UTF-8 bytes for text, or a
                ``str``, encoded here.
            text: a text message; ignored after its first frame.
            fin: whether this frame ends the message.
            compress: with permessage-deflate, ``None`` compresses a whole
                message of at least the codec's ``threshold`` bytes and every
                fragmented message, ``False`` never, ``True`` always; fixed
                by the message's first frame.

        Raises:
            InvalidState: the connection isn't open, or a close frame was sent.
            UnicodeEncodeError: a ``str`` payload has a lone surrogate
                (nothing is sent).
        """
        if not self.can_send:
            raise self._cannot_send()
        data = payload.encode() if isinstance(payload, str) else payload
        deflate = self.deflate
        if self.sending_fragmented:
            opcode = _CONT
            compressed = self._sending_compressed
            rsv1 = False
        else:
            opcode = _TEXT if text else _BINARY
            compressed = deflate is not None and compress is not False and (
                compress or not fin or len(data) >= deflate.threshold
            )
            rsv1 = compressed
        if compressed:
            data = deflate.compress(data, fin)
        self.sending_fragmented = not fin
        self._sending_compressed = compressed and not fin
        if fin:
            self.messages_sent += 1
        self._write_frame(opcode, data, fin, rsv1)

    def send_message(
        self, payload: Union[BytesLike, str], text: bool, compress: Optional[bool] = None
    ) -> Optional[Sequence[BytesLike]]:
        """Send a whole message in one frame and take the bytes to write.

        What ``send_data(payload, text=text, fin=True, compress=compress)``
        followed by :meth:`data_to_send` does, in one call: a writer's path
        for every whole message, where each call counts.

        Returns:
            The bytes to write; ``None``, having sent nothing, while a
            fragmented message is under way (the message must wait for its
            end: a writer finds out here, in the call it makes anyway).

        Raises:
            InvalidState: the connection isn't open, or a close frame was
                sent.
            UnicodeEncodeError: a ``str`` payload has a lone surrogate
                (nothing is sent).
        """
        if self.sending_fragmented:
            return None
        if self.deflate is None and (self.is_client or len(payload) <= self.join_limit):
            if not self.can_send:
                raise self._cannot_send()
            # _write_frame()'s data frame in one bytes object, inline (a
            # deliberate copy of its few lines, held to it by
            # tests/test_core.py): one call less for every message sent
            # (hot path: see docs/performance.rst#how-fast-against-what).
            # A str goes into the frame unencoded (pack_frame() encodes it).
            if self.is_client:
                position = self._mask_position
                if position >= _MASK_POOL_SIZE:
                    position = self._new_mask_pool()
                self._mask_position = position + 4
                frame = pack_frame(_FIN_TEXT if text else _FIN_BINARY, payload, self._mask_pool, position)
            else:
                frame = pack_frame(_FIN_TEXT if text else _FIN_BINARY, payload, None)
            self.messages_sent += 1
            self.bytes_sent += len(frame)
            outgoing = self.outgoing
            if not outgoing:  # the usual case: no pong or close reply waits
                return (frame,)  # a tuple costs less to make than a list
            outgoing.append(frame)
        else:
            self.send_data(payload, text=text, fin=True, compress=compress)
        outgoing = self.outgoing
        self.outgoing = []
        return outgoing

    def send_ping(self, data: Optional[bytes], waiter: Any) -> bytes:
        """Send a ping and remember who waits for its pong.

        Args:
            data: the payload (at most 125 bytes), or ``None`` for 4 random
                bytes.
            waiter: anything; a :class:`PongReceived` event returns it when
                the matching pong (or a later one) arrives, unless
                :data:`MAX_PINGS_WAITING` later pings are sent before it.

        Returns:
            The payload sent.

        Raises:
            ValueError: a ping with this payload waits for its pong, or the
                payload is too long.
            InvalidState: the connection isn't open.
        """
        if not self.can_send:
            raise self._cannot_send()
        if data is None:
            data = os.urandom(4)
            while data in self._pings:
                data = os.urandom(4)
        elif data in self._pings:
            raise ValueError(
                f"a ping with payload {data!r} is already waiting for its pong; "
                f"wait for it or use another payload"
            )
        self._write_frame(_PING, data)
        pings = self._pings
        if len(pings) >= MAX_PINGS_WAITING:
            del pings[next(iter(pings))]
        pings[data] = waiter
        return data

    def send_pong(self, data: bytes) -> None:
        """Send a pong (an unsolicited one is a one-way heartbeat).

        Raises:
            ValueError: the payload is over 125 bytes.
            InvalidState: the connection isn't open.
        """
        if not self.can_send:
            raise self._cannot_send()
        self._write_frame(_PONG, data)

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake: send a close frame, go to ``CLOSING``.

        Args:
            code: the close code.
            reason: the close reason, at most 123 bytes of UTF-8.

        Raises:
            ValueError: a code that can't be sent or a reason that is too long.
            InvalidState: a close frame was sent already, or the connection
                isn't open.
        """
        payload = serialize_close(code, reason)
        if not self.can_send:
            raise self._cannot_send()
        self._write_close(code, reason, payload)
        self._set_phase(Phase.CLOSE_SENT)

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): close with ``code``, stop reading.

        The close frame is sent if none was; the input that follows is
        discarded. Without a close frame from the peer, ``reason`` becomes
        the connection's :attr:`close_reason`.

        Args:
            code: the close code (1002, 1007, 1009, 1011...).
            reason: why, cut to fit a close frame.

        Raises:
            ValueError: a code that can't be sent (checked before any effect).
        """
        reason = _truncate_reason(reason)
        payload = serialize_close(code, reason)  # validates before any effect
        if self.can_send:
            self._write_close(code, reason, payload)
        self._end_input(reason, Phase.CLOSED if self.state is _CONNECTING else Phase.FAILED)

    def abandon(self, cause: str) -> None:
        """Give up on the connection without a closing handshake.

        For a transport that must be dropped (a send that timed out, a
        handshake that never finished): nothing more is sent, and what the
        peer still sends is discarded unparsed, as after a failure (RFC 6455
        §7.1.7). The state becomes ``CLOSED`` once :meth:`receive_eof` is
        called.

        Args:
            cause: why, for :attr:`close_reason`.
        """
        self._end_input(cause, Phase.CLOSED if self.state is _CONNECTING else Phase.ABANDONED)

    def _write_close(self, code: int, reason: str, payload: bytes) -> None:
        """Make our close frame, the last frame of the connection.

        It becomes :attr:`close_sent` only once written (:meth:`data_written`).
        """
        self._close_made = (code, reason)
        self._write_frame(_CLOSE, payload)
        self.close_frame = self.outgoing[-1]

    def data_written(self, data: Sequence[BytesLike]) -> None:
        """The writer wrote ``data``, output that :meth:`data_to_send` gave, whole.

        Records our close frame as sent if ``data`` ends with it (nothing
        follows it, so it is always last). Written means handed to the
        transport whole, as ``send()`` returning means for a message.
        """
        if data and data[-1] is self.close_frame:
            self.close_sent = self._close_made
            self.close_frame = None

    def _new_mask_pool(self) -> int:
        """Draw a new pool of random bytes for masking keys; return the first key's offset.

        A client's masking key is the next 4 bytes of the pool (one
        ``os.urandom`` call per 256 frames), handed to ``pack_frame`` with
        their offset rather than sliced out. The senders take a key inline
        (the offset, then ``_mask_position`` 4 bytes on) and call this only
        when the pool is used up, not once per frame (hot path: see
        docs/performance.rst#how-fast-against-what).
        """
        self._mask_pool = os.urandom(_MASK_POOL_SIZE)
        return 0

    def _write_frame(self, opcode: Opcode, payload: BytesLike, fin: bool = True, rsv1: bool = False) -> None:
        """Serialize a frame into the output buffer, masked on the client side.

        A frame is one ``bytes`` object, except an unmasked data frame whose
        payload is over ``join_limit`` bytes: that is its header, then the
        payload itself, uncopied. (Masking copies the payload anyway.)
        """
        pool = None
        position = 0
        if self.is_client:
            position = self._mask_position
            if position >= _MASK_POOL_SIZE:
                position = self._new_mask_pool()
            self._mask_position = position + 4
            pool = self._mask_pool
        if opcode >= _CLOSE:
            # encode_frame_bytes checks the rules of control frames.
            mask_key = None if pool is None else pool[position : position + 4]
            frame = encode_frame_bytes(fin, opcode, payload, mask_key=mask_key)
        elif pool is None and len(payload) > self.join_limit:
            header, payload = encode_frame(fin, opcode, payload, rsv1=rsv1)
            self.bytes_sent += len(header) + len(payload)
            self.outgoing += (header, payload)
            return
        else:
            # A data frame: no rule to check, serialized in one call.
            frame = pack_frame((FIN if fin else 0) | (RSV1 if rsv1 else 0) | opcode, payload, pool, position)
        self.bytes_sent += len(frame)
        self.outgoing.append(frame)
