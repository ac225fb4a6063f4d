"""The connection both sides share: reader thread, message queue, writes,
closing handshake and keepalive.

Theory of operation
-------------------
A connection is one blocking socket and one reader thread.

* The **reader thread** is the only reader of the socket. It parses frames
  with :mod:`syncws.framing`, answers pings, reassembles fragmented messages
  (validating UTF-8 as fragments arrive) and puts whole messages on a bounded
  :class:`~syncws.messages.MessageQueue`. It also runs the closing handshake
  when the peer starts it, and it is the one that closes the socket, after
  which it marks the queue closed and ends.
* **Writes** happen in the caller's thread (``send``, ``ping``, ``close``, and
  the reader thread for pongs and close replies) under ``_write_lock``, so
  each frame goes out whole. ``_message_lock`` additionally keeps the frames
  of one fragmented message together, while control frames may still slip
  between them as RFC 6455 §5.4 allows.
* **Timers** (keepalive, the closing deadline, a send's deadline) run on the
  one shared thread of :mod:`syncws.timers`. They never block: when time is
  up they shut the socket down, which wakes every thread blocked on it.

States go ``CONNECTING → OPEN → CLOSING → CLOSED``. ``CLOSING`` starts when a
close frame is sent or received; ``CLOSED`` when the reader thread has closed
the socket.
"""

from __future__ import annotations

import codecs
import enum
import logging
import os
import select
import socket
import threading
import time
import uuid
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Tuple,
    Union,
)

from . import timers
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    PayloadTooBig,
    WebSocketProtocolError,
)
from .framing import (
    CloseCode,
    Frame,
    Opcode,
    describe_close_code,
    frame_header,
    parse_close,
    read_frame,
    serialize_close,
)
from .masking import apply_mask
from .messages import MessageQueue, QueueClosed
from .streamreader import StreamReader

__all__ = ["State", "Stats", "WebSocketCommonProtocol", "Data"]

Data = Union[str, bytes]

# Close codes after which iteration ends quietly and ConnectionClosedOK is
# raised; 1005 is a close frame without a code, which is a normal close too.
OK_CLOSE_CODES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD})

# MSG_DONTWAIT lets a write try without blocking on a socket whose reads
# block, with no syscall to switch modes; POSIX only, and not for TLS.
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", None)


