"""The design's ceiling: syncws's threads and queue over raw TCP, without WebSocket.

syncws is built from blocking sockets, one reader thread per connection, a
bounded queue of whole messages and a write lock. This module is that design
and nothing else: the same threads, the same queue and the same lock, over a
framing as small as framing gets, so that a benchmark can say how close
syncws comes to what its design allows. It is a measuring instrument, not a
library: no TLS, no handshake, no masking, no UTF-8 validation, no limits
beyond ``max_size``, no pings, no timeouts on writes.

The contract is a WebSocket connection's, so that a comparison is honest:
:meth:`Connection.recv` returns whole messages, ``str`` for text (decoded
here) and ``bytes`` for binary; :meth:`Connection.send` takes either, from any
thread; :meth:`Connection.close` runs a closing handshake (a close frame each
way) before the socket is closed. The server runs each connection's handler
in a thread of its own and closes the connection when the handler returns,
so a server connection holds two threads, like syncws's.

Framing: every frame is one whole message, a 5-byte header (1 type byte, then
the payload's length as a 4-byte big-endian unsigned integer) and the
payload. The types are :data:`TEXT`, :data:`BINARY` and :data:`CLOSE` (with an
empty payload).

Data path, to know what the ceiling costs per byte: the reader receives up to
64 KiB at a time (``recv``, so no buffer stays allocated between messages;
starting at :data:`SMALL_READ` bytes and growing while the peer fills them,
as syncws's reads do, for the memory reason syncws.headreader gives)
and cuts small messages out of what it got (one copy each); a message longer
than what is there is received straight into a ``bytearray`` of its size,
then decoded (text) or copied once into ``bytes`` (binary). A send of up
to 64 KiB joins header and payload into one ``sendall``; a longer one sends
the header, then the payload without copying it.

Threads: the reader thread is the only one that reads the socket and the only
producer of the queue; any thread may call ``recv()``, ``send()`` and
``close()``.

The opening round trip (``opening=True`` on both :func:`connect` and
:func:`serve`): the client sends :data:`OPENING_REQUEST` bytes and waits for
the server's :data:`OPENING_ANSWER` bytes before the connection starts, as
a WebSocket client sends its HTTP request and waits for the 101. The sizes
are those of syncws's request and 101 in the benchmark; nothing is parsed.
It is the least that any protocol whose client waits for an answer to its
opening costs, so that connect + close can be measured against it too.
"""

from __future__ import annotations

import queue
import socket
import struct
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Union

__all__ = ["TEXT", "BINARY", "CLOSE", "ConnectionClosed", "Connection", "Server", "connect", "serve"]

Data = Union[str, bytes]

TEXT = 1
BINARY = 2
CLOSE = 8

_HEADER = struct.Struct("!BI")
HEADER_SIZE = _HEADER.size  # 5
assert HEADER_SIZE == 5

#: Bytes asked of the socket per read, and the largest send joined with its header.
CHUNK = 2**16
#: Bytes asked per read while the peer sends little: a bytes object of this
#: size is one block of CPython's small-object allocator. A read that comes
#: back with this many bytes or more asks for CHUNK next.
SMALL_READ = 512 - sys.getsizeof(b"")

#: The opening round trip's sizes: syncws's HTTP request and 101 response
#: in the benchmark (its Host, Sec-WebSocket-Key, User-Agent and Server
#: headers included).
OPENING_REQUEST = 192
OPENING_ANSWER = 158

# The end marker of the queue; a consumer that takes it puts it back.
_END = object()


class ConnectionClosed(Exception):
    """Raised by ``recv()`` and ``send()`` once the connection is closed."""


