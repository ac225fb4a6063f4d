"""A connected socket as a WebSocket connection uses it.

Theory of operation: one :class:`Transport` wraps a connection's socket from
the end of its setup (TCP, and a proxy's tunnel: :mod:`syncws.proxy`) to its
last byte, and is the only code that reads or writes the socket meanwhile;
before it, the server's accept loop only peeks at the first byte
(:mod:`syncws.admission`).

* **Reading**: the opening handshake reads the HTTP head line by line
  through a :class:`~syncws.headreader.HeadReader`; whatever arrived
  after the head is then handed over with :meth:`Transport.take_buffered`, and
  the reader thread reads with :meth:`~Transport.recv` and
  :meth:`~Transport.recv_into`: on a plain socket, with the C speedups,
  through the interpreter lock's gate (:data:`gated_recv`).
* **Writing** (:meth:`~Transport.write`) first tries one non-blocking
  ``send`` (``MSG_DONTWAIT`` on POSIX sockets without TLS, through
  :func:`send_nowait`): when the kernel buffer has room, a frame costs one
  system call and no timer. Only when it is full does the write block,
  watched by a timer of :mod:`syncws.timers` that aborts the transport at
  the deadline. Several buffers (a large frame's header and its payload,
  uncopied) go out alike through :meth:`~Transport.write_parts`, which
  tries them in one ``sendmsg``. For as long as a write blocks, the
  connection's ``TCP_USER_TIMEOUT`` is lifted, so that the write's deadline
  alone decides, not the kernel (see :mod:`syncws.sockopts`).
* **Aborting** (:meth:`~Transport.abort`) shuts the socket down, which never
  blocks and wakes every thread blocked on it: that is how deadlines are
  enforced on blocking sockets from the timer thread.
* **Refusing**: an HTTP answer that ends a connection (a refused opening
  handshake) is written by :meth:`~Transport.send_last`, then our FIN; or by
  :func:`send_last` on a socket that has no transport (the 503 of the
  server's accept thread, a refusal on a WSGI server's socket).

The transport holds no protocol state: which bytes to write and when is the
connection's business (:mod:`syncws.protocol`).
"""

from __future__ import annotations

import functools
import select
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple, Union

from . import sockopts, timers
from .accelerator import SPEEDUPS
from .headreader import HeadReader

if TYPE_CHECKING:  # ssl costs megabytes of memory: imported only for wss://
    import ssl as ssl_module

__all__ = ["Transport", "gated_recv", "gated_recv_into", "send_last", "send_nowait", "py_send_nowait"]

# MSG_DONTWAIT lets a write try without blocking on a socket whose reads
# block, with no syscall to switch modes; POSIX only, and not for TLS.
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

BytesLike = Union[bytes, bytearray, memoryview]

# The most buffers Transport.write_parts() hands to one sendmsg() call: far
# below any system's IOV_MAX (1024 on Linux), over which sendmsg() fails.
# Frames that queued up beyond it (pongs, while a send waited) are written
# one by one.
_SENDMSG_MAX_PARTS = 16


# Where discard_input() reads what it discards: one buffer for every connection, so
# that a connection waiting for the end of its peer's stream holds none. With
# recv(read_limit) instead, connections closing at once raised a server's
# resident memory peak: each allocation of read_limit bytes touched a fresh
# page of the heap (bench/NOTES.rst, "Connections that end together"). The
# threads that write into it at once never read it.
_DISCARDED = bytearray(2**14)


def py_send_nowait(sock: socket.socket, data: BytesLike) -> Optional[memoryview]:
    """Send what the socket's buffer takes of ``data`` now, without waiting.

    Pure-Python implementation; :func:`send_nowait` is this function or its
    C version, which makes the same ``send(2)`` call on the socket's
    descriptor without ``socket.send()``'s argument parsing, nor an
    exception when the buffer is full (hot path: see
    docs/performance.rst#how-fast-against-what). POSIX only
    (``MSG_DONTWAIT``), and not for TLS.

    Returns:
        ``None`` when all of it went out, else a view of the rest.

    Raises:
        OSError: the connection is lost (or the socket closed).
    """
    try:
        sent = sock.send(data, _MSG_DONTWAIT)
    except BlockingIOError:
        sent = 0
    return None if sent == len(data) else memoryview(data)[sent:]