class State(enum.IntEnum):
    """The state of a connection."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class Stats(NamedTuple):
    """A snapshot of a connection's counters (see :attr:`~WebSocketCommonProtocol.stats`).

    Attributes:
        messages_in: messages received (handed to the queue).
        messages_out: messages sent.
        bytes_in: bytes read from the socket, frame headers included.
        bytes_out: bytes written to the socket, frame headers included.
        queued: messages received and not yet taken by ``recv()``.
        pings_sent: pings sent, by ``ping()`` and by keepalive.
        pings_missed: keepalive pings whose pong didn't come in time.
    """

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    queued: int
    pings_sent: int
    pings_missed: int


# Marks the end of an iterable passed to send(); None could be an item.
_END = object()


class _Fragments(list):  # type: ignore[type-arg]
    """The pieces of a fragmented message, as queued for ``recv()``.

    ``recv()`` joins them; ``recv_streaming()`` yields them one by one.
    """


def _describe_frame(frame: Frame) -> str:
    """One line for DEBUG logs, payload truncated."""
    data = bytes(frame.data[:24])
    more = "..." if len(frame.data) > 24 else ""
    flags = "" if frame.fin else " (not fin)"
    if frame.rsv1:
        flags += " (rsv1)"
    return f"{frame.opcode.name} {data!r}{more} [{len(frame.data)} bytes]{flags}"


def _truncate_reason(reason: str) -> str:
    """Cut a close reason to the 123 bytes a close frame can carry."""
    encoded = reason.encode()
    if len(encoded) <= 123:
        return reason
    return encoded[:120].decode(errors="ignore") + "..."


class WebSocketCommonProtocol:
    """A WebSocket connection: what the client and the server share.

    Not instantiated directly: :func:`~syncws.connect` returns a
    :class:`~syncws.WebSocketClientProtocol` and :func:`~syncws.serve` hands a
    :class:`~syncws.WebSocketServerProtocol` to each handler.

    Args:
        host: the host the connection is with (informational).
        port: the port (informational).
        secure: whether the connection uses TLS (informational).
        timeout: seconds for the closing handshake (seed name of
            ``close_timeout``).
        max_size: the largest incoming message in bytes (after
            decompression); bigger ones close the connection with 1009.
            ``None`` for no limit.
        max_queue: how many received messages may wait for ``recv()`` before
            the reader thread stops reading; ``None`` or 0 for no bound.
        read_limit: bytes asked of the socket per read.
        write_limit: payloads up to this size are written together with
            their frame header in one system call; bigger ones separately,
            without copying them.
        ping_interval: seconds between keepalive pings; ``None`` disables
            keepalive.
        ping_timeout: seconds to wait for a keepalive pong before closing
            with 1011; ``None`` never closes.
        close_timeout: modern name of ``timeout``; wins when both are given.
        write_timeout: seconds a ``send()`` may take before the connection is
            aborted (a peer that stopped reading); ``None`` waits forever.
        logger: a logger or a logger name; defaults to ``syncws.client`` or
            ``syncws.server``.
    """

    #: True on the client side: frames are masked when sent.
    is_client: bool = False
    side: str = "server"

    def __init__(
        self,
        *,
        host: Optional[str] = None,
        port: Optional[int] = None,
        secure: Optional[bool] = None,
        timeout: Optional[float] = 10,
        max_size: Optional[int] = 2**20,
        max_queue: Optional[int] = 2**5,
        read_limit: int = 2**16,
        write_limit: int = 2**16,
        ping_interval: Optional[float] = 20,
        ping_timeout: Optional[float] = 20,
        close_timeout: Optional[float] = None,
        write_timeout: Optional[float] = 60,
        logger: Union[logging.Logger, str, None] = None,
    ) -> None:
        self.host = host
        self.port = port
        self.secure = secure
        self.close_timeout = close_timeout if close_timeout is not None else timeout
        self.max_size = max_size
        self.max_queue = max_queue
        self.read_limit = read_limit
        self.write_limit = write_limit
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.write_timeout = write_timeout
        if logger is None:
            logger = f"syncws.{self.side}"
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self.logger: logging.Logger = logger

        #: A unique identifier of the connection, for logs.
        self.id: uuid.UUID = uuid.uuid4()
        self.state = State.CONNECTING
        #: The negotiated subprotocol, or ``None``.
        self.subprotocol: Optional[str] = None
        #: The extensions in use (permessage-deflate when negotiated).
        self.extensions: List[Any] = []
        #: The request path (with the query string), on both sides.
        self.path: str = ""
        #: The opening handshake's request headers (:class:`syncws.http.Headers`).
        self.request_headers: Any = None
        #: The opening handshake's response headers.
        self.response_headers: Any = None
        #: ``(code, reason)`` of the close frame received, or ``None``.
        self.close_rcvd: Optional[Tuple[int, str]] = None
        #: ``(code, reason)`` of the close frame sent, or ``None``.
        self.close_sent: Optional[Tuple[int, str]] = None
        #: Seconds between the last ping and its pong; 0 until one returns.
        self.latency: float = 0.0

        self._sock: Optional[socket.socket] = None
        self._stream: Optional[StreamReader] = None
        self._deflate: Any = None
        self._messages = MessageQueue(max_queue)
        # Serializes whole data messages, so fragments of two messages never
        # interleave. Taken before _write_lock, never after.
        self._message_lock = threading.Lock()
        # Makes each frame's bytes go out together, and guards state
        # changes that must be ordered with writes (close_sent, CLOSED).
        self._write_lock = threading.Lock()
        # Set by the timer thread just before it aborts a send that ran past
        # its deadline, so the sender can tell a timeout from a lost peer.
        self._write_timed_out = False
        # Pending pings: payload -> (event, time sent), in sending order.
        # Written by ping() callers and the timer thread, read by the reader
        # thread; guarded by _pings_lock.
        self._pings: Dict[bytes, Tuple[threading.Event, float]] = {}
        self._pings_lock = threading.Lock()
        # Random bytes for masking keys, and how many are used up; guarded by
        # _write_lock like every frame write.
        self._mask_pool = b""
        self._mask_position = 0
        self._reader_thread: Optional[threading.Thread] = None
        self._closed = threading.Event()
        self._close_timer: Optional[timers.Timer] = None
        self._keepalive_timer: Optional[timers.Timer] = None
        self._messages_in = 0
        self._messages_out = 0
        self._bytes_out = 0
        self._pings_sent = 0
        self._pings_missed = 0
        self.local_address: Any = None
        self.remote_address: Any = None

    # -- public attributes ---------------------------------------------------

    @property
    def open(self) -> bool:
        """``True`` while messages can be sent (the state is ``OPEN``)."""
        return self.state is State.OPEN

    @property
    def closed(self) -> bool:
        """``True`` once the connection is fully closed."""
        return self.state is State.CLOSED

    @property
    def state_name(self) -> str:
        """The state as a name: ``CONNECTING``, ``OPEN``, ``CLOSING`` or ``CLOSED``."""
        return self.state.name

    @property
    def close_code(self) -> Optional[int]:
        """The close code received from the peer; 1006 if the connection
        ended without one; ``None`` while it is open."""
        if self.state is not State.CLOSED:
            return None
        return self.close_rcvd[0] if self.close_rcvd else CloseCode.ABNORMAL_CLOSURE

    @property
    def close_reason(self) -> Optional[str]:
        """The close reason received from the peer; ``""`` if none;
        ``None`` while the connection is open."""
        if self.state is not State.CLOSED:
            return None
        return self.close_rcvd[1] if self.close_rcvd else ""

    @property
    def stats(self) -> Stats:
        """A :class:`Stats` snapshot of the connection's counters."""
        return Stats(
            messages_in=self._messages_in,
            messages_out=self._messages_out,
            bytes_in=self._stream.bytes_received if self._stream else 0,
            bytes_out=self._bytes_out,
            queued=len(self._messages),
            pings_sent=self._pings_sent,
            pings_missed=self._pings_missed,
        )

    # -- starting ------------------------------------------------------------

    def connection_open(
        self,
        sock: socket.socket,
        stream: StreamReader,
        *,
        deflate: Any = None,
    ) -> None:
        """Start the connection once the opening handshake succeeded.

        Called by the client and the server, not by applications.

        Args:
            sock: the connected socket; it is put in blocking mode.
            stream: the reader the handshake used, holding any bytes that
                arrived after the HTTP head.
            deflate: the negotiated permessage-deflate codec, if any.
        """
        sock.settimeout(None)
        self._sock = sock
        self._stream = stream
        self._deflate = deflate
        if deflate is not None:
            self.extensions = [deflate]
        self._sock_send_nowait = (
            sock.send if _MSG_DONTWAIT is not None and not hasattr(sock, "cipher") else None
        )
        self.state = State.OPEN
        self._debug = self.logger.isEnabledFor(logging.DEBUG)
        self._reader_thread = threading.Thread(
            target=self._run_reader,
            name=f"syncws-reader-{self.remote_address}",
            daemon=True,
        )
        self._reader_thread.start()
        if self.ping_interval is not None:
            self._keepalive_timer = timers.call_later(self.ping_interval, self._keepalive)

    def _set_addresses(self, sock: socket.socket) -> None:
        """Remember the addresses while the socket can tell them."""
        try:
            self.local_address = sock.getsockname()
            self.remote_address = sock.getpeername()
        except OSError:  # the peer may already be gone
            pass

    # -- receiving -----------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Data:
        """Return the next message.

        Safe to call from any thread; concurrent callers each get different
        messages.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes, 0
                only returns a message that has already arrived.

        Returns:
            ``str`` for a text message, ``bytes`` for a binary one.

        Raises:
            TimeoutError: no message arrived within ``timeout``.
            ConnectionClosed: the connection is closed and every message
                received before has been returned.
        """
        try:
            message = self._messages.get(timeout)
        except QueueClosed:
            raise self._connection_closed_exc() from None
        if type(message) is _Fragments:
            return message[0][:0].join(message)
        return message  # type: ignore[no-any-return]

    def recv_streaming(self, timeout: Optional[float] = None) -> Iterator[Data]:
        """Yield the fragments of the next message, in order.

        A message sent in one frame comes as one fragment. Each fragment is
        ``str`` (text message) or ``bytes`` (binary message); for text, a
        character split between frames is yielded whole with the later one.

        Args:
            timeout: seconds to wait for the message, as in :meth:`recv`.

        Raises:
            TimeoutError: no message arrived within ``timeout``.
            ConnectionClosed: the connection is closed.
        """
        try:
            message = self._messages.get(timeout)
        except QueueClosed:
            raise self._connection_closed_exc() from None
        if type(message) is _Fragments:
            yield from message
        else:
            yield message

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes.

        Ends quietly after a normal close (1000, 1001, or a close frame
        without a code) and raises :exc:`~syncws.ConnectionClosedError`
        otherwise.
        """
        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    # -- sending -------------------------------------------------------------

    def send(
        self,
        message: Union[Data, Iterable[Data]],
        timeout: Optional[float] = None,
        *,
        compress: Optional[bool] = None,
    ) -> None:
        """Send a message.

        Safe to call from any thread; messages from several threads go out
        whole, one after the other.

        Args:
            message: ``str`` sends a text message; ``bytes``, ``bytearray``
                or ``memoryview`` a binary one; an iterable of ``str`` or of
                bytes-likes sends one message fragmented into one frame per
                item.
            timeout: seconds the send may take; defaults to the connection's
                ``write_timeout``. Past it the connection is aborted, since a
                frame may have gone out half.
            compress: with permessage-deflate negotiated, ``None`` compresses
                messages of at least the settings' ``threshold`` bytes (and
                every fragmented message), ``False`` sends this message
                uncompressed (e.g. data that is already compressed), ``True``
                compresses it whatever its size. Ignored without deflate.

        Raises:
            TypeError: ``message`` has an unsupported type, or an iterable
                mixes text and bytes.
            ConnectionClosed: the connection is closed (or closing).
            TimeoutError: the peer didn't read the message in time; the
                connection is aborted.
        """
        opcode, payload, fragments = _prepare_message(message)
        deadline = self._write_deadline(timeout)
        with self._message_lock:
            self._send_locked(opcode, payload, fragments, deadline, compress)

    def _send_locked(
        self,
        opcode: Opcode,
        payload: Any,
        fragments: Optional[Iterator[Any]],
        deadline: Optional[float],
        compress: Optional[bool] = None,
    ) -> None:
        """Send a prepared message; the caller holds ``_message_lock``."""
        try:
            if fragments is None:
                self._send_message(opcode, payload, deadline, compress)
            else:
                self._send_fragments(fragments, deadline, compress)
        except TimeoutError:
            raise
        except OSError as exc:
            # The peer is gone: report it as the closed connection it is.
            self._abort()
            self._wait_reader()
            raise self._connection_closed_exc() from exc
        self._messages_out += 1

    def _send_nowait(self, message: Data, timeout: Optional[float]) -> bool:
        """Send ``message`` if it can go out without waiting; for broadcast().

        Returns ``False``, having sent nothing, when another send is under
        way or the whole frame might not fit in the socket buffer at once.

        Args:
            message: ``str`` or bytes-like.
            timeout: the deadline of the send, should it block after all.
        """
        opcode, payload, fragments = _prepare_message(message)
        if fragments is not None:
            raise TypeError("broadcast() sends str or bytes-like messages, not fragments")
        if not self._message_lock.acquire(blocking=False):
            return False
        try:
            # Headers, and deflate's worst case on incompressible data, add
            # well under 64 bytes.
            if self.state is State.OPEN and len(payload) + 64 > self._send_room():
                return False
            self._send_locked(opcode, payload, None, self._write_deadline(timeout))
            return True
        finally:
            self._message_lock.release()

    def _send_room(self) -> int:
        """Bytes the socket surely accepts now without blocking (maybe fewer)."""
        if not self._writable_now():
            return 0
        try:
            send_buffer = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)  # type: ignore[union-attr]
        except OSError:
            return 0
        # A TCP socket reports writable once a third of its buffer is free
        # (Linux); a quarter leaves room for TLS records' overhead.
        return int(send_buffer // 4)

    def _send_message(
        self, opcode: Opcode, payload: Any, deadline: Optional[float], compress: Optional[bool]
    ) -> None:
        """Send a whole message in one frame, compressed when negotiated."""
        deflate = self._deflate
        compressed = deflate is not None and compress is not False and (
            compress or len(payload) >= deflate.threshold
        )
        if compressed:
            payload = deflate.compress(payload, True)
        self._write_frame(opcode, payload, deadline=deadline, rsv1=compressed)

    def _send_fragments(
        self, fragments: Iterator[Any], deadline: Optional[float], compress: Optional[bool]
    ) -> None:
        """Send one message made of the iterable's items, one frame each.

        One item is read ahead so the last one goes out with FIN set. The
        first item is checked before anything is sent: a wrong type there
        leaves the connection usable. After that, half a message is on the
        wire and RFC 6455 has no way to cancel it, so an error fails the
        connection with 1011.
        """
        first = next(fragments, _END)
        if first is _END:
            return  # nothing to send: an empty iterable is no message
        text = isinstance(first, str)
        _fragment_payload(first, text, first)  # raises TypeError before any effect
        opcode = Opcode.TEXT if text else Opcode.BINARY
        # Fragmented messages are compressed when deflate is on unless the
        # caller says not to: their size isn't known in advance, so the
        # threshold can't apply.
        deflate = self._deflate if compress is not False else None
        compressor = deflate.compress if deflate is not None else None
        fragment = first
        try:
            while True:
                data = _fragment_payload(fragment, text, first)
                following = next(fragments, _END)
                fin = following is _END
                if compressor is not None:
                    data = compressor(data, fin)
                self._write_frame(
                    opcode, data, fin=fin, deadline=deadline,
                    rsv1=compressor is not None and opcode is not Opcode.CONT,
                )
                if fin:
                    return
                opcode = Opcode.CONT
                fragment = following
        except (OSError, ConnectionClosed):
            raise
        except Exception:
            self._fail_from_sender(CloseCode.INTERNAL_ERROR, "error while sending a fragmented message")
            raise

    def ping(self, data: Union[str, bytes, None] = None) -> threading.Event:
        """Send a ping.

        Args:
            data: the payload (at most 125 bytes; ``str`` is encoded to
                UTF-8); 4 random bytes by default.

        Returns:
            An event that is set when the matching pong arrives (a pong also
            acknowledges every earlier ping).

        Raises:
            ValueError: a ping with the same payload is still waiting for
                its pong, or the payload is too long.
            ConnectionClosed: the connection is closed.
            TimeoutError: the peer didn't read the ping within
                ``write_timeout``; the connection is aborted.
        """
        if isinstance(data, str):
            data = data.encode()
        elif data is not None:
            data = bytes(data)
        if data is not None and len(data) > 125:
            raise ValueError(f"a ping payload is at most 125 bytes, got {len(data)}")
        data, event = self._register_ping(data)
        try:
            self._write_frame(Opcode.PING, data, deadline=self._write_deadline())
        except BaseException:
            self._forget_ping(data)
            raise
        self._pings_sent += 1
        return event

    def _register_ping(self, data: Optional[bytes]) -> Tuple[bytes, threading.Event]:
        """Record a ping about to be sent, with 4 random bytes if ``data`` is None.

        Returns the payload and the event its pong will set. Raises
        ValueError if a ping with this payload is already pending.
        """
        event = threading.Event()
        with self._pings_lock:
            if data is None:
                data = os.urandom(4)
                while data in self._pings:
                    data = os.urandom(4)
            elif data in self._pings:
                raise ValueError(
                    f"a ping with payload {data!r} is already waiting for its pong; "
                    f"wait for it or use another payload"
                )
            self._pings[data] = (event, time.monotonic())
        return data, event

    def _forget_ping(self, data: bytes) -> None:
        """Drop a ping that couldn't be sent."""
        with self._pings_lock:
            self._pings.pop(data, None)

    def pong(self, data: Union[str, bytes] = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat).

        Args:
            data: the payload, at most 125 bytes.

        Raises:
            ValueError: the payload is too long.
            ConnectionClosed: the connection is closed.
            TimeoutError: the peer didn't read the pong within
                ``write_timeout``; the connection is aborted.
        """
        if isinstance(data, str):
            data = data.encode()
        if len(data) > 125:
            raise ValueError(f"a pong payload is at most 125 bytes, got {len(data)}")
        self._write_frame(Opcode.PONG, bytes(data), deadline=self._write_deadline())

    # -- closing -------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Perform the closing handshake and wait for the connection to end.

        Idempotent, and safe to call from any thread: a thread blocked in
        :meth:`recv` gets every message that arrived before, then
        :exc:`~syncws.ConnectionClosed`. Returns once the reader thread has
        ended, at most about ``close_timeout`` seconds later (then the TCP
        connection is dropped without waiting for the peer).

        Args:
            code: the close code, 1000 by default.
            reason: the close reason, at most 123 bytes in UTF-8.

        Raises:
            ValueError: a code that can't be sent or a reason that is too
                long.
        """
        payload = serialize_close(code, reason)  # validates before any effect
        # A send stuck on a peer that stopped reading holds the write lock:
        # wait for it no longer than the closing handshake may take.
        wait = -1 if self.close_timeout is None else self.close_timeout
        if self._write_lock.acquire(timeout=wait):
            try:
                if self.state is State.OPEN:
                    self._send_close_locked(code, reason, payload)
            except (OSError, TimeoutError):
                self._abort()
            finally:
                self._write_lock.release()
        else:
            if self.close_sent is None:
                self.close_sent = (code, reason)
            self._abort()
        if self.state is State.CONNECTING:
            self._close_unopened()
            return
        # The reader must keep reading to see the peer's close frame, even if
        # nobody consumes messages any more.
        self._messages.unbound()
        self._wait_reader()

    def wait_closed(self, timeout: Optional[float] = None) -> None:
        """Wait until the connection is closed, by either side.

        Args:
            timeout: seconds to wait; ``None`` for as long as it takes.

        Raises:
            TimeoutError: the connection is still open after ``timeout``.
        """
        if not self._closed.wait(timeout):
            raise TimeoutError(f"connection still open after {timeout} seconds")

    def __enter__(self) -> "WebSocketCommonProtocol":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _close_unopened(self) -> None:
        """Release the socket of a connection whose handshake never finished."""
        self.state = State.CLOSED
        if self._sock is not None:
            self._sock.close()
        self._messages.close()
        self._closed.set()

    def _wait_reader(self) -> None:
        """Join the reader thread, dropping TCP if the peer holds it open."""
        thread = self._reader_thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(None if self.close_timeout is None else self.close_timeout + 1)
        if thread.is_alive():
            self._abort()
            thread.join()

    def _connection_closed_exc(self) -> ConnectionClosed:
        """The exception for operations on this closed connection."""
        if self.close_rcvd is not None:
            code, reason = self.close_rcvd
        elif self.close_sent is not None and self.close_sent[0] not in OK_CLOSE_CODES:
            # We failed the connection and the peer didn't answer: our code
            # says what happened.
            code, reason = self.close_sent
        else:
            code, reason = CloseCode.ABNORMAL_CLOSURE, ""
        if code in OK_CLOSE_CODES:
            return ConnectionClosedOK(code, reason)
        return ConnectionClosedError(code, reason)

    # -- writing frames --------------------------------------------------------

    def _write_frame(
        self,
        opcode: Opcode,
        payload: Any,
        *,
        fin: bool = True,
        rsv1: bool = False,
        deadline: Optional[float] = None,
    ) -> None:
        """Write one frame unless a close frame was sent already."""
        with self._write_lock:
            if self.state is not State.OPEN:
                if self.state is State.CONNECTING:
                    raise InvalidState("the opening handshake isn't done yet")
                raise self._connection_closed_exc()
            self._write_frame_locked(opcode, payload, fin, rsv1, deadline)

    def _write_frame_locked(
        self,
        opcode: int,
        payload: Any,
        fin: bool = True,
        rsv1: bool = False,
        deadline: Optional[float] = None,
    ) -> None:
        """Serialize and write one frame; the caller holds ``_write_lock``."""
        if self._debug:
            self.logger.debug("> %s", _describe_frame(Frame(fin, Opcode(opcode), payload, rsv1)))
        if self.is_client:
            mask_key = self._next_mask_key()
            header = frame_header(fin, opcode, len(payload), rsv1=rsv1, mask_key=mask_key)
            payload = apply_mask(payload, mask_key)
        else:
            header = frame_header(fin, opcode, len(payload), rsv1=rsv1)
        if len(payload) <= self.write_limit:
            self._send_all(header + payload if type(payload) is bytes else b"".join((header, payload)), deadline)
        else:
            self._send_all(header, deadline)
            self._send_all(payload, deadline)

    def _write_deadline(self, timeout: Optional[float] = None) -> Optional[float]:
        """When a write started now must end: ``timeout`` or ``write_timeout``."""
        wait = timeout if timeout is not None else self.write_timeout
        return None if wait is None else time.monotonic() + wait

    def _next_mask_key(self) -> bytes:
        """A fresh masking key; the caller holds ``_write_lock``.

        Keys come from ``os.urandom`` as RFC 6455 §5.3 requires, drawn 1 KiB
        at a time: one system call per 256 frames instead of one per frame.
        """
        position = self._mask_position
        if position >= len(self._mask_pool):
            self._mask_pool = os.urandom(1024)
            position = 0
        self._mask_position = position + 4
        return self._mask_pool[position : position + 4]

    def _send_all(self, data: Any, deadline: Optional[float]) -> None:
        """Write ``data`` to the socket, within ``deadline`` if there is one.

        The common case costs one non-blocking ``send``. Only when the socket
        buffer is full does the write block, watched by a timer that aborts
        the connection at the deadline.
        """
        size = len(data)
        self._bytes_out += size
        if self._sock_send_nowait is not None:
            try:
                sent = self._sock_send_nowait(data, _MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            if sent == size:
                return
            data = memoryview(data)[sent:]
        timer = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._write_timed_out = True
                self._abort()
                self._stop_sending()
                raise TimeoutError("send() timed out: the connection was aborted")
            timer = timers.call_later(remaining, self._write_deadline_passed)
        try:
            assert self._sock is not None
            self._sock.sendall(data)
        except OSError:
            self._stop_sending()
            if self._write_timed_out:
                raise TimeoutError(
                    "send() timed out: the peer stopped reading; the connection was aborted"
                ) from None
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _stop_sending(self) -> None:
        """After a failed write, refuse further frames; holds ``_write_lock``.

        Half a frame may be on the wire, so nothing more can follow it.
        """
        if self.state is State.OPEN:
            self.state = State.CLOSING

    def _write_deadline_passed(self) -> None:
        """Timer callback: a send ran past its deadline."""
        self._write_timed_out = True
        self._abort()

    def _send_close_locked(self, code: int, reason: str, payload: bytes) -> None:
        """Send a close frame and start the closing deadline; holds ``_write_lock``."""
        self.close_sent = (code, reason)
        self.state = State.CLOSING
        self._start_close_timer()
        deadline = None if self.close_timeout is None else time.monotonic() + self.close_timeout
        self._write_frame_locked(Opcode.CLOSE, payload, deadline=deadline)

    def _start_close_timer(self) -> None:
        """Drop TCP if the closing handshake isn't over within the timeout."""
        if self._close_timer is None and self.close_timeout is not None:
            self._close_timer = timers.call_later(self.close_timeout, self._abort)

    def _abort(self) -> None:
        """Shut the socket down, waking every thread blocked on it.

        Never blocks; safe from any thread, the timer thread included. The
        reader thread then sees the end of the stream and closes the socket.
        """
        sock = self._sock
        if sock is None:
            return
        try:
            # socket.socket.shutdown, not SSLSocket.shutdown: the latter
            # drops the TLS object under a reader thread that may be using it.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already shut down or never connected

    def _fail_from_sender(self, code: int, reason: str) -> None:
        """Fail the connection from an application thread."""
        with self._write_lock:
            if self.state is State.OPEN:
                try:
                    self._send_close_locked(code, reason, serialize_close(code, reason))
                except (OSError, TimeoutError):
                    self._abort()
        self._messages.unbound()

    def _try_write_control_locked(self, opcode: Opcode, payload: bytes) -> bool:
        """Write a small control frame only if that can't block.

        For the timer thread, which must never block; the caller holds
        ``_write_lock``. Returns whether the frame was written.
        """
        if not self._writable_now():
            return False
        try:
            # A socket reported writable has room for a frame this small.
            self._write_frame_locked(opcode, payload)
        except OSError:
            return False
        return True

    def _writable_now(self) -> bool:
        """Tell whether the socket buffer has room, without waiting."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self._sock, select.POLLOUT)  # type: ignore[arg-type]
                return bool(poller.poll(0))
            return bool(select.select([], [self._sock], [], 0)[1])
        except (OSError, ValueError):  # closed under us
            return False

    # -- keepalive -------------------------------------------------------------

    def _keepalive(self) -> None:
        """Timer callback: send a keepalive ping and schedule the next one."""
        if self.state is not State.OPEN:
            return
        self._keepalive_timer = timers.call_later(self.ping_interval, self._keepalive)  # type: ignore[arg-type]
        if self._messages.put_waiting:
            return  # the peer is sending faster than we consume: it is alive
        if not self._write_lock.acquire(blocking=False):
            return  # a send is under way: its own deadline watches the peer
        try:
            if self.state is not State.OPEN:
                return
            data, event = self._register_ping(None)
            if not self._try_write_control_locked(Opcode.PING, data):
                self._forget_ping(data)
                return
            self._pings_sent += 1
        finally:
            self._write_lock.release()
        if self.ping_timeout is not None:
            timers.call_later(self.ping_timeout, lambda: self._keepalive_check(event))

    def _keepalive_check(self, event: threading.Event) -> None:
        """Timer callback: close with 1011 if the keepalive pong didn't come."""
        if event.is_set() or self.state is not State.OPEN or self._messages.put_waiting:
            return
        self._pings_missed += 1
        self.logger.info("%s: no pong within %s seconds; closing", self._name(), self.ping_timeout)
        # The peer doesn't answer: send the close frame only if that can be
        # done at once, and don't wait for the peer's.
        self._start_closing(CloseCode.INTERNAL_ERROR, "keepalive ping timeout", give_up_at=0.0)
        self._abort()

    def _start_closing(self, code: int, reason: str, give_up_at: Optional[float] = None) -> None:
        """Start the closing handshake without ever blocking.

        For the timer thread and for a server closing all its connections:
        one stuck connection must not hold up the others. While a send holds
        the write lock or the socket buffer is full, the close frame is
        retried from the timer thread; if it still can't go out within
        ``close_timeout``, the connection is dropped.
        """
        if self.state is not State.OPEN:
            return
        if give_up_at is None:
            give_up_at = time.monotonic() + (self.close_timeout or 0)
        sent = False
        if self._write_lock.acquire(blocking=False):
            try:
                if self.state is not State.OPEN:
                    return
                sent = self._try_write_control_locked(Opcode.CLOSE, serialize_close(code, reason))
                if sent:
                    self.close_sent = (code, reason)
                    self.state = State.CLOSING
                    self._start_close_timer()
            finally:
                self._write_lock.release()
        if sent:
            self._messages.unbound()
        elif time.monotonic() < give_up_at:
            timers.call_later(0.01, lambda: self._start_closing(code, reason, give_up_at))
        else:
            if self.close_sent is None:
                self.close_sent = (code, reason)
            self._abort()

    # -- the reader thread -------------------------------------------------------

    def _name(self) -> str:
        return f"{self.side} connection {self.id.hex[:8]} with {self.remote_address}"

    def _run_reader(self) -> None:
        """The reader thread: read frames until the connection ends."""
        try:
            self._read_frames()
        except (EOFError, OSError) as exc:
            if self.close_rcvd is None and self._debug:
                self.logger.debug("%s: connection lost: %r", self._name(), exc)
        except WebSocketProtocolError as exc:
            self._fail(exc.code, str(exc))
        except PayloadTooBig as exc:
            self._fail(CloseCode.MESSAGE_TOO_BIG, str(exc))
        except Exception:
            self.logger.exception("%s: unexpected error in the reader thread", self._name())
            self._fail(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._finish()

    def _read_frames(self) -> None:
        """Read frames until the closing handshake ends the stream.

        Returns after the peer's close frame was handled (and, on the client,
        once the server closed TCP). Raises on protocol errors and on a lost
        connection.
        """
        assert self._stream is not None
        read_exact = self._stream.read_exact
        expect_mask = not self.is_client
        deflate = self._deflate
        max_size = self.max_size
        put = self._messages.put
        debug = self._debug
        # The message being reassembled: its opcode, pieces, byte count so
        # far, whether it is compressed, and the UTF-8 decoder for text.
        message_opcode: Optional[Opcode] = None
        pieces: _Fragments = _Fragments()
        received = 0
        compressed = False
        decoder: Any = None

        while True:
            remaining = None if max_size is None else max_size - received
            frame = read_frame(
                read_exact, mask=expect_mask, max_size=remaining, allow_rsv1=deflate is not None
            )
            if debug:
                self.logger.debug("< %s", _describe_frame(frame))
            opcode = frame.opcode

            if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
                if opcode is Opcode.CONT:
                    if message_opcode is None:
                        raise WebSocketProtocolError("continuation frame without a message to continue")
                    if frame.rsv1:
                        raise WebSocketProtocolError("RSV1 set on a continuation frame")
                else:
                    if message_opcode is not None:
                        raise WebSocketProtocolError(
                            f"{opcode.name} frame inside a fragmented message: "
                            f"expected a continuation frame"
                        )
                    compressed = frame.rsv1
                    if frame.fin:
                        # The common case: a whole message in one frame.
                        data = frame.data
                        if compressed:
                            data = deflate.decompress(data, True, max_size)
                        if opcode is Opcode.TEXT:
                            try:
                                message: Any = data.decode()
                            except UnicodeDecodeError as exc:
                                raise _invalid_utf8(exc) from None
                        else:
                            message = data if type(data) is bytes else bytes(data)
                        self._messages_in += 1
                        put(message)
                        continue
                    message_opcode = opcode
                    received = 0
                    pieces = _Fragments()
                    decoder = codecs.getincrementaldecoder("utf-8")() if opcode is Opcode.TEXT else None

                data = frame.data
                if compressed:
                    data = deflate.decompress(data, frame.fin, remaining)
                received += len(data)
                if max_size is not None and received > max_size:
                    raise PayloadTooBig(f"message of more than {max_size} bytes exceeds max_size")
                if decoder is not None:
                    try:
                        piece: Any = decoder.decode(data, frame.fin)
                    except UnicodeDecodeError as exc:
                        raise _invalid_utf8(exc) from None
                else:
                    piece = data if type(data) is bytes else bytes(data)
                if piece or not pieces:
                    pieces.append(piece)
                if frame.fin:
                    self._messages_in += 1
                    put(pieces if len(pieces) > 1 else pieces[0])
                    message_opcode = None
                    received = 0

            elif opcode is Opcode.PING:
                # Answer unless we are closing: no frame may follow a close.
                # A peer that pings but never reads would block the pong
                # forever, and this thread with it: the write deadline ends
                # that (TimeoutError is an OSError: the connection is lost).
                with self._write_lock:
                    if self.state is State.OPEN:
                        self._write_frame_locked(
                            Opcode.PONG, frame.data, deadline=self._write_deadline()
                        )

            elif opcode is Opcode.PONG:
                self._acknowledge_pings(bytes(frame.data))

            else:  # Opcode.CLOSE
                self._handle_close_frame(frame.data)
                return

    def _acknowledge_pings(self, data: bytes) -> None:
        """Set the events of the ping ``data`` answers and of earlier pings."""
        now = time.monotonic()
        with self._pings_lock:
            if data not in self._pings:
                return  # an unsolicited pong: a heartbeat
            while True:
                key, (event, sent_at) = next(iter(self._pings.items()))
                del self._pings[key]
                event.set()
                if key == data:
                    self.latency = now - sent_at
                    return

    def _handle_close_frame(self, payload: bytes) -> None:
        """Answer the peer's close frame and end the stream the RFC's way."""
        self.close_rcvd = parse_close(payload)
        with self._write_lock:
            if self.state is State.OPEN:
                code, reason = self.close_rcvd
                # Echo the code (RFC 6455 §5.5.1); 1005 means "no code" and
                # is answered with an empty close frame.
                echo = b"" if code == CloseCode.NO_STATUS_RCVD else serialize_close(code, reason)
                try:
                    self._send_close_locked(code, reason, echo)
                except (OSError, TimeoutError):
                    return
            else:
                self.state = State.CLOSING
        self._messages.unbound()
        if self.is_client:
            # The server closes TCP first (RFC 6455 §7.1.1): wait for it,
            # within the closing deadline.
            self._start_close_timer()
            self._drain()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7) from the reader thread."""
        self.logger.info("%s: failing with %d (%s): %s", self._name(), code, describe_close_code(code), reason)
        with self._write_lock:
            if self.state is State.OPEN:
                reason = _truncate_reason(reason)
                try:
                    self._send_close_locked(code, reason, serialize_close(code, reason))
                except (OSError, TimeoutError):
                    return
            self.state = State.CLOSING
        self._start_close_timer()
        if not self.is_client:
            # Our FIN after the close frame tells the client we are done,
            # without the reset a close with unread input would cause.
            try:
                socket.socket.shutdown(self._sock, socket.SHUT_WR)  # type: ignore[arg-type]
            except OSError:
                return
        self._drain()

    def _drain(self) -> None:
        """Discard input until the peer closes TCP or the deadline aborts it."""
        assert self._sock is not None
        try:
            while self._sock.recv(self.read_limit):
                pass
        except OSError:
            pass

    def _finish(self) -> None:
        """Close the socket and wake everyone: the reader thread's last act."""
        self._abort()
        with self._write_lock:
            self.state = State.CLOSED
            if self._sock is not None:
                self._sock.close()
        for timer in (self._close_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._messages.close()
        self._closed.set()
        if self._debug:
            self.logger.debug(
                "%s closed: sent %s, received %s", self._name(), self.close_sent, self.close_rcvd
            )


def _prepare_message(message: Any) -> Tuple[Opcode, Any, Optional[Iterator[Any]]]:
    """Classify what send() was given: ``(opcode, payload, fragments)``."""
    if isinstance(message, str):
        return Opcode.TEXT, message.encode(), None
    if isinstance(message, (bytes, bytearray, memoryview)):
        return Opcode.BINARY, _as_bytes(message), None
    if isinstance(message, dict):
        # A dict is iterable, but sending its keys is never what was meant.
        raise TypeError("send() got a dict; send json.dumps(data) instead")
    if isinstance(message, Iterable):
        return Opcode.CONT, None, iter(message)
    raise TypeError(
        f"send() takes str, a bytes-like object or an iterable of them, "
        f"not {type(message).__name__}"
    )


def _fragment_payload(fragment: Any, text: bool, first: Any) -> Any:
    """The bytes of one item of a fragmented message, checking its type."""
    if text and isinstance(fragment, str):
        return fragment.encode()
    if not text and isinstance(fragment, (bytes, bytearray, memoryview)):
        return _as_bytes(fragment)
    if fragment is first:
        raise TypeError(
            f"send() takes an iterable of str or of bytes-likes, "
            f"not of {type(fragment).__name__}"
        )
    raise TypeError(
        f"a fragmented message mixes types: started with "
        f"{type(first).__name__}, then got {type(fragment).__name__}"
    )


def _as_bytes(data: Union[bytes, bytearray, memoryview]) -> Union[bytes, bytearray, memoryview]:
    """Give a bytes-like object whose ``len()`` counts bytes."""
    if isinstance(data, memoryview) and (data.itemsize != 1 or not data.c_contiguous):
        return data.tobytes()
    return data


def _invalid_utf8(exc: UnicodeDecodeError) -> WebSocketProtocolError:
    """The 1007 failure for a text message that isn't UTF-8."""
    return WebSocketProtocolError(
        f"invalid UTF-8 in a text message: {exc.reason}", code=CloseCode.INVALID_DATA
    )