class Connection:
    """One connection: a socket, a reader thread, a bounded queue, a write lock.

    Args:
        sock: a connected TCP socket, blocking.
        max_queue: messages that may wait in the queue before the reader
            stops reading the socket.
        max_size: the largest payload accepted; a longer one ends the
            connection.
    """

    def __init__(self, sock: socket.socket, max_queue: int = 32, max_size: int = 2**20) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self._sock = sock
        self._max_queue = max_queue
        self._max_size = max_size
        # The queue and its bound: the reader waits on _room while the queue
        # holds max_queue messages; consumers set _room after each get().
        self._messages: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._room = threading.Event()
        self._bounded = True
        # True while the reader waits for room: only then do consumers set
        # _room (Event.set costs a Condition round, a wake-up is rare).
        self._waiting = False
        # Serializes writes; _close_sent is set under it.
        self._write_lock = threading.Lock()
        self._close_sent = False
        self._reader = threading.Thread(target=self._read_loop, name="ceiling-reader", daemon=True)
        self._reader.start()

    # -- the reader thread -------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            self._read_messages()
        except (OSError, ConnectionClosed):
            pass
        finally:
            # Once the reader is done, every message for recv() is queued.
            self._bounded = False
            self._messages.put(_END)
            self._room.set()

    def _read_messages(self) -> None:
        recv, recv_into = self._sock.recv, self._sock.recv_into
        data = b""  # received, not yet parsed: data[position:]
        position = 0
        read_size = SMALL_READ
        while True:
            # Receive until a whole header is there.
            while len(data) - position < HEADER_SIZE:
                chunk = recv(read_size)
                if not chunk:
                    raise ConnectionClosed("the peer closed the TCP connection")
                read_size = CHUNK if len(chunk) >= SMALL_READ else SMALL_READ
                data = data[position:] + chunk if position < len(data) else chunk
                position = 0
            kind, length = _HEADER.unpack_from(data, position)
            position += HEADER_SIZE
            if length > self._max_size:
                raise ConnectionClosed(f"message of {length} bytes over max_size")
            if len(data) - position >= length:
                payload: Any = memoryview(data)[position : position + length]
                position += length
            else:
                # Longer than what is there: receive the rest in place.
                payload = bytearray(length)
                have = len(data) - position
                payload[:have] = memoryview(data)[position:]
                data, position = b"", 0
                target = memoryview(payload)
                while have < length:
                    received = recv_into(target[have:])
                    if not received:
                        raise ConnectionClosed("the peer closed the TCP connection")
                    have += received
            if kind == TEXT:
                self._put(str(payload, "utf-8"))
            elif kind == BINARY:
                self._put(bytes(payload))
            elif kind == CLOSE:
                self._send_close()
                return
            else:
                raise ConnectionClosed(f"unknown frame type {kind}")

    def _put(self, message: Data) -> None:
        while self._bounded and self._messages.qsize() >= self._max_queue:
            self._waiting = True
            self._room.clear()
            # Checked again after the clear: a consumer that took a message
            # in between has seen _waiting and set _room, or will.
            if self._bounded and self._messages.qsize() >= self._max_queue:
                self._room.wait()
            self._waiting = False
        self._messages.put(message)

    # -- any thread --------------------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Data:
        """Return the next message, waiting for it.

        Raises:
            ConnectionClosed: the connection is closed and no message is left.
            TimeoutError: no message within ``timeout`` seconds.
        """
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message within {timeout} s") from None
        if message is _END:
            self._messages.put(_END)
            raise ConnectionClosed("the connection is closed")
        if self._waiting:
            self._room.set()
        return message  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes."""
        try:
            while True:
                yield self.recv()
        except ConnectionClosed:
            return

    def send(self, message: Data) -> None:
        """Send one message: ``str`` as text, ``bytes``-like as binary.

        Raises:
            ConnectionClosed: after close() or once the socket failed.
        """
        if isinstance(message, str):
            kind, payload = TEXT, message.encode()
        else:
            kind, payload = BINARY, message
        header = _HEADER.pack(kind, len(payload))
        with self._write_lock:
            if self._close_sent:
                raise ConnectionClosed("the connection is closing")
            try:
                if len(payload) <= CHUNK:
                    self._sock.sendall(header + payload)
                else:
                    self._sock.sendall(header)
                    self._sock.sendall(payload)
            except OSError as exc:
                raise ConnectionClosed(str(exc)) from exc

    def _send_close(self) -> None:
        with self._write_lock:
            if self._close_sent:
                return
            self._close_sent = True
            try:
                self._sock.sendall(_HEADER.pack(CLOSE, 0))
            except OSError:
                pass

    def close(self, timeout: float = 10.0) -> None:
        """Send a close frame, wait for the peer's, and close the socket.

        Idempotent; safe from any thread but the reader.
        """
        self._send_close()
        self._reader.join(timeout)
        self._sock.close()


# -- client and server -----------------------------------------------------------------


def connect(host: str, port: int, *, opening: bool = False, **kwargs: Any) -> Connection:
    """Open a TCP connection and return it as a :class:`Connection`.

    With ``opening``, after the opening round trip (see the module's
    docstring); the server must have been started with it too.
    """
    sock = socket.create_connection((host, port))
    if opening:
        sock.sendall(bytes(OPENING_REQUEST))
        _receive_exactly(sock, OPENING_ANSWER)
    return Connection(sock, **kwargs)


def _receive_exactly(sock: socket.socket, size: int) -> None:
    """Read and drop ``size`` bytes: the other side's half of the opening."""
    while size > 0:
        data = sock.recv(size)
        if not data:
            raise ConnectionClosed("the peer closed the TCP connection during the opening")
        size -= len(data)


