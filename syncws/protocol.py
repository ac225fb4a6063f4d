"""The connection both sides share: the threads and locks around the protocol core.

Theory of operation
-------------------
Every rule of RFC 6455 lives in :mod:`syncws.core`, a state machine without
I/O. This module runs it over a :class:`~syncws.transport.Transport`:

* The **reader thread** is the only reader of the socket. It feeds what it
  reads to the core and acts on the events that come out: messages and
  fragments go to a bounded :class:`~syncws.messages.MessageQueue` (when it
  is full, the thread waits, stops reading, and TCP pushes back on the peer),
  pongs set the events of :meth:`~WebSocketCommonProtocol.ping`. Once the
  core takes no more input (the peer's close frame arrived, or the peer
  broke the protocol), the thread ends TCP the RFC's way, closes the socket,
  closes the queue and ends.
* **Writes** happen in the caller's thread, through a
  :class:`~syncws.writer.Writer`: frames go out whole and in the order the
  core made them, within deadlines.
* ``_core_lock`` guards the core. It is held only while the core computes,
  never during I/O, so the reader parsing and a writer blocked on a full
  socket never wait for each other.
* **Timers** (keepalive, the closing deadline, a write's deadline) run on the
  one shared thread of :mod:`syncws.timers`. They never block: when time is
  up they abort the transport, which wakes every thread blocked on it.
* **The end** (the closing handshake, its deadline, ``abort()``, the teardown
  once the reader is done, and the wait for it) is a
  :class:`~syncws.closing.Closing`'s job.

Lock order: the writer's ``lock``, then ``_core_lock``; never the other way
round. A thread holding neither may wait for the writer's turn (a
fragmented message's frames go out together), and the turn's holder takes
both, frame after frame.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

from . import threadpool
from .close_codes import OK_CLOSE_CODES, CloseCode
from .closing import Closing
from .core import BytesLike, ConnectionCore, Data, State
from .exceptions import ConcurrencyError, InvalidState
from .framing import serialize_close
from .messages import Assembler, MessageQueue, QueueClosed, prepare_message
from .settings import ConnectionSettings, check_settings
from .stats import Stats, snapshot
from .transport import Transport
from .keepalive import Keepalive
from .logs import LazyLabel, closed_line, connection_label, format_address, set_connection, side_logger
from .reader import Reader
from .writer import Writer

if TYPE_CHECKING:
    import uuid

    from .metrics import ConnectionCounters

__all__ = ["State", "Stats", "WebSocketCommonProtocol", "Data"]


class WebSocketCommonProtocol:
    """A WebSocket connection: what the client and the server share.

    Not instantiated directly: :func:`~syncws.connect` returns a
    :class:`~syncws.WebSocketClientProtocol` and :func:`~syncws.serve` hands a
    :class:`~syncws.WebSocketServerProtocol` to each handler.

    Args:
        host: the host the connection is with (informational).
        port: the port (informational).
        secure: whether the connection uses TLS (informational).
        logger: a logger or a logger name; defaults to ``syncws.client`` or
            ``syncws.server``.
        settings: the connection settings, as :func:`~syncws.connect` and
            :func:`~syncws.serve` checked them.
        **options: without ``settings``, the same settings by name
            (``max_size``, ``max_queue``, ``timeout``, ``close_timeout``,
            ``write_timeout``, ``read_limit``, ``write_limit``,
            ``ping_interval``, ``ping_timeout``): see :mod:`syncws.settings`,
            which documents each.

    Raises:
        TypeError: an unknown option, or a setting of the wrong type.
        ValueError: a setting out of range.
    """

    #: True on the client side: frames are masked when sent.
    is_client: bool = False
    side: str = "server"

    # Every attribute the class sets, in slots: a server keeps a connection
    # per client, and CPython shares the keys of instance dicts only up to
    # 30 attributes (the server's connections have more), while a slot is
    # one pointer (see docs/performance.rst#memory-per-connection).
    # "__dict__" still takes the attributes of subclasses and applications.
    __slots__ = (
        "settings", "host", "port", "secure", "max_size", "max_queue", "read_limit",
        "write_limit", "ping_interval", "ping_timeout", "write_timeout", "logger", "_id", "subprotocol",
        "extensions", "path", "request_headers", "response_headers", "latency", "transport", "_core",
        "_core_lock", "_writer", "_messages", "_assembler", "_reader", "_closing", "_keepalive", "_pings_sent",
        "_opened_at", "_debug", "counters",
        "__dict__", "__weakref__",
    )

    def __init__(
        self,
        *,
        host: Optional[str] = None,
        port: Optional[int] = None,
        secure: Optional[bool] = None,
        logger: Union[logging.Logger, str, None] = None,
        settings: Optional[ConnectionSettings] = None,
        **options: Any,
    ) -> None:
        if settings is None:
            settings = check_settings(**options)
        elif options:
            raise TypeError(f"pass settings or options, not both: {', '.join(sorted(options))}")
        #: The connection's :class:`~syncws.settings.ConnectionSettings`.
        self.settings = settings
        self.host = host
        self.port = port
        self.secure = secure
        # The settings the seed exposes as attributes (close_timeout: a property).
        self.max_size = settings.max_message_size
        self.max_queue = settings.max_queue_high
        self.read_limit = settings.read_limit
        self.write_limit = settings.write_limit
        self.ping_interval = settings.ping_interval
        self.ping_timeout = settings.ping_timeout
        self.write_timeout = settings.write_timeout
        self.logger: logging.Logger = side_logger(logger, self.side)

        # The connection's id, drawn on first use (see the id property).
        self._id: Optional[uuid.UUID] = None
        #: The negotiated subprotocol, or ``None``.
        self.subprotocol: Optional[str] = None
        #: The extensions in use (permessage-deflate when negotiated).
        self.extensions: List[Any] = []
        #: The request path with its query string: on a server, the path
        #: percent-decoded (:mod:`syncws.paths`), the one form every check
        #: and route sees; on a client, the resource name it sent.
        self.path: str = ""
        #: The opening handshake's request headers (:class:`syncws.http.Headers`).
        self.request_headers: Any = None
        #: The opening handshake's response headers.
        self.response_headers: Any = None
        #: Seconds between the last ping and its pong; 0 until one returns.
        self.latency: float = 0.0
        #: The transport, from :meth:`connection_made` on.
        self.transport: Optional[Transport] = None

        self._core = ConnectionCore(
            is_client=self.is_client,
            max_message_size=settings.max_message_size,
            max_fragment_size=settings.max_fragment_size,
            join_limit=settings.write_limit,
        )
        # Guards _core; held only while it computes, never during I/O.
        self._core_lock = threading.Lock()
        # The write side, from connection_made() on.
        self._writer: Optional[Writer] = None
        self._messages = MessageQueue(settings.max_queue_high, settings.max_queue_low)
        self._assembler = Assembler(self._messages)
        # The reader loop connection_open() made, until its thread ends
        # (dropped then: it refers back to the connection).
        self._reader: Optional[Reader] = None
        # The closing handshake, its deadline, and the wait for the end.
        self._closing = Closing(self._core, self._core_lock, self._messages, settings.close_timeout)
        self._keepalive: Optional[Keepalive] = None
        # Pings sent by ping(); keepalive counts its own.
        self._pings_sent = 0
        self._opened_at = 0.0
        self._debug = False
        #: The :class:`~syncws.metrics.ConnectionCounters` told when the
        #: connection opens and when it ends; ``None`` (clients) for none.
        self.counters: Optional[ConnectionCounters] = None

    # -- public attributes ---------------------------------------------------

    @property
    def id(self) -> uuid.UUID:
        """A unique identifier of the connection (a random :class:`uuid.UUID`), for logs.

        Drawn on first use: a connection that nothing logs about never pays
        for the random bytes.
        """
        if self._id is None:
            # Imported here: uuid (and the platform module it imports) adds
            # to every server process's memory, and most never log a
            # connection's id.
            import uuid

            self._id = uuid.uuid4()
        return self._id

    @id.setter
    def id(self, value: uuid.UUID) -> None:
        self._id = value

    @property
    def close_timeout(self) -> Optional[float]:
        """Seconds the closing handshake may take before TCP is dropped; ``None`` for no limit."""
        return self._closing.close_timeout

    @close_timeout.setter
    def close_timeout(self, value: Optional[float]) -> None:
        self._closing.close_timeout = value

    @property
    def local_address(self) -> Any:
        """This side's socket address (as :meth:`socket.socket.getsockname`); ``None`` before the transport."""
        return None if self.transport is None else self.transport.local_address

    @property
    def remote_address(self) -> Any:
        """The peer's socket address (as :meth:`socket.socket.getpeername`); ``None`` before the transport."""
        return None if self.transport is None else self.transport.remote_address

    @property
    def state(self) -> State:
        """The :class:`State` of the connection."""
        return self._core.state

    @property
    def open(self) -> bool:
        """``True`` while messages can be sent (the state is ``OPEN``)."""
        return self._core.can_send

    @property
    def closed(self) -> bool:
        """``True`` once the connection is fully closed."""
        return self._core.state is State.CLOSED

    @property
    def state_name(self) -> str:
        """The state as a name: ``CONNECTING``, ``OPEN``, ``CLOSING`` or ``CLOSED``."""
        return self._core.state.name

    @property
    def close_code(self) -> Optional[int]:
        """The connection's close code; ``None`` until it is closed.

        The code of the close frame received (1005 if it had none), or 1006
        when none was received or ours wasn't sent (:attr:`close_rcvd` still
        holds the peer's). :exc:`~syncws.ConnectionClosed` carries the same code.
        """
        return self._core.close_code

    @property
    def close_reason(self) -> Optional[str]:
        """The connection's close reason; ``None`` until it is closed.

        The reason of the close frame received; without one, or when ours
        wasn't sent, what ended the connection (a protocol error we found...).
        """
        return self._core.close_reason

    @property
    def close_sent(self) -> Optional[Tuple[int, str]]:
        """``(code, reason)`` of the close frame this side wrote whole to the socket, or ``None``."""
        return self._core.close_sent

    @property
    def close_rcvd(self) -> Optional[Tuple[int, str]]:
        """``(code, reason)`` of the close frame received, or ``None``."""
        return self._core.close_rcvd

    @property
    def stats(self) -> Stats:
        """A :class:`Stats` snapshot of the connection's counters."""
        return snapshot(self._core, len(self._messages), self._pings_sent, self._keepalive)

    def __str__(self) -> str:
        return f"{connection_label(self)} ({self.side}, peer {format_address(self.remote_address)})"

    # -- setting up ------------------------------------------------------------

    def connection_made(self, transport: Transport) -> None:
        """Attach the transport the opening handshake will run on.

        Called by :func:`~syncws.connect` and :func:`~syncws.serve` (and the
        WSGI integration), before the handshake; not by applications.

        Args:
            transport: the connected socket.
        """
        self.transport = transport
        # A reader thread waiting for room in the queue reads nothing: after
        # a failed write, it must go on to find the end of the stream.
        self._writer = Writer(
            self._core, self._core_lock, transport, write_timeout=self.write_timeout,
            on_abandon=self._messages.unbound,
        )
        self._closing.attach(transport, self._writer)

    def connection_open(self) -> None:
        """Start the connection once the opening handshake succeeded.

        Starts the reader thread and keepalive, with the extensions the
        handshake negotiated (:attr:`extensions`). Called by the client and
        the server, not by applications.
        """
        transport = self.transport
        assert transport is not None, "connection_made() must come first"
        deflate = self.extensions[0] if self.extensions else None
        with self._core_lock:
            self._core.open(deflate)
        self._debug = self.logger.isEnabledFor(logging.DEBUG)
        self._opened_at = time.monotonic()
        assert self._writer is not None
        self._reader = Reader(
            self._core, self._core_lock, transport, self._writer, self._messages, transport.take_buffered(),
            is_client=self.is_client, logger=self.logger, label=LazyLabel(self),
            on_pong=self._pong_received, on_closing=self._closing.start_timer, on_end=self._finish,
        )
        # Keepalive first: the reader may end the connection (and stop
        # keepalive) before threadpool.start() even returns.
        if self.ping_interval is not None:
            core = self._core  # the count's closure holds the core, not the connection
            self._keepalive = Keepalive(
                self._writer, lambda: core.messages_received, interval=self.ping_interval, timeout=self.ping_timeout,
                messages=self._messages, on_timeout=self._keepalive_timed_out,
            )
            self._keepalive.start()
        self._closing.reader_started = True
        # Before the reader starts: it may end the connection at once.
        if self.counters is not None:
            self.counters.opened(self)
        try:
            # Not the address tuple's repr: repr() of a container gives the
            # calling thread a dict of its own (CPython's recursion guard),
            # kept for as long as a server's handler thread lives.
            threadpool.start(self._run_reader, f"syncws-reader-{format_address(self.remote_address)}")
        except BaseException:
            self._closing.reader_started = False
            self._reader = None
            if self._keepalive is not None:
                self._keepalive.stop()
            if self.counters is not None:
                self.counters.ended(self)
            raise

    def _run_reader(self) -> None:
        """The connection's reader thread (a thread of :mod:`syncws.threadpool`)."""
        self._closing.reader_ident = threading.get_ident()
        assert self._reader is not None
        set_connection(self)
        try:
            self._reader.run()
        finally:
            set_connection(None)  # the thread may serve another connection next
            self._reader = None
            self._closing.closed.set()

    def abort(self, cause: str = "aborted") -> None:
        """Drop the connection at once, without a closing handshake.

        Never blocks; safe from any thread. An open connection's reader
        thread then finds the end of the stream and closes everything; a
        connection still in its opening handshake is closed here.

        Not a hook: the connection's own deadlines (closing, writes,
        keepalive) drop TCP without calling it, so no override can stop them.

        Args:
            cause: why, for :attr:`close_reason`.
        """
        self._closing.abort(cause)

    # -- receiving -----------------------------------------------------------

    def recv(self, timeout: Optional[float] = None, decode: Optional[bool] = None) -> Data:
        """Return the next message.

        Call it from one thread at a time.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes, 0
                only returns a message that has already arrived.
            decode: ``None`` returns ``str`` for a text message and ``bytes``
                for a binary one; ``False`` returns a text message as UTF-8
                ``bytes`` (already validated); ``True`` decodes a binary
                message as UTF-8.

        Returns:
            The message.

        Raises:
            TimeoutError: no message arrived within ``timeout``.
            ConnectionClosed: the connection is closed and every message
                received before has been returned.
            ConcurrencyError: another thread is in ``recv()``.
            UnicodeDecodeError: ``decode=True`` and the binary message isn't
                UTF-8.
        """
        try:
            return self._assembler.get(timeout, decode)
        except QueueClosed:
            raise self._core.closed_exception() from None

    def recv_streaming(self, timeout: Optional[float] = None, decode: Optional[bool] = None) -> Iterator[Data]:
        """Yield the fragments of the next message as they arrive.

        A message sent in one frame comes as one fragment. For text, a
        character split between frames is yielded whole with the later one.
        Fragments that arrive together may come out joined.

        Args:
            timeout: seconds to wait for the message to start, as in :meth:`recv`.
            decode: as for :meth:`recv`, applied to each fragment.

        Raises:
            TimeoutError: no message arrived within ``timeout``.
            ConnectionClosed: the connection is closed.
            ConcurrencyError: another thread is receiving.
        """
        try:
            yield from self._assembler.stream(timeout, decode)
        except QueueClosed:
            raise self._core.closed_exception() from None

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes.

        Ends quietly after a normal close (1000, 1001, or a close frame
        without a code) and raises :exc:`~syncws.ConnectionClosedError`
        otherwise.
        """
        # recv(), one call shorter, as this runs for every message
        # (tests/test_protocol.py holds the two to each other).
        get = self._assembler.get
        while True:
            try:
                message = get()
            except QueueClosed:
                # The usual end, told without building the exception (its
                # message formats the close code): once per connection.
                if self._core.close_code in OK_CLOSE_CODES:
                    return
                raise self._core.closed_exception() from None
            yield message

    # -- sending -------------------------------------------------------------

    def send(
        self,
        message: Union[Data, BytesLike, Iterable[Union[Data, BytesLike]]],
        timeout: Optional[float] = None,
        *,
        text: Optional[bool] = None,
        compress: Optional[bool] = None,
    ) -> None:
        """Send a message.

        Safe to call from any thread; messages from several threads go out
        whole, one after the other. While another thread sends a fragmented
        message, this one waits for its end (within ``timeout``); only
        ``ping()``, ``pong()`` and ``close()`` go out between its frames.

        Args:
            message: ``str`` sends a text message; ``bytes``, ``bytearray``
                or ``memoryview`` a binary one; an iterable of ``str`` or of
                bytes-likes sends one message fragmented into one frame per
                item.
            timeout: seconds the send may take; defaults to the connection's
                ``write_timeout``. Past it the connection is aborted, since a
                frame may have gone out half.
            text: ``True`` sends bytes as a text frame (they must be UTF-8),
                ``False`` sends a ``str`` as a binary frame; ``None`` follows
                the type.
            compress: with permessage-deflate negotiated, ``None`` compresses
                messages of at least the settings' ``threshold`` bytes (and
                every fragmented message), ``False`` sends this message
                uncompressed (e.g. data that is already compressed), ``True``
                compresses it whatever its size. Ignored without deflate.

        Raises:
            TypeError: ``message`` has an unsupported type, or an iterable
                mixes text and bytes.
            ConnectionClosed: the connection is closed (or closing).
            ConcurrencyError: called from the iterable of a fragmented
                ``send()`` in the same thread, once that message started: it
                would wait for itself.
            TimeoutError: the peer didn't read the message in time; the
                connection is aborted. Or another thread's fragmented
                message was still being sent at the deadline: then nothing
                was sent and the connection stays open (the exception says
                which).
        """
        if type(message) is str and text is None:  # the common case, first
            # Handed down unencoded: the frame is encoded straight from it
            # (pack_frame()), with no bytes object made and freed per message.
            payload: Union[BytesLike, str, None] = message
            is_text = True
        else:
            outgoing = prepare_message(message, text)
            if outgoing.fragments is not None:
                try:
                    try:
                        self._open_writer().send_fragments(outgoing.fragments, outgoing.text, compress, timeout)
                    except (InvalidState, OSError) as exc:
                        self._closing.refuse(exc)
                except (OSError, InvalidState, ConcurrencyError):
                    raise  # nothing was sent, or the connection is already gone
                except Exception:
                    self._closing.start_timer()  # the writer failed the connection with 1011
                    raise
                return
            payload, is_text = outgoing.payload, outgoing.text
        if self._debug:
            assert payload is not None
            size = len(payload.encode()) if isinstance(payload, str) else len(payload)
            self.logger.debug("%s > %s [%d bytes]", self, "TEXT" if is_text else "BINARY", size)
        writer = self._writer
        if writer is None:
            raise InvalidState("the opening handshake isn't done yet")
        try:
            writer.send_message(payload, is_text, compress, timeout)  # type: ignore[arg-type]
        except (InvalidState, OSError) as exc:
            self._closing.refuse(exc)

    def _open_writer(self) -> Writer:
        """The writer, once the opening handshake gave the connection one."""
        if self._writer is None:
            raise InvalidState("the opening handshake isn't done yet")
        return self._writer

    def _write(self, produce: Callable[[ConnectionCore], Any]) -> None:
        """Have the core make frames with ``produce(core)`` and write them (ping, pong).

        A refused send is reported as the closed connection (see
        :meth:`~syncws.closing.Closing.refuse`).
        """
        writer = self._open_writer()
        try:
            writer.write(produce, deadline=writer.deadline())
        except (InvalidState, OSError) as exc:
            self._closing.refuse(exc)

    def send_nowait(self, message: Data, timeout: Optional[float] = None, *, text: Optional[bool] = None) -> bool:
        """Send ``message`` only if that can't block; for :func:`~syncws.broadcast`.

        Args:
            message: ``str`` or bytes-like.
            timeout: the deadline of the send, should it block after all.
            text: as for :meth:`send`: ``True`` sends bytes as a text frame
                (they must be UTF-8).

        Returns:
            ``False``, having sent nothing, when another send is under way or
            the whole frame might not fit in the socket buffer at once.

        Raises:
            TypeError: ``message`` isn't ``str`` or bytes-like.
            ConnectionClosed: the connection is closed.
            TimeoutError: as for :meth:`send`.
        """
        outgoing = prepare_message(message, text)
        if outgoing.payload is None:
            raise TypeError(f"broadcast() sends str or bytes-like messages, not {type(message).__name__}")
        if not self.open:
            return False  # a worker thread will report why
        writer = self._open_writer()
        try:
            return writer.send_message(outgoing.payload, outgoing.text, None, timeout, nowait=True)
        except (InvalidState, OSError) as exc:
            self._closing.refuse(exc)

    def ping(self, data: Union[str, bytes, None] = None) -> threading.Event:
        """Send a ping.

        Args:
            data: the payload (at most 125 bytes; ``str`` is encoded to
                UTF-8); 4 random bytes by default.

        Returns:
            An event that is set when the matching pong arrives (a pong also
            acknowledges every earlier ping). A ping followed by
            :data:`~syncws.core.MAX_PINGS_WAITING` others before any pong is
            forgotten: its event is never set.

        Raises:
            ValueError: a ping with the same payload is still waiting for
                its pong, or the payload is too long.
            ConnectionClosed: the connection is closed.
            TimeoutError: the peer didn't read the ping within
                ``write_timeout``; the connection is aborted.
        """
        payload = data.encode() if isinstance(data, str) else None if data is None else bytes(data)
        event = threading.Event()

        def produce(core: ConnectionCore) -> None:
            core.send_ping(payload, (event, time.monotonic()))
            # Counted under the core's lock: pings may come from several threads.
            self._pings_sent += 1

        self._write(produce)
        return event

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
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._write(lambda core: core.send_pong(payload))

    # -- closing -------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Perform the closing handshake and wait for the connection to end.

        Idempotent, and safe to call from any thread: a thread blocked in
        :meth:`recv` gets every message that arrived before, then
        :exc:`~syncws.ConnectionClosed`. Returns once the reader thread is
        done with the connection, at most about ``close_timeout`` seconds later (then the TCP
        connection is dropped without waiting for the peer). Messages that
        arrive after the close frame was sent are dropped.

        Args:
            code: the close code, 1000 by default.
            reason: the close reason, at most 123 bytes in UTF-8.

        Raises:
            ValueError: a code that can't be sent or a reason that is too
                long.
        """
        serialize_close(code, reason)  # validates before any effect
        self._closing.close(code, reason)

    def start_closing(self, code: int = CloseCode.GOING_AWAY, reason: str = "",
                      give_up_at: Optional[float] = None) -> None:
        """Start the closing handshake without ever blocking.

        For a server closing all its connections, and for the timer thread:
        one stuck connection must not hold up the others. While a send holds
        the write lock or the socket buffer is full, the close frame is
        retried from the timer thread; if it still can't go out within
        ``close_timeout``, the connection is dropped.

        Args:
            code: the close code, 1001 by default.
            reason: the close reason.
            give_up_at: when to stop retrying (a ``time.monotonic()``
                value); ``close_timeout`` from now by default.
        """
        self._closing.start_closing(code, reason, give_up_at)

    def wait_closed(self, timeout: Optional[float] = None) -> None:
        """Wait until the connection is closed, by either side.

        Args:
            timeout: seconds to wait; ``None`` for as long as it takes.

        Raises:
            TimeoutError: the connection is still open after ``timeout``.
        """
        if not self._closing.closed.wait(timeout):
            raise TimeoutError(f"connection still open after {timeout} seconds")

    def __enter__(self) -> "WebSocketCommonProtocol":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _keepalive_timed_out(self, written: bool) -> None:
        """Keepalive callback (timer thread): the peer stopped answering pings, or reading.

        Args:
            written: whether the ping went out; ``False`` when the socket
                had no room for it for ``ping_timeout`` (the peer reads
                nothing).
        """
        if written:
            self.logger.info("%s: no pong within %s seconds; closing", self, self.ping_timeout)
            self._closing.give_up(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        else:
            self.logger.info("%s: ping not written within %s seconds: the peer isn't reading; closing", self,
                             self.ping_timeout)
            self._closing.give_up(CloseCode.INTERNAL_ERROR, "keepalive ping not written: the peer isn't reading")

    # -- the reader thread -------------------------------------------------------

    def _pong_received(self, latency: float) -> None:
        """Reader callback: a ping's pong came back."""
        self.latency = latency

    def _finish(self, cause: str) -> None:
        """Close the socket and the queue, stop the timers: the reader loop's last act.

        Its thread then sets the closing's ``closed`` latch (in :meth:`_run_reader`).
        """
        self._closing.finish(cause)
        if self._keepalive is not None:
            self._keepalive.stop()
        self._messages.close()
        if self.counters is not None:
            self.counters.ended(self)
        if self.logger.isEnabledFor(logging.INFO):
            core = self._core
            assert core.close_code is not None and core.close_reason is not None
            self.logger.info("%s", closed_line(self, core.close_code, core.close_reason, time.monotonic() - self._opened_at))
