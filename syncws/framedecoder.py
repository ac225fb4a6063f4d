"""The peer's byte stream cut into frames (RFC 6455 §5.2): bytes in, frames out.

Theory of operation
-------------------
:class:`FrameDecoder` is the connection's frame parser, as wsproto's
``FrameDecoder`` is its connection's. It knows framing only: where frames
start and end, their headers, masking keys and payload bytes, whether a
fragmented message is under way (FIN and continuation frames), and the bytes
that a read cut in the middle of a header or of a long payload. What a frame
*means* is the business of the :class:`FrameSink` it hands frames to (the
connection core, :class:`syncws.core.ConnectionCore`): whether its header is
allowed there and within the size limits, UTF-8, decompression, control
frames, closing, fragmentation's events. The decoder never touches a socket.

Three ways through it, fastest first:

* **whole messages**: a run of *simple* frames (a whole text or binary message
  each, uncompressed, within the size limits; see
  :func:`~syncws.framing.parse_simple_frames`) becomes ``str`` and ``bytes``
  events in one call, when the sink takes them (it is open) and no message
  or frame is under way. :attr:`FrameDecoder.simple_input` then says so.
* **whole frames**: any other frame whose bytes have all arrived; its header
  is decoded by :func:`~syncws.framing.decode_header` (the one run-time
  header decoder, held to :func:`~syncws.framing.read_frame`, the reference
  one, by ``tests/test_framing_speedups.py``), checked by the sink, and the
  frame handed to it unmasked.
* **partial frames**: a data frame longer than what arrived gets a
  :class:`PartialFrame`, whose buffer the sink sizes; its bytes go there
  as they arrive (or are received straight into it: :meth:`get_buffer`,
  :meth:`buffer_updated`) and the sink processes each new piece.

Threads: not thread-safe; one thread feeds it (the reader), under the same
lock as the sink's other calls.
"""

from __future__ import annotations

from typing import Any, List, Optional, Protocol, Union

from .exceptions import PayloadTooBig, WebSocketProtocolError
from .framing import Opcode, decode_header, parse_simple_frames
from .masking import apply_mask
from .payload import PayloadBuffer

__all__ = ["FrameDecoder", "FrameSink", "PartialFrame"]

BytesLike = Union[bytes, bytearray, memoryview]

_CLOSE = Opcode.CLOSE


class PartialFrame:
    """A data frame whose payload is still arriving.

    Its payload goes into ``buffer``, allocated by the sink: at the
    announced length when a size limit bounds it, as a
    :class:`~syncws.payload.PayloadBuffer` whose bytes become the message
    without a copy; without a limit, a :class:`bytearray` that starts small
    and doubles as bytes arrive, so announcing a huge frame costs nothing
    until its bytes come. A frame that the sink drops (data after our close
    frame) has no buffer: its bytes are only counted.

    Attributes:
        fin: the frame's FIN bit.
        length: its payload length.
        mask_key: its masking key, or ``None``.
        received: payload bytes arrived so far.
        processed: payload bytes the sink has unmasked and decoded so far.
        buffer: where the payload goes, or ``None`` if it is dropped.
        pieces: what the sink decoded so far, for it to join at the end.
    """

    __slots__ = ("fin", "length", "mask_key", "received", "processed", "buffer", "pieces")

    def __init__(self, fin: bool, length: int, mask_key: Optional[bytes], keep: bool, first_size: int) -> None:
        self.fin = fin
        self.length = length
        self.mask_key = mask_key
        self.received = 0
        self.processed = 0
        self.buffer: Optional[bytearray] = None
        if keep:
            self.buffer = PayloadBuffer(length) if first_size >= length else bytearray(first_size)
        self.pieces: List[Union[str, bytes]] = []

    def reserve(self, size: int) -> bytearray:
        """Make room in the buffer for ``size`` more bytes (at most the frame's rest)."""
        buffer = self.buffer
        assert buffer is not None
        needed = min(self.length, self.received + size)
        if needed > len(buffer):  # never for a PayloadBuffer: it is full-sized
            buffer.extend(bytes(min(max(needed, 2 * len(buffer)), self.length) - len(buffer)))
        return buffer

    def take_payload(self) -> bytes:
        """The whole payload as ``bytes``, once it has all arrived; the buffer is then spent."""
        buffer = self.buffer
        assert buffer is not None and self.received == self.length == len(buffer)
        if type(buffer) is not bytearray:
            try:
                return buffer.take()  # type: ignore[attr-defined, no-any-return]
            except BufferError:
                # A view of it is still alive (get_buffer()'s, not released
                # as it should be): what it could write must not reach the
                # message, so the payload is copied.
                pass
        return bytes(buffer)


