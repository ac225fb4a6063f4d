"""How a connection ends: the closing handshake, its deadline, the teardown, the wait.

Theory of operation
-------------------
The rules of closing are the core's (:mod:`syncws.core`): which close frame
to send, when the connection is closed, with what code. :class:`Closing`
times them and waits for them, for one
:class:`~syncws.protocol.WebSocketCommonProtocol`, from every thread:

* ``close()`` sends the close frame through the writer, arms the closing
  deadline, then waits for the reader thread to see the peer's close frame
  (or the end of the stream) and end: :meth:`Closing.close`.
* ``start_closing()`` does the same without ever blocking, for a server
  closing all its connections: a close frame that can't go out at once is
  retried from the timer thread (:meth:`Closing.start_closing`).
* ``abort()`` drops TCP without a handshake (:meth:`Closing.abort`); the
  closing deadline does the same when it expires, on the timer thread.
* The reader thread's last act, :meth:`Closing.finish`, closes the socket
  and cancels the deadline; once it is done, :attr:`Closing.closed` is set,
  which every wait above waits for.

Lock order as in :mod:`syncws.protocol`: the writer's ``lock``, then the
core's lock.
"""

from __future__ import annotations

import threading
import time
from typing import NoReturn, Optional

from . import timers
from .close_codes import describe_close
from .core import ConnectionCore, State
from .exceptions import ConnectionClosed, InvalidState
from .messages import MessageQueue
from .transport import Transport
from .writer import Writer

__all__ = ["Closing", "Latch"]


