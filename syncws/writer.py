"""Writing what a connection's core produces: in order, whole, within deadlines.

Theory of operation: the core (:mod:`syncws.core`) appends every frame it
makes to one output buffer. A :class:`Writer` empties that buffer into the
transport under :attr:`Writer.lock`, which is held from the moment a frame is
produced to the moment its last byte is in the socket, so frames go out
whole and in the order the core made them: no frame can slip behind our
close frame.

Frames made by a thread that must not wait for the lock (the reader
thread's pongs and close replies) stay in the buffer when the lock is busy:
:meth:`Writer.flush` only tries the lock, and the thread that holds it
flushes again after letting go, so nothing is left behind. (The check after
release sees whatever was added before the other thread failed to take the
lock, which happened while the lock was still held.)

The timer thread must not block at all: its pings and close frames
(:meth:`Writer.write` with ``now``) go out only if the lock is free and the
frames can be written at once, which too many frames waiting forbid. Such a
write couldn't flush after letting go, so no flush may find the lock held
by it: it holds the lock only while it holds the core's lock, under which a
flush tries the lock (a try never waits, so taking the two locks in the
reverse of the usual order can't deadlock). A flush that finds the lock
taken has found a thread that flushes after, and the frames the timer
thread leaves waiting are a flush's that is under way.

A message in several frames (a fragmented ``send()``) takes the **turn**
from its first frame to its last: no other message may go out between them
(RFC 6455 §5.4; control frames may, and do). A thread that wants to send a
message while another holds the turn waits for it, within its send's
deadline; the thread that holds it can't wait for itself, and gets
:exc:`~syncws.ConcurrencyError` instead.

After a failed write, half a frame may be on the wire and nothing may follow
it: the core abandons the connection, the transport is aborted, and the
connection's ``on_abandon`` lets a reader thread that waits for room in the
message queue (reading nothing) go on to find the end of the stream.

Every frame goes in through :meth:`Writer.write`: a ``produce(core)``
callable makes the frames under the core's lock, and they are written at
once, blocking within a deadline or, for the threads that must not block,
only if that can be done now. One exception, kept for speed:
:meth:`Writer.send_message`, the path of every whole message ``send()``
sends, calls the core and the transport directly (hot path: see
docs/performance.rst#hot-paths); ``tests/test_writer.py`` holds it to
:meth:`Writer.write`. :meth:`Writer.send_fragments` sends a fragmented
message frame by frame through :meth:`Writer.write`, and :meth:`Writer.flush`
writes the frames that non-blocking producers left in the core's buffer.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

from .close_codes import CloseCode
from .core import BytesLike, ConnectionCore, State
from .exceptions import ConcurrencyError, InvalidState
from .transport import Transport

__all__ = ["Writer"]

# The most bytes of waiting frames that Writer.write(now=True) writes along
# with its own (a control frame): a socket reported writable takes a write this
# small at once, whole, so the timer thread doesn't block on it (Linux takes
# a write that fits one segment whenever it reports room; the BSDs report
# room from 2 KiB free, their default low-water mark).
# It writes holding the core's lock, which a blocked write would keep from
# the reader too.
_TRY_NOW_WAITING_MAX = 512


class Writer:
    """The write side of one connection.

    Args:
        core: the connection's core.
        core_lock: the lock that guards ``core``; taken after :attr:`lock`.
        transport: the connected socket.
        write_timeout: the default seconds a write may take; ``None`` for
            no limit.
        on_abandon: called (holding the core's lock; it must not block)
            once a failed write gave the connection up.
    """

    __slots__ = (
        "core", "core_lock", "transport", "write_timeout", "on_abandon", "lock", "_turn_lock", "_sender",
        "_turn", "_turn_waiters",
    )

    def __init__(
        self,
        core: ConnectionCore,
        core_lock: threading.Lock,
        transport: Transport,
        *,
        write_timeout: Optional[float],
        on_abandon: Callable[[], None],
    ) -> None:
        self.core = core
        self.core_lock = core_lock
        self.transport = transport
        self.write_timeout = write_timeout
        self.on_abandon = on_abandon
        #: Held from producing a frame to writing its last byte.
        self.lock = threading.Lock()
        # The turn (see the module's docstring): _sender is the ident of the
        # thread whose message may go out, from its first frame to its
        # last, or None; a fragmented send takes it first, a whole message
        # only when the core says a fragmented one is under way. Threads
        # wait for it on _turn, _turn_waiters of them: a condition on
        # _turn_lock, made when a first thread has to wait (a Condition
        # holds a deque and a dict of its own, and most connections never
        # need one). _turn_lock guards the three and is held only to look
        # at them, never while taking another lock.
        self._turn_lock = threading.Lock()
        self._sender: Optional[int] = None
        self._turn: Optional[threading.Condition] = None
        self._turn_waiters = 0

    def deadline(self, timeout: Optional[float] = None) -> Optional[float]:
        """When a write started now must end: ``timeout`` or ``write_timeout``."""
        wait = timeout if timeout is not None else self.write_timeout
        return None if wait is None else time.monotonic() + wait

    def write(
        self,
        produce: Optional[Callable[[ConnectionCore], Any]] = None,
        *,
        deadline: Optional[float] = None,
        lock_wait: Optional[float] = None,
        now: bool = False,
    ) -> bool:
        """Have the core make frames with ``produce(core)``, then write them: the way in.

        ``produce`` runs under the core's lock, after any frames other
        threads left waiting, which go out first; ``None`` makes none.

        Args:
            produce: makes the frames, e.g. ``lambda core: core.send_ping(...)``.
            deadline: when the write must end (a ``time.monotonic()``
                value, see :meth:`deadline`); ``None`` for no limit.
            lock_wait: seconds to wait for :attr:`lock` (a send blocked on
                a peer that stopped reading holds it); ``None`` waits as
                long as it takes.
            now: for a thread that must never block (the timer thread):
                only if the lock is free, the socket writable and the
                frames waiting few enough to go with the new ones at once.
                Nothing raises then: a frame that can't be made
                (``produce`` raised :exc:`~syncws.InvalidState`) or written
                returns ``False``.

        Returns:
            ``False`` when nothing was made: the lock wasn't had within
            ``lock_wait``, or, with ``now``, it couldn't be done now.

        Raises:
            whatever ``produce`` raises (nothing is written then), unless ``now``;
            TimeoutError: past ``deadline``; the transport was aborted.
            OSError: the connection is lost.
        """
        if now:
            return self._write_now(produce)
        if not self.lock.acquire(timeout=-1 if lock_wait is None else lock_wait):
            return False
        try:
            with self.core_lock:
                if produce is not None:
                    produce(self.core)
                data = self.core.data_to_send()
            self.write_locked(data, deadline)
        finally:
            self.lock.release()
        self.flush(blocking=False)
        return True

    def send_message(
        self, payload: Union[BytesLike, str], text: bool, compress: Optional[bool], timeout: Optional[float],
        nowait: bool = False,
    ) -> bool:
        """Send a whole message in one frame, after any fragmented message in progress.

        The hot path of ``send()``. ``payload`` may be a ``str`` for text,
        which the core encodes. ``timeout`` (``write_timeout`` when
        ``None``) bounds how long the write may wait for the peer to read;
        the other sending methods take it alike.

        With ``nowait`` (for ``broadcast()``), only if that can't block.

        Returns:
            ``True``; with ``nowait``, ``False``, having sent nothing, when
            another send is under way or the frame might not fit in the
            socket buffer at once.
        """
        # The locks are taken with acquire() and try/finally rather than
        # with statements, cheaper, as this runs for every message (hot
        # path: see docs/performance.rst#how-fast-against-what).
        core, lock, core_lock = self.core, self.lock, self.core_lock
        if not nowait:
            lock.acquire()
        elif not lock.acquire(False):
            return False
        try:
            # Headers, and deflate's worst case on incompressible data, add
            # well under 64 bytes.
            if nowait and len(payload) + 64 > self.transport.room():
                return False
            core_lock.acquire()
            try:
                # None between two frames of another thread's fragmented
                # message: this one must wait (below).
                data = core.send_message(payload, text, compress)
            finally:
                core_lock.release()
            if data is not None:
                if len(data) == 1:  # write_locked(), inline: the usual case
                    try:
                        # Transport.write() in two steps: its first one
                        # alone, a call less, when the socket takes it all.
                        rest = self.transport.write_nowait(data[0])
                        if rest is not None:
                            self.transport.write(rest, None, self.write_timeout if timeout is None else timeout)
                    except OSError as exc:
                        self._write_failed(exc)
                        raise
                else:
                    self.write_locked(data, None, self.write_timeout if timeout is None else timeout)
        finally:
            lock.release()
        if data is None:
            if nowait:
                return False
            deadline = self.deadline(timeout)
            self._take_turn(deadline)
            try:
                self.write(lambda core: core.send_data(payload, text=text, compress=compress), deadline=deadline)
            finally:
                self._end_turn()
            return True
        # flush()'s first look, inline: this runs for every message.
        core_lock.acquire()
        left = bool(core.outgoing)
        core_lock.release()
        if left:
            self.flush(blocking=False)
        return True

    def send_fragments(
        self, fragments: Iterator[Tuple[BytesLike, bool]], text: bool, compress: Optional[bool],
        timeout: Optional[float],
    ) -> None:
        """Send one fragmented message: a frame per ``(payload, fin)``, all within ``timeout``.

        Waits, within ``timeout``, while another thread's fragmented message
        is under way. Once a frame is out, RFC 6455 has no way to cancel the
        message, so an error from the iterable fails the connection with 1011.

        Raises:
            ConcurrencyError: called from the iterable of this thread's own
                fragmented message.
            TimeoutError: another thread's fragmented message still wasn't
                over at the deadline (nothing was sent), or a write timed out.
        """
        deadline = self.deadline(timeout)
        self._take_turn(deadline)
        writing = False
        try:
            for payload, fin in fragments:
                writing = True
                # Called before write() returns: the loop's variables are this frame's.
                self.write(
                    lambda core: core.send_data(payload, text=text, fin=fin, compress=compress),  # noqa: B023
                    deadline=deadline,
                )
                writing = False
        except Exception as exc:
            # A write that failed means the connection is lost or closing
            # already; anything else (from the iterable, OSError included)
            # leaves a message that can't be finished: the connection can't
            # go on.
            if not (writing and isinstance(exc, (OSError, InvalidState))):
                reason = "error while sending a fragmented message"
                try:
                    self.write(lambda core: core.fail(CloseCode.INTERNAL_ERROR, reason), deadline=self.deadline())
                except OSError:
                    pass  # the transport is aborted: the reader ends
            raise
        finally:
            self._end_turn()

    def _take_turn(self, deadline: Optional[float]) -> None:
        """Wait until no other thread's message is under way, then take the turn.

        Raises:
            ConcurrencyError: this thread holds the turn: a send from the
                iterable of its own fragmented message, which would wait
                for itself.
            TimeoutError: another thread still held the turn at
                ``deadline``; nothing was sent, the connection goes on.
            InvalidState: the connection closed while waiting.
        """
        me = threading.get_ident()
        with self._turn_lock:
            while self._sender is not None:
                if self._sender == me:
                    raise ConcurrencyError(
                        "send() called from the iterable of a fragmented send() in the same thread: "
                        "no message may go out in the middle of another, so it would wait for itself; "
                        "yield the data as the next fragment, or send it after the message or from another thread"
                    )
                if self.core.state is State.CLOSED:
                    raise InvalidState("the connection is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        "send() timed out waiting for another thread's fragmented message to end; "
                        "nothing was sent and the connection is still open"
                    )
                if self._turn is None:
                    self._turn = threading.Condition(self._turn_lock)
                self._turn_waiters += 1
                try:
                    self._turn.wait(remaining)
                finally:
                    self._turn_waiters -= 1
            self._sender = me

    def _end_turn(self) -> None:
        """Let the next waiting thread's message go."""
        with self._turn_lock:
            self._sender = None
            if self._turn is not None:
                self._turn.notify()

    def connection_closed(self) -> None:
        """Wake every thread waiting for its turn: the connection is closed.

        The reader thread calls it as the connection ends, so that a
        fragmented message stalled in its iterable keeps no other sender
        waiting longer than the connection lasts.
        """
        with self._turn_lock:
            if self._turn is not None:
                self._turn.notify_all()

    def write_locked(
        self, data: Sequence[BytesLike], deadline: Optional[float], timeout: Optional[float] = None
    ) -> None:
        """Write what the core produced; the caller holds :attr:`lock`.

        ``data`` is whole frames, or a large unmasked frame's header and
        payload (see :meth:`ConnectionCore.data_to_send`). ``deadline`` or,
        without one, ``timeout`` bound the write (see :meth:`Transport.write`).
        Once our close frame is written, the core records it as sent.

        Raises:
            TimeoutError: past the deadline; the transport was aborted.
            OSError: the connection is lost.
        """
        try:
            self._put(data, deadline, timeout)
        except OSError as exc:
            self._write_failed(exc)
            raise
        if self.core.close_frame is not None:  # our close frame waits: is it out now?
            with self.core_lock:
                self.core.data_written(data)

    def _put(self, data: Sequence[BytesLike], deadline: Optional[float], timeout: Optional[float]) -> None:
        """Hand ``data`` to the transport (see :meth:`write_locked`)."""
        if len(data) == 1:
            self.transport.write(data[0], deadline, timeout=timeout)
        elif data:
            self.transport.write_parts(data, deadline, timeout)

    def _write_failed(self, exc: OSError) -> None:
        """Give the connection up after a failed write: half a frame may be out."""
        with self.core_lock:
            self._abandon(exc)

    def _abandon(self, exc: OSError) -> None:
        """:meth:`_write_failed` for a caller that holds the core's lock."""
        if isinstance(exc, TimeoutError) and exc.errno is None:  # our deadline, not the kernel's ETIMEDOUT
            cause = "a write timed out: the peer stopped reading"
        else:
            cause = f"connection lost while writing: {exc}"
        self.core.abandon(cause)
        self.transport.abort()
        self.on_abandon()

    def flush(self, blocking: bool) -> None:
        """Write the frames other threads left in the core's buffer.

        Without ``blocking``, returns at once when another thread holds the
        lock: that thread flushes after its own frames. Never raises: a
        failed write aborts the transport, which ends the connection.
        """
        lock, core_lock = self.lock, self.core_lock
        while True:
            # Under the core's lock: the look is ordered after frames another
            # thread added before it failed to take the lock (without a GIL,
            # a plain read might not see them yet), and the try can't find
            # the lock held by write(now=True) (see the module's docstring).
            with core_lock:
                if not self.core.outgoing:
                    return
                taken = lock.acquire(blocking=False)
            if not taken:
                if not blocking:
                    return
                lock.acquire()
            try:
                with core_lock:
                    data = self.core.data_to_send()
                self.write_locked(data, self.deadline())
            except OSError:
                return
            finally:
                lock.release()

    def _write_now(self, produce: Optional[Callable[[ConnectionCore], Any]]) -> bool:
        """:meth:`write` with ``now``: make and write frames only if that can't block.

        The frames that wait in the core's buffer (the reader's pongs, left
        there while a send held the lock) must be few enough to go with
        the new ones at once; more wait for the flush that their thread, or
        the sender it found holding the lock, has under way. All of it under
        the core's lock: see the module's docstring.
        """
        lock, core = self.lock, self.core
        with self.core_lock:
            if not lock.acquire(blocking=False):
                return False
            try:
                if not self.transport.writable_now():
                    return False
                if sum(len(frame) for frame in core.outgoing) > _TRY_NOW_WAITING_MAX:
                    return False
                if produce is not None:
                    try:
                        produce(core)
                    except InvalidState:
                        return False
                data = core.data_to_send()
                try:
                    self._put(data, None, None)
                except OSError as exc:
                    self._abandon(exc)
                    return False
                core.data_written(data)  # (write_locked()'s record, the core's lock held)
                return True
            finally:
                lock.release()

    # -- what keepalive needs --------------------------------------------------

    @property
    def can_send(self) -> bool:
        """Whether frames may be sent (the core's :attr:`~syncws.core.ConnectionCore.can_send`)."""
        return self.core.can_send

    def stalled(self) -> bool:
        """Whether no write is under way and the socket has no room (never blocks).

        A write under way has a deadline of its own; without one, a full
        socket means the peer doesn't read what was written before.
        """
        return not self.lock.locked() and not self.transport.writable_now()

    def send_progress(self) -> Optional[Tuple[int, int]]:
        """How far the peer acknowledged our stream (:meth:`~syncws.transport.Transport.send_progress`)."""
        return self.transport.send_progress()