class FrameSink(Protocol):
    """What a :class:`FrameDecoder` hands frames to: the connection's rules.

    Each method but :meth:`end_input` may raise
    :class:`~syncws.exceptions.WebSocketProtocolError` or
    :class:`~syncws.exceptions.PayloadTooBig`: parsing stops there, and
    :meth:`end_input` gets the error.
    """

    #: Whether messages may be sent: the connection is open, so whole
    #: messages may be delivered as they are parsed.
    can_send: bool
    #: Whether input is discarded unparsed.
    input_closed: bool

    def check_header(self, first: int, second: int, length: int) -> Opcode:
        """Check a frame header (two bytes, decoded length) before its payload; return its opcode."""

    def receive_frame(self, fin: bool, opcode: Opcode, rsv1: bool, payload: BytesLike, events: List[Any]) -> None:
        """Handle a whole frame, its payload unmasked."""

    def start_partial(
        self, fin: bool, opcode: Opcode, rsv1: bool, length: int, mask_key: Optional[bytes]
    ) -> PartialFrame:
        """Begin a data frame whose payload spans several reads: its :class:`PartialFrame`."""

    def process_partial(self, partial: PartialFrame, events: List[Any]) -> None:
        """Unmask and decode the partial frame's bytes from ``processed`` to ``received``."""

    def end_partial(self, partial: PartialFrame, events: List[Any]) -> None:
        """Handle a partial frame whose payload has all arrived."""

    def end_input(self, events: List[Any], error: Optional[Exception]) -> None:
        """The input given to the general path is parsed; ``error`` is what stopped it, if anything."""