class Latch:
    """Set once, waited on by any number of threads: a lighter threading.Event.

    A lock held from the start and released by the first :meth:`set`, as
    :meth:`threading.Thread.join` waits on a thread's end: no Condition to
    build or notify (an Event is a Condition, a lock and a deque, and a
    server has two signals per connection: see
    docs/performance.rst#memory-per-connection). For signals that are set
    once and never cleared.
    """

    __slots__ = ("_lock", "_set")

    # Makes a set() atomic: two threads may set a latch at once (abort() from
    # anywhere), and its lock must be released only once. Shared by every
    # latch, as each is set about once in its life.
    _setting = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        """Wake every waiter, now and later. Idempotent; from any thread."""
        with Latch._setting:
            if self._set:
                return
            self._set = True
        self._lock.release()

    def is_set(self) -> bool:
        """Whether :meth:`set` was called."""
        return self._set

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until :meth:`set` was called, at most ``timeout`` seconds.

        Returns:
            Whether it was.
        """
        if not self._lock.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return False
        self._lock.release()  # let the next waiter through
        return True


class Closing:
    """The end of one connection: what ``close()``, ``start_closing()`` and ``abort()`` do.

    Every method is safe to call from any thread.

    Args:
        core: the connection's core.
        core_lock: the lock that guards ``core``.
        messages: the queue of received messages; the end unbinds it, so
            that a reader thread waiting for room sees the end of the stream.
        close_timeout: seconds the closing handshake may take; ``None``
            waits for the peer as long as it takes.
    """

    __slots__ = (
        "core", "core_lock", "messages", "close_timeout", "transport", "writer", "reader_started",
        "reader_ident", "closed", "timer",
    )

    def __init__(
        self, core: ConnectionCore, core_lock: threading.Lock, messages: MessageQueue, close_timeout: Optional[float]
    ) -> None:
        self.core = core
        self.core_lock = core_lock
        self.messages = messages
        self.close_timeout = close_timeout
        #: The connection's transport and writer, from :meth:`attach` on.
        self.transport: Optional[Transport] = None
        self.writer: Optional[Writer] = None
        #: Whether the connection was given its reader thread (set by the
        #: connection before it starts the thread, cleared if that fails);
        #: the thread's ident once it runs.
        self.reader_started = False
        self.reader_ident: Optional[int] = None
        #: Set by the reader thread as it ends, everything closed (by
        #: :meth:`abort` when there is no reader thread): what :meth:`close`
        #: and ``wait_closed()`` wait for.
        self.closed = Latch()
        #: The closing handshake's deadline once armed; :meth:`finish` cancels it.
        self.timer: Optional[timers.Timer] = None

    def attach(self, transport: Transport, writer: Writer) -> None:
        """Take the transport and the writer, once the connection has them."""
        self.transport = transport
        self.writer = writer

    def close(self, code: int, reason: str) -> None:
        """``close()``: the closing handshake, then the wait for the reader's end.

        ``code`` and ``reason`` are valid (the connection checked them).
        Before the opening handshake is done, the connection is aborted.
        """
        writer = self.writer
        if not self.reader_started or writer is None:
            self.abort("closed before the opening handshake finished")
            return
        if self.closed.is_set():
            # Closed already (a handler returning after the peer closed):
            # nothing to send, and the reader thread is ending.
            self.wait_reader()
            return

        # The handshake's time counts from this call: waiting for the write
        # lock below spends it too.
        give_up_at = None if self.close_timeout is None else time.monotonic() + self.close_timeout

        def produce(core: ConnectionCore) -> None:
            if core.can_send:  # else a close frame was sent (or the connection failed)
                core.send_close(code, reason)
                # Before the write, which may block.
                self.arm_timer(None if give_up_at is None else give_up_at - time.monotonic())

        # A send stuck on a peer that stopped reading holds the write lock:
        # wait for it no longer than the closing handshake may take.
        try:
            had_lock = writer.write(produce, deadline=writer.deadline(self.close_timeout), lock_wait=self.close_timeout)
        except OSError:
            had_lock = True  # the transport is aborted: the reader ends
        if not had_lock:
            self.abort(f"close({code}) gave up waiting for a send blocked on the peer")
        # The reader must keep reading to see the peer's close frame, even if
        # nobody consumes messages any more.
        self.messages.unbound()
        self.wait_reader()

    def start_closing(self, code: int, reason: str, give_up_at: Optional[float] = None) -> None:
        """``start_closing()``: send the close frame without blocking, retried until ``give_up_at``.

        ``give_up_at`` is a ``time.monotonic()`` value, ``close_timeout``
        from now by default; then the connection is aborted.
        """
        if not self.core.can_send:
            return
        if give_up_at is None:
            give_up_at = time.monotonic() + (self.close_timeout or 0)
        assert self.writer is not None
        if self.writer.write(lambda core: core.send_close(code, reason), now=True):
            self.start_timer()
            self.messages.unbound()
        elif time.monotonic() < give_up_at:
            timers.call_later(0.01, lambda: self.start_closing(code, reason, give_up_at))
        else:
            self.abort(f"the close frame ({describe_close(code, reason)}) couldn't be sent in time")

    def abort(self, cause: str) -> None:
        """``abort()``: drop the connection at once; never blocks.

        An open connection's reader thread then finds the end of the stream
        and ends the connection; one still in its opening handshake is
        closed here.
        """
        with self.core_lock:
            self.core.abandon(cause)
            unopened = not self.reader_started and self.core.state is State.CLOSED
        transport = self.transport
        if transport is not None:
            transport.abort()
            if unopened:
                transport.close()
        # A reader thread waiting for room in the queue must get to see the
        # end of the stream.
        self.messages.unbound()
        if unopened:
            self.messages.close()
            self.closed.set()

    def give_up(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` and drop TCP, without waiting for the peer.

        For a peer that stopped answering: the close frame is sent only if
        that can be done at once, and the peer's isn't waited for.
        """
        assert self.writer is not None
        self.writer.write(lambda core: core.fail(code, reason), now=True)
        self.abort(reason)

    def start_timer(self) -> None:
        """Drop TCP if the closing handshake isn't over within ``close_timeout``.

        From the reader thread, the closing thread or the timer thread, maybe
        at once: the core's lock makes the look and the arming one step, so
        only one timer is armed, and none once :meth:`finish` has cancelled it.
        """
        with self.core_lock:
            self.arm_timer()

    def arm_timer(self, delay: Optional[float] = None) -> None:
        """:meth:`start_timer` for a caller that holds the core's lock.

        ``delay`` is what is left of ``close_timeout`` (all of it by default).
        """
        if self.close_timeout is not None and self.timer is None and self.core.state is not State.CLOSED:
            self.timer = timers.call_later(
                self.close_timeout if delay is None else max(delay, 0),
                lambda: self.abort("the closing handshake timed out"),
            )

    def finish(self, cause: str) -> None:
        """Close the socket and cancel the deadline: the reader thread's last steps.

        The core records the end of the stream (``cause`` says what ended
        it), under the write lock, so that no frame goes out after.
        """
        transport, writer = self.transport, self.writer
        assert transport is not None and writer is not None
        write_lock = writer.lock
        if not write_lock.acquire(blocking=False):
            # A writer holds the lock, maybe blocked on the socket: shutting
            # the socket down makes it let go. Uncontended (the usual end),
            # there is nobody to wake and the socket is closed directly.
            transport.abort()
            write_lock.acquire()
        try:
            with self.core_lock:
                self.core.receive_eof(cause)
                # Read with the state's change: no timer is armed once CLOSED.
                timer = self.timer
            transport.close()
        finally:
            write_lock.release()
        writer.connection_closed()
        if timer is not None:
            timer.cancel()

    def wait_reader(self) -> None:
        """Wait for the reader to be done, dropping TCP if the peer holds it open.

        Returns at once without a reader thread, or on the reader thread
        itself (a handler that runs there).
        """
        if not self.reader_started or self.reader_ident == threading.get_ident():
            return
        self.await_closed()

    def await_closed(self) -> None:
        """Wait until everything is closed, dropping TCP if the peer holds it open."""
        if not self.closed.wait(None if self.close_timeout is None else self.close_timeout + 1):
            self.abort("the closing handshake didn't end")
            self.closed.wait()

    def closed_exception(self) -> ConnectionClosed:
        """Wait for the connection to be closed, then build its exception.

        For operations refused while the connection closes: the exception
        carries the final close code, which the closing handshake decides.
        """
        self.messages.unbound()
        self.await_closed()
        return self.core.closed_exception()

    def refuse(self, exc: Exception) -> NoReturn:
        """Report a send that raised ``exc``: as the closed connection, mostly.

        Before the opening handshake, and for a timeout or a connection
        already reported closed, ``exc`` itself; otherwise the connection's
        :exc:`~syncws.ConnectionClosed`, once it is closed (caused by ``exc``
        when the transport failed).
        """
        if isinstance(exc, (ConnectionClosed, TimeoutError)):
            raise exc
        if isinstance(exc, InvalidState):
            if self.core.state is State.CONNECTING:
                raise exc
            raise self.closed_exception() from None
        raise self.closed_exception() from exc