class Server:
    """Accept connections in a thread; run ``handler(connection)`` in a thread each.

    Args:
        handler: called with each :class:`Connection`; the connection is
            closed when it returns.
        host, port: where to listen; port 0 picks a free port (see ``port``).
        opening: each connection starts with the opening round trip (see
            the module's docstring), answered by its handler thread.
        kwargs: passed to each :class:`Connection`.
    """

    def __init__(
        self, handler: Callable[[Connection], None], host: str, port: int, *, opening: bool = False, **kwargs: Any
    ) -> None:
        self._handler = handler
        self._opening = opening
        self._kwargs = kwargs
        self._listener = socket.create_server((host, port), backlog=128)
        self.port: int = self._listener.getsockname()[1]
        # Guards _connections, _handlers and _closing.
        self._lock = threading.Lock()
        self._connections: Set[Connection] = set()
        # Every handler thread alive, with its socket: close() ends them,
        # the ones still in the opening round trip included.
        self._handlers: Dict[threading.Thread, socket.socket] = {}
        self._closing = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="ceiling-accept", daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                if self._closing:
                    return
                continue
            thread = threading.Thread(target=self._serve, args=(sock,), name="ceiling-handler", daemon=True)
            with self._lock:
                if self._closing:
                    sock.close()
                    return
                self._handlers[thread] = sock
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._serve_connection(sock)
        finally:
            with self._lock:
                self._handlers.pop(threading.current_thread(), None)

    def _serve_connection(self, sock: socket.socket) -> None:
        if self._opening:
            try:
                _receive_exactly(sock, OPENING_REQUEST)
                sock.sendall(bytes(OPENING_ANSWER))
            except (OSError, ConnectionClosed):
                sock.close()
                return
        connection = Connection(sock, **self._kwargs)
        with self._lock:
            self._connections.add(connection)
        try:
            self._handler(connection)
        except ConnectionClosed:
            pass
        finally:
            connection.close()
            with self._lock:
                self._connections.discard(connection)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection, and wait for every thread the server started.

        Args:
            timeout: seconds each thread is waited for.
        """
        with self._lock:
            self._closing = True
            connections: List[Connection] = list(self._connections)
        # close() alone doesn't wake a thread blocked in accept() on Linux;
        # shutdown() does.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._acceptor.join(timeout)
        for connection in connections:
            connection.close(timeout)
        with self._lock:
            handlers = dict(self._handlers)
        for thread, sock in handlers.items():
            try:
                sock.shutdown(socket.SHUT_RDWR)  # one still in its opening round trip
            except OSError:
                pass  # closed with its connection
            thread.join(timeout)


def serve(handler: Callable[[Connection], None], host: str, port: int, **kwargs: Any) -> Server:
    """Start a :class:`Server`; it is accepting when this returns."""
    return Server(handler, host, port, **kwargs)


def echo(connection: Connection) -> None:
    """The echo handler that the benchmarks serve."""
    for message in connection:
        connection.send(message)