class FrameDecoder:
    """The peer's frames, parsed from bytes split anywhere.

    Args:
        masked: whether frames must be masked (a server reading a client).
        simple_limit: the largest payload delivered as a whole message by
            the fast path (the smaller of the size limits); larger frames
            take the general path, where the sink checks them.
    """

    __slots__ = ("masked", "simple_limit", "pending", "partial", "in_message", "simple_input", "bytes_received",
                 "simple_messages")

    def __init__(self, *, masked: bool, simple_limit: int) -> None:
        self.masked = masked
        self.simple_limit = simple_limit
        #: Input not parsed yet: the start of a frame header.
        self.pending = b""
        #: The data frame whose payload is arriving.
        self.partial: Optional[PartialFrame] = None
        #: Whether a fragmented message is under way: its first frame came,
        #: its last one not yet.
        self.in_message = False
        #: ``True`` when the events of the last :meth:`receive_data` (or
        #: :meth:`buffer_updated`) are all whole messages (``str`` or
        #: ``bytes``: no fragment, no control event) and its input ended
        #: between frames, with no partial frame: the common case, which a
        #: reader may queue without looking at each event, nor asking for
        #: :meth:`get_buffer`. ``False`` says nothing.
        self.simple_input = False
        #: Bytes received, frame headers included.
        self.bytes_received = 0
        #: Messages delivered whole by the fast path (the sink counts the others).
        self.simple_messages = 0

    def discard(self) -> None:
        """Forget the input under way: the sink discards input from now on."""
        self.partial = None
        self.pending = b""
        self.in_message = False

    def receive_data(self, data: BytesLike, sink: FrameSink) -> List[Any]:
        """Parse bytes received from the peer; hand ``sink`` the frames they complete.

        Args:
            data: the next bytes of the stream, split anywhere.
            sink: the connection the frames are for.

        Returns:
            The events the sink made of them, whole messages first.
        """
        if self.partial is None and not self.pending and not self.in_message and sink.can_send:
            # The common case: input that is whole messages in simple
            # frames is parsed in one call (hot path: see
            # docs/performance.rst#how-fast-against-what).
            end = len(data)
            events: List[Any] = []
            position = parse_simple_frames(data, 0, end, self.masked, self.simple_limit, events)
            self.simple_messages += len(events)
            self.bytes_received += end
            self.simple_input = position == end
            if position < end:
                self._general(data, position, events, sink)
            return events
        self.bytes_received += len(data)
        self.simple_input = False
        events = []
        if not sink.input_closed:
            self._general(data, 0, events, sink)
        return events

    def _general(self, data: BytesLike, position: int, events: List[Any], sink: FrameSink) -> None:
        """Parse ``data[position:]`` on the general path; tell ``sink`` how it ended."""
        error: Optional[Exception] = None
        try:
            self._parse(data, position, events, sink)
        except (WebSocketProtocolError, PayloadTooBig) as exc:
            error = exc
        sink.end_input(events, error)

    def _parse(self, data: BytesLike, position: int, events: List[Any], sink: FrameSink) -> None:
        """Parse ``data[position:]``: the rest of the partial frame, then whole frames
        from the start of the pending bytes and what follows.

        ``position`` is only past 0 between frames, with nothing pending.
        """
        if self.partial is not None:
            data = self._continue_frame(data, events, sink)
            if not data:
                # All of it was the frame's (always, after buffer_updated()):
                # nothing pending either (bytes wait there only between frames).
                return
        buffer = self.pending + data if self.pending else data
        self.pending = b""
        end = len(buffer)
        masked = self.masked
        while not sink.input_closed:
            if not self.in_message and sink.can_send:
                # Whole messages in simple frames, as in receive_data(),
                # up to the next other frame.
                count = len(events)
                position = parse_simple_frames(buffer, position, end, masked, self.simple_limit, events)
                self.simple_messages += len(events) - count
            header = decode_header(buffer, position, end)
            if header is None:
                break
            first, second, length, start, mask_key = header
            opcode = sink.check_header(first, second, length)
            fin = bool(first & 0x80)
            if end - start >= length:
                if opcode < _CLOSE:
                    self.in_message = not fin
                payload = buffer[start : start + length]
                position = start + length
                if mask_key is not None:
                    payload = apply_mask(payload, mask_key)
                sink.receive_frame(fin, opcode, bool(first & 0x40), payload, events)
            elif opcode >= _CLOSE:
                # A control frame is short: it waits whole in pending.
                break
            else:
                # A data frame longer than what arrived.
                self.in_message = not fin
                self.partial = sink.start_partial(fin, opcode, bool(first & 0x40), length, mask_key)
                # A view: the payload's first bytes are copied once, into
                # the frame's buffer.
                rest = self._continue_frame(memoryview(buffer)[start:end], events, sink)
                assert not rest
                return
        if position < end and not sink.input_closed:
            self.pending = bytes(buffer[position:end])

    def _continue_frame(self, data: BytesLike, events: List[Any], sink: FrameSink) -> BytesLike:
        """Take the partial frame's payload bytes from ``data``; return what follows it.

        Bytes already in the frame's buffer past what was processed (put
        there by :meth:`buffer_updated`) are handled too.
        """
        partial = self.partial
        assert partial is not None
        take = min(len(data), partial.length - partial.received)
        start = partial.received
        partial.received += take
        if partial.buffer is not None:
            if take:  # none after buffer_updated(): the bytes are in place
                with memoryview(partial.reserve(take)) as view:
                    view[start : start + take] = data[:take]
            sink.process_partial(partial, events)
        if partial.received == partial.length:
            self.partial = None
            sink.end_partial(partial, events)
        return data[take:]

    def get_buffer(self) -> Optional[memoryview]:
        """Where the next bytes of a large frame's payload may be received directly.

        A reader may ``recv_into`` this view, release it, and then call
        :meth:`buffer_updated`, saving a copy of every byte of large frames;
        or it may call :meth:`receive_data` as usual. (The view must be
        released before the next call: the buffer may grow.)

        Returns:
            The part of the partial frame's payload still missing, or
            ``None`` between frames and for a frame that is dropped.
        """
        partial = self.partial
        if partial is None or partial.buffer is None:
            return None
        buffer = partial.buffer
        if len(buffer) == partial.received:
            buffer = partial.reserve(len(buffer))  # full: double it
        return memoryview(buffer)[partial.received :]

    def buffer_updated(self, size: int, sink: FrameSink) -> List[Any]:
        """Account for ``size`` bytes received into :meth:`get_buffer`'s view.

        Args:
            size: how many bytes were written at the start of that view.
            sink: the connection the frames are for.

        Returns:
            The events they complete, as for :meth:`receive_data`.
        """
        self.bytes_received += size
        self.simple_input = False
        partial = self.partial
        events: List[Any] = []
        if partial is None or sink.input_closed:
            return events  # failed meanwhile: the bytes are discarded
        assert partial.buffer is not None and 0 < size <= partial.length - partial.received
        partial.received += size
        # The frame's bytes are in its buffer already; none follow them.
        self._general(b"", 0, events, sink)
        return events
