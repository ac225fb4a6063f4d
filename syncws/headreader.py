"""Buffered reading of an HTTP head from a blocking socket.

A connection's opening handshake reads the HTTP head (the server's request,
the client's response, a proxy's answer to ``CONNECT``) through a
:class:`HeadReader` (inside :class:`~syncws.transport.Transport`): whole when
it arrived at once, else line by line. Whatever arrived after the head is then
taken with :meth:`HeadReader.take_buffered` and handed to the connection's
core, so no byte is lost between the two. :meth:`HeadReader.read_exact`
reads exact byte counts, for :func:`syncws.framing.read_frame` in code that
reads frames one at a time; syncws's connections don't: they parse frames
incrementally in :mod:`syncws.core`.

Only one thread reads at a time, so there is no lock. Each refill is one
blocking ``recv`` of :data:`SMALL_READ` bytes, or of ``read_limit`` after a
refill that returned that many or more; a payload larger than ``read_limit`` is
read straight into a buffer of its announced length, which the caller may
unmask in place."""

from __future__ import annotations

import socket
import sys
from typing import Callable, Optional, Union

__all__ = ["SMALL_READ", "HeadReader"]

#: Bytes asked per read while the peer sends little: a bytes object of this
#: size, header included, is one block of CPython's small-object allocator
#: (512 bytes at most). Why not ``read_limit`` every time: ``recv(n)``
#: allocates its ``n`` bytes before it blocks, and what it returns is that
#: buffer shrunk in place. At ``read_limit`` the buffer comes from glibc's malloc,
#: so every short read leaves a small glibc block behind; once freed, that
#: block sits in the freeing thread's cache (tcache), which glibc never
#: coalesces, and with a thousand reader threads the pinned blocks break up
#: the free space that the next such buffers would reuse: they land on
#: fresh pages, each one touched. A read that returns this many bytes or
#: more says more is coming: the next one asks for ``read_limit``. The
#: reader thread (:mod:`syncws.reader`) reads by the same rule. What it
#: saves: see docs/performance.rst#memory-per-connection.
SMALL_READ = 512 - sys.getsizeof(b"")