#: See :func:`py_send_nowait`.
send_nowait: Callable[[socket.socket, BytesLike], Optional[memoryview]] = getattr(
    SPEEDUPS, "send_nowait", py_send_nowait
)


#: ``socket.recv(size)`` and ``socket.recv_into(buffer)`` on a blocking
#: socket, passing the interpreter lock's gate on the way back (the C
#: speedups, see :doc:`design`, "The interpreter lock's gate"); ``None``
#: without them. Called with the socket as first argument.
gated_recv: Optional[Callable[[socket.socket, int], bytes]] = getattr(SPEEDUPS, "recv", None)
gated_recv_into: Optional[Callable[[socket.socket, memoryview], int]] = getattr(SPEEDUPS, "recv_into", None)


def send_last(sock: socket.socket, data: bytes) -> None:
    """Write the last bytes this side sends (an HTTP answer), then our FIN.

    Errors are ignored: the peer left, and there is nothing more to tell
    it. The socket stays open, for the peer to read the answer before it
    sees our end; closing it is the caller's.

    Args:
        sock: the connected socket.
        data: what to write.
    """
    try:
        sock.sendall(data)
        # Half-close so the client reads the whole answer before the socket
        # closes: a close with unread request bytes would reset it.
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except (OSError, ValueError):
        pass


def _nothing_written(data: BytesLike) -> BytesLike:
    """:attr:`Transport.write_nowait` where a write can't be tried without waiting."""
    return data


