"""The reader thread of a connection: socket → core → queue.

Theory of operation: the reader thread is the only reader of the socket. It
feeds what it reads to the connection's core (:mod:`syncws.core`), under the
core's lock, and acts on the events that come out: messages and fragments go
to the bounded :class:`~syncws.messages.MessageQueue` (when it is full, the
thread waits there, stops reading, and TCP pushes back on the peer); pongs
set the events their pings wait on; frames the core made in answer (pongs,
the reply to a close frame) are flushed by the writer. For a large frame the
core offers the frame's own payload buffer, so its bytes go from the kernel
straight to where they stay. Other reads start small and grow to
``read_limit`` while the peer keeps them full (see :data:`SMALL_READ`).

Once the core takes no more input (the peer's close frame arrived, or the
peer broke the protocol), the thread ends TCP the RFC's way: the server
shuts its side down first (RFC 6455 §7.1.1), a client waits for the server
to, both within the closing deadline. Then it hands over to ``on_end``, which
closes everything.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, List, Union

from .close_codes import CloseCode, describe_close
from .core import CloseReceived, ConnectionCore, Data, Event, Failed, Fragment, PongReceived
from .messages import MessageQueue
from .headreader import SMALL_READ
from .transport import Transport
from .writer import Writer

__all__ = ["Reader"]


class Reader:
    """Runs one connection's reader thread.

    Args:
        core: the connection's core; :meth:`run` is its only input.
        core_lock: the lock that guards ``core``.
        transport: the socket.
        writer: the connection's write side, for the frames the core makes.
        messages: the queue ``recv()`` takes from.
        buffered: bytes that arrived after the opening handshake's HTTP
            head, parsed first.
        is_client: whether this is the client side (which waits for the
            server to close TCP).
        logger: where to log, with ``label`` in front of each line.
        label: names the connection in logs: its ``str()`` is the label
            (a :class:`~syncws.logs.LazyLabel`, worked out only for the
            lines that are logged).
        on_pong: called with the latency of each ping a pong acknowledges.
        on_closing: called when the closing handshake starts on input (to arm
            the closing deadline).
        on_end: called last, with what ended the connection (or ``""``).
    """

    __slots__ = (
        "core", "core_lock", "transport", "writer", "messages", "buffered", "is_client", "logger", "label",
        "on_pong", "on_closing", "on_end", "debug",
    )

    def __init__(
        self,
        core: ConnectionCore,
        core_lock: threading.Lock,
        transport: Transport,
        writer: Writer,
        messages: MessageQueue,
        buffered: bytes,
        *,
        is_client: bool,
        logger: logging.Logger,
        label: object,
        on_pong: Callable[[float], None],
        on_closing: Callable[[], None],
        on_end: Callable[[str], None],
    ) -> None:
        self.core = core
        self.core_lock = core_lock
        self.transport = transport
        self.writer = writer
        self.messages = messages
        self.buffered = buffered
        self.is_client = is_client
        self.logger = logger
        self.label = label
        self.on_pong = on_pong
        self.on_closing = on_closing
        self.on_end = on_end
        self.debug = logger.isEnabledFor(logging.DEBUG)

    def run(self) -> None:
        """The thread's body: feed the core until the connection ends."""
        buffered, self.buffered = self.buffered, b""
        core, lock, transport = self.core, self.core_lock, self.transport
        # The core's frame parser, called with the core (what
        # core.receive_data() does, a call fewer per read).
        decoder = core.decoder
        read_limit = transport.read_limit
        small_read = min(SMALL_READ, read_limit)
        read_size = small_read  # see SMALL_READ
        # Bound once for every small read; recv_into() and recv_ready() are
        # looked up when used: rarer, and each bound method would be an
        # object the connection keeps for as long as it is open.
        recv = transport.recv
        put_all = self.messages.put_all
        debug = self.debug
        cause = ""
        # The core's lock is taken with acquire() and try/finally, cheaper
        # than a with statement, as this runs for every read (hot path: see
        # docs/performance.rst#how-fast-against-what).
        try:
            events: List[Event] = []
            if buffered:  # usually nothing came after the HTTP head
                lock.acquire()
                try:
                    events = core.receive_data(buffered)
                finally:
                    lock.release()
            while True:
                # Input of whole messages only (the decoder says so) goes
                # to the queue as it came, and has no partial frame to read
                # into: two Python calls fewer for most reads.
                simple = decoder.simple_input and not debug
                received = events if simple else self.handle(events) if events else ()
                if core.outgoing:
                    if core.input_closed:
                        # The closing deadline before the close frame's
                        # write, which blocks while the socket buffer is
                        # full, as long as write_timeout allows.
                        self.on_closing()
                    self.writer.flush(blocking=False)
                if core.input_closed:
                    put_all(received)
                    break
                # Only this thread changes the partial frame get_buffer()
                # looks at; a concurrent fail() only makes it moot.
                buffer = None if simple else decoder.get_buffer()
                if buffer is not None and len(buffer) < read_limit:
                    buffer.release()  # the core may grow the buffer
                    buffer = None
                # Messages go to the queue last, just before the thread
                # blocks on the socket (and lets go of the interpreter lock):
                # the consumer a put wakes up then finds the lock free,
                # rather than waking up only to wait for it.
                if received:
                    put_all(received)
                # Nothing the thread is done with stays referenced while it
                # blocks: a message recv() has taken and dropped (up to
                # max_message) would otherwise live on, in these lists, for
                # as long as the peer stays silent.
                del events, received
                if buffer is not None:
                    # A large frame: read straight into its payload. The
                    # view is released at once: the core may grow the buffer.
                    with buffer:
                        size = transport.recv_into(buffer)
                    if not size:
                        return
                    lock.acquire()
                    try:
                        events = decoder.buffer_updated(size, core)
                    finally:
                        lock.release()
                else:
                    data = recv(read_size)
                    if not data:
                        return
                    if len(data) < small_read:
                        read_size = small_read
                    elif read_size != read_limit:
                        # A small read came back full: the rest of the frame
                        # is likely there already. Taken at once, it reaches
                        # the core with the frame's start: a frame cut in two
                        # takes the core's general path, a whole one doesn't.
                        data += transport.recv_ready(read_limit)
                        read_size = read_limit
                    lock.acquire()
                    try:
                        events = decoder.receive_data(data, core)
                    finally:
                        lock.release()
                    del data  # (the core keeps what it still needs)
            # The closing deadline first (if not armed above): the close
            # frame may wait behind a send blocked on the peer, for as long
            # as that send's deadline (forever without write_timeout), and
            # the handshake may not.
            self.on_closing()
            # The close frame goes out before our FIN.
            self.writer.flush(blocking=True)
            self.messages.unbound()
            if not self.is_client:
                transport.shutdown_write()
            transport.discard_input()
        except OSError as exc:
            cause = f"connection lost: {exc}" if str(exc) else "connection lost"
        except Exception:
            self.logger.exception("%s: unexpected error in the reader thread", self.label)
            cause = "internal error in the reader thread"
            with lock:
                core.fail(CloseCode.INTERNAL_ERROR, "internal error")
            self.writer.flush(blocking=False)
        finally:
            self.on_end(cause)

    def handle(self, events: List[Event]) -> List[Union[Data, Fragment]]:
        """Act on what the core made of the input; return the messages and fragments to queue."""
        if self.debug:
            for event in events:
                if type(event) in (str, bytes, Fragment):
                    self.logger.debug("%s < %s", self.label, _describe(event))  # type: ignore[arg-type]
        received: List[Union[Data, Fragment]] = []
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes or kind is Fragment:
                received.append(event)  # type: ignore[arg-type]
            elif kind is PongReceived:
                assert isinstance(event, PongReceived)
                now = time.monotonic()
                for ping_event, sent_at in event.waiters:
                    ping_event.set()
                    self.on_pong(now - sent_at)
            elif kind is Failed:
                assert isinstance(event, Failed)
                self.logger.info("%s failing with %s", self.label, describe_close(event.code, event.reason))
            elif kind is CloseReceived and self.debug:
                assert isinstance(event, CloseReceived)
                self.logger.debug("%s < CLOSE %s", self.label, describe_close(event.code, event.reason))
        return received


def _describe(message: Union[Data, Fragment]) -> str:
    """One line for DEBUG logs, payload truncated."""
    flags = ""
    if isinstance(message, Fragment):
        flags = "" if message.fin else " (not fin)"
        message = message.data
    kind = "TEXT" if isinstance(message, str) else "BINARY"
    more = "..." if len(message) > 24 else ""
    return f"{kind} {message[:24]!r}{more} [{len(message)}]{flags}"