class HeadReader:
    """Reads from a socket through a buffer.

    Args:
        sock: a connected socket in blocking mode (or with a timeout during
            the handshake).
        read_limit: the most bytes asked of the socket per ``recv``.
        buffered: bytes already read from the socket, served first.

    Reads raise :exc:`EOFError` when the peer closes the stream before the
    requested bytes arrive, and let the socket's :exc:`OSError` through.
    """

    __slots__ = (
        "_sock", "_read_limit", "_small_read", "_read_size", "_data", "_pos",
    )

    def __init__(self, sock: socket.socket, read_limit: int = 2**16, buffered: bytes = b"") -> None:
        # The socket itself, not its bound recv methods (64 bytes each): a
        # connection's transport keeps its HeadReader for as long as the
        # connection is open, and reads through it only for the opening
        # handshake, once or twice.
        self._sock = sock
        self._read_limit = read_limit
        # Bytes the next refill asks for (see SMALL_READ).
        self._small_read = self._read_size = min(SMALL_READ, read_limit)
        # Buffered bytes are self._data[self._pos:].
        self._data = buffered
        self._pos = 0

    def _fill(self) -> None:
        """Append one ``recv`` worth of bytes to the buffer."""
        chunk = self._sock.recv(self._read_size)
        if not chunk:
            raise EOFError("the peer closed the connection")
        self._read_size = self._read_limit if len(chunk) >= self._small_read else self._small_read
        self._data = self._data[self._pos :] + chunk
        self._pos = 0

    def read_exact(self, n: int) -> Union[bytes, bytearray]:
        """Return exactly ``n`` bytes.

        Args:
            n: how many bytes.

        Returns:
            ``bytes``, or a ``bytearray`` (writable, for unmasking in place)
            when ``n`` exceeds ``read_limit``.

        Raises:
            EOFError: the stream ended first.
        """
        pos = self._pos
        end = pos + n
        if end <= len(self._data):
            self._pos = end
            return self._data[pos:end]
        if n > self._read_limit:
            return self._read_large(n)
        while len(self._data) - self._pos < n:
            self._fill()
        pos = self._pos
        self._pos = pos + n
        return self._data[pos : pos + n]

    def _read_large(self, n: int) -> bytearray:
        """Read ``n`` bytes into one preallocated buffer, without re-copying."""
        buffer = bytearray(n)
        buffered = len(self._data) - self._pos
        buffer[:buffered] = memoryview(self._data)[self._pos :]
        self._data = b""
        self._pos = 0
        view = memoryview(buffer)[buffered:]
        while view:
            received = self._sock.recv_into(view)
            if not received:
                raise EOFError("the peer closed the connection")
            view = view[received:]
        return buffer

    def read_line(self, limit: int) -> bytes:
        """Return one line, ``\\n`` included, of at most ``limit`` bytes.

        Same contract as :meth:`io.BufferedReader.readline` with a size: a
        longer line comes back cut at ``limit`` bytes without its newline,
        and ``b""`` (or a partial line) is returned at the end of the stream.

        Args:
            limit: the most bytes to return; negative for no limit.

        Returns:
            The line.
        """
        if limit < 0:
            limit = sys.maxsize
        while True:
            newline = self._data.find(b"\n", self._pos, self._pos + limit)
            if newline >= 0:
                end = newline + 1
                break
            if len(self._data) - self._pos >= limit:
                end = self._pos + limit
                break
            try:
                self._fill()
            except EOFError:
                end = len(self._data)
                break
        line = self._data[self._pos : end]
        self._pos = end
        return line

    def read_head(self, limit: int, top_up: Optional[Callable[[int], bytes]] = None) -> Optional[bytes]:
        """Return an HTTP head whole, if it arrived within ``limit`` bytes.

        Reads once when nothing is buffered (as the head's first line
        would). The head ends with its empty line, ``b"\\r\\n\\r\\n"``: a
        client's request or a server's answer to it usually comes in one
        segment, and parsing it at once costs less than line by line.

        Args:
            limit: the most bytes the head may take.
            top_up: returns what the socket holds now, at most the given
                number of bytes, without waiting (``b""`` when it can't
                tell: :meth:`syncws.transport.Transport.recv_ready`). Called
                once when that read came back full without the head's end:
                a head longer than :data:`SMALL_READ`, as a browser's
                usually is, most likely arrived whole.

        Returns:
            The head, or ``None``, having consumed nothing, when the buffer
            doesn't hold it (it is read line by line then, with
            :meth:`read_line`) or the stream ended.
        """
        pos = self._pos
        read = pos == len(self._data)
        if read:
            try:
                self._fill()
            except EOFError:
                return None  # read_line() tells the end of the stream
            pos = 0
        end = self._data.find(b"\r\n\r\n", pos, pos + limit)
        if end < 0 and read and top_up is not None and self._small_read <= len(self._data) < limit:
            more = top_up(limit - len(self._data))
            self._data += more
            end = self._data.find(b"\r\n\r\n", 0, limit)
        if end < 0:
            return None
        end += 4
        self._pos = end
        return self._data[pos:end]

    def take_buffered(self) -> bytes:
        """Return the buffered bytes and forget them (the reader moves on without it)."""
        data = self._data[self._pos :]
        self._data = b""
        self._pos = 0
        return data

    def read_available(self, limit: int) -> bytes:
        """Return what is buffered, or else one ``recv`` of at most ``limit``.

        For reading an HTTP body of unknown length; ``b""`` at end of stream.
        """
        if self._pos == len(self._data):
            try:
                self._fill()
            except EOFError:
                return b""
        data = self._data[self._pos : self._pos + limit]
        self._pos += len(data)
        return data