class Transport:
    """A connected socket: buffered handshake reads, bounded writes, abort.

    Args:
        sock: a connected socket (TCP, Unix, or TLS); it is put in blocking
            mode.
        read_limit: the most bytes asked of the socket per read.
        buffered: bytes already read from the socket by someone else (a WSGI
            server that read past the request head), served first.
        remote_address: the peer's address when the caller knows it
            (``accept()`` told it), which saves asking the socket.

    Thread safety: reads are for one thread at a time (the handshake's, then
    the reader thread's); writes for one thread at a time (the connection
    serializes them under its write lock); :meth:`abort` from any thread.
    """

    __slots__ = (
        "sock", "read_limit", "_try_nowait", "write_nowait", "_stream", "write_timed_out", "local_address",
        "remote_address", "_user_timeout",
    )

    def __init__(
        self, sock: socket.socket, *, read_limit: int = 2**16, buffered: bytes = b"", remote_address: Any = None,
    ) -> None:
        if sock.gettimeout() is not None:  # a system call: skipped when already blocking
            sock.settimeout(None)
        self.sock = sock
        self.read_limit = read_limit
        # Whether write() may try a non-blocking send first, and recv_ready()
        # a non-blocking recv (not with TLS).
        self._try_nowait = bool(_MSG_DONTWAIT) and not self.secure
        #: Writes what the socket's buffer takes of some bytes now, without
        #: waiting, and returns the rest (``None`` when all went out): the
        #: first step of :meth:`write`, which a writer may take alone. A
        #: partial of :func:`send_nowait`, so no Python frame on the way
        #: (with TLS, or without ``MSG_DONTWAIT``, it writes nothing).
        self.write_nowait = self._nowait_writer()
        self._stream = HeadReader(sock, read_limit, buffered=buffered)
        #: Set (by the timer thread) just before a write that ran past its
        #: deadline is aborted, so the writer can tell a timeout from a lost
        #: peer.
        self.write_timed_out = False
        # The socket's TCP_USER_TIMEOUT (ms; 0: none), read by the first
        # write that blocks: None until then.
        self._user_timeout: Optional[int] = None
        #: The addresses, remembered while the socket can tell them.
        self.local_address: Any = None
        self.remote_address: Any = remote_address
        try:
            self.local_address = sock.getsockname()
            if remote_address is None:
                self.remote_address = sock.getpeername()
        except OSError:  # the peer may already be gone
            pass

    @property
    def _gated(self) -> bool:
        """Whether the reads go through :data:`gated_recv`: on a plain socket
        (not TLS, nor a subclass, which may override ``recv``)."""
        return gated_recv is not None and type(self.sock) is socket.socket

    @property
    def secure(self) -> bool:
        """Whether the socket is a TLS socket."""
        return hasattr(self.sock, "cipher")  # an SSLSocket, without importing ssl

    def start_tls(self, context: ssl_module.SSLContext, *, server_hostname: Optional[str] = None,
                  server_side: bool = False) -> None:
        """Wrap the socket in TLS and perform the TLS handshake.

        Args:
            context: the TLS context.
            server_hostname: the name to check the server's certificate
                against (client side).
            server_side: whether this is the server side.

        Raises:
            ssl.SSLError: the TLS handshake failed.
            OSError: the connection failed (or was aborted by a deadline).
        """
        self.sock = context.wrap_socket(
            self.sock, server_side=server_side, server_hostname=server_hostname,
            do_handshake_on_connect=False,
        )
        self._try_nowait = False
        self.write_nowait = self._nowait_writer()
        self._stream = HeadReader(self.sock, self.read_limit)
        self.sock.do_handshake()

    # -- reading -----------------------------------------------------------------

    @property
    def read_line(self) -> Callable[[int], bytes]:
        """Reads one line of the HTTP head (see :meth:`HeadReader.read_line`).

        The stream's own method, so that reading a head line by line goes
        through one call per line, not two.
        """
        return self._stream.read_line

    def read_head(self, limit: int) -> Optional[bytes]:
        """Read a whole HTTP head if it is there (see :meth:`HeadReader.read_head`)."""
        return self._stream.read_head(limit, self.recv_ready)

    def read_available(self, limit: int) -> bytes:
        """Read what is buffered or one ``recv`` (an HTTP body); ``b""`` at the end."""
        return self._stream.read_available(limit)

    def take_buffered(self) -> bytes:
        """Take the bytes read past the HTTP head, for the frame parser."""
        return self._stream.take_buffered()

    @property
    def recv(self) -> Callable[[int], bytes]:
        """One blocking ``recv`` of at most ``size`` bytes; ``b""`` at the end of the stream.

        The socket's own method, or for a plain socket its gated twin from
        the C speedups (:data:`gated_recv`), so that the reader thread,
        which binds it once, reads with one call per read, not two.
        """
        if self._gated:
            assert gated_recv is not None
            return functools.partial(gated_recv, self.sock)
        return self.sock.recv

    def recv_ready(self, size: int) -> bytes:
        """What the socket holds now, at most ``size`` bytes, without waiting.

        ``b""`` when nothing is there, on a TLS socket, or at the end of the
        stream (which the next :meth:`recv` tells).
        """
        if not self._try_nowait:
            return b""
        try:
            return self.sock.recv(size, _MSG_DONTWAIT)
        except BlockingIOError:
            return b""

    def recv_into(self, buffer: memoryview) -> int:
        """One blocking ``recv_into``; 0 at the end of the stream (gated as :attr:`recv`)."""
        if self._gated:
            assert gated_recv_into is not None
            return gated_recv_into(self.sock, buffer)
        return self.sock.recv_into(buffer)

    def discard_input(self) -> None:
        """Read and throw away what the peer sends, until it closes or an abort ends the wait.

        How a connection waits for the end of the peer's stream once it
        processes no more input (its closing handshake is over, or it
        failed). Not asyncio's ``drain()``, which waits for output to go.
        """
        try:
            while self.sock.recv_into(_DISCARDED):
                pass
        except OSError:
            pass

    # -- writing -----------------------------------------------------------------

    def write(self, data: BytesLike, deadline: Optional[float] = None, timeout: Optional[float] = None) -> None:
        """Write all of ``data`` within a deadline.

        Args:
            data: the bytes to write.
            deadline: when the write must be over (a ``time.monotonic()``
                value).
            timeout: without ``deadline``, the seconds the write may wait
                for the peer, counted from when it first has to: a write
                that the socket buffer takes at once never reads the clock.
                Neither: no limit.

        While the write blocks, the socket's ``TCP_USER_TIMEOUT`` is lifted:
        the deadline decides how long a peer may keep its window closed, not
        the kernel (see :mod:`syncws.sockopts`).

        Raises:
            TimeoutError: the deadline passed; the transport was aborted, since
                part of a frame may have gone out.
            OSError: the connection is lost.
        """
        rest = self.write_nowait(data)
        if rest is None:
            return
        data = rest
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        timer = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._deadline_passed()
                raise TimeoutError("write timed out: the connection was aborted")
            timer = timers.call_later(remaining, self._deadline_passed)
        user_timeout = self._user_timeout
        if user_timeout is None:
            user_timeout = self._user_timeout = sockopts.user_timeout(self.sock)
        if user_timeout:
            sockopts.set_user_timeout(self.sock, 0)
        try:
            self.sock.sendall(data)
        except OSError:
            if self.write_timed_out:
                raise TimeoutError(
                    "write timed out: the peer stopped reading; the connection was aborted"
                ) from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if user_timeout:
                sockopts.set_user_timeout(self.sock, user_timeout)

    def write_parts(
        self, parts: Sequence[BytesLike], deadline: Optional[float] = None, timeout: Optional[float] = None
    ) -> None:
        """Write several buffers in order, as :meth:`write` writes one.

        Where a write may be tried without waiting, they are first offered to
        the socket in one ``sendmsg`` call. A large frame's header and
        payload, kept apart so that the payload isn't copied, then cost one
        system call, not two, and the header doesn't leave alone, in a TCP
        segment of its own (the socket has ``TCP_NODELAY``) that the peer
        must receive and wake up for. What the socket didn't take is then
        written part by part. (Not on a subclass of :class:`socket.socket`,
        as for :attr:`write_nowait`: it may override ``send()``, which
        ``sendmsg`` would bypass.)

        Args:
            parts: the buffers, in order.
            deadline, timeout: as for :meth:`write`, one limit for all parts.

        Raises:
            TimeoutError: the deadline passed; the transport was aborted.
            OSError: the connection is lost.
        """
        if self._try_nowait and len(parts) <= _SENDMSG_MAX_PARTS and type(self.sock) is socket.socket:
            try:
                sent = self.sock.sendmsg(parts, (), _MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            for index, part in enumerate(parts):
                if sent < len(part):
                    parts = [memoryview(part)[sent:], *parts[index + 1 :]]
                    break
                sent -= len(part)
            else:
                return
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        for part in parts:
            self.write(part, deadline)

    def _nowait_writer(self) -> Callable[[BytesLike], Optional[BytesLike]]:
        """What :attr:`write_nowait` is for the current socket."""
        if not self._try_nowait:
            return _nothing_written
        # The C send_nowait() calls send(2) on the descriptor: for a plain
        # socket only, since a subclass may override send().
        send = send_nowait if type(self.sock) is socket.socket else py_send_nowait
        return functools.partial(send, self.sock)

    def _deadline_passed(self) -> None:
        """Timer callback: a write ran past its deadline."""
        self.write_timed_out = True
        self.abort()

    def writable_now(self) -> bool:
        """Tell whether the socket buffer has room, without waiting."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLOUT)
                return bool(poller.poll(0))
            return bool(select.select([], [self.sock], [], 0)[1])
        except (OSError, ValueError):  # closed under us
            return False

    def send_progress(self) -> Optional[Tuple[int, int]]:
        """``(acknowledged, written)``: how far our bytes have got (see :func:`syncws.sockopts.send_progress`)."""
        return sockopts.send_progress(self.sock)

    def room(self) -> int:
        """Bytes the socket surely accepts now without blocking (maybe fewer)."""
        if not self.writable_now():
            return 0
        try:
            send_buffer = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        except OSError:
            return 0
        # A TCP socket reports writable once a third of its buffer is free
        # (Linux); a quarter leaves room for TLS records' overhead.
        return int(send_buffer // 4)

    # -- ending ------------------------------------------------------------------

    def abort(self) -> None:
        """Shut the socket down, waking every thread blocked on it.

        Never blocks; safe from any thread, the timer thread included.
        """
        try:
            # socket.socket.shutdown, not SSLSocket.shutdown: the latter
            # drops the TLS object under a reader thread that may be using it.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already shut down or never connected

    def send_last(self, data: bytes) -> None:
        """Write an answer that ends the connection, then our FIN (see :func:`send_last`)."""
        send_last(self.sock, data)

    def shutdown_write(self) -> None:
        """Send our FIN: we are done writing (the server's way to end TCP, §7.1.1)."""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        """Release the socket."""
        self.sock.close()
