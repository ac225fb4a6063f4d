"""Keepalive: ping the peer now and then, and drop it when it stops answering.

Theory of operation: every ``interval`` seconds the shared timer thread
(:mod:`syncws.timers`) sends a ping, but only if that can't block (the write
lock free, the socket writable: a send in progress has its own deadline
watching the peer), and only if no message came from the peer since it
last looked: a peer that sends is alive, and a server with thousands of
busy connections would otherwise spend a good part of a core on pings and
pongs it needs no answer from (docs/performance.rst#idle-connections-per-process
measures what pings cost). ``timeout`` seconds
after a ping it checks that the pong came; if not, the peer is dead and
``on_timeout()`` drops the connection.

One case needs the kernel's help: while the reader thread waits for room in
a full queue, it doesn't read, so a pong can't be seen. A live peer's TCP
stack still acknowledges our ping at once, even while its application
doesn't read; so the check then asks TCP whether the ping got there: whether
the peer's acknowledgements reach where the ping ended in the stream, noted
as it was written (:meth:`~syncws.transport.Transport.send_progress`).
Counting what was sent and is unacknowledged wouldn't do: a ping that never
left this host (no route, the interface down, a firewall dropping it) waits
in our send queue unsent, as lost as one dropped on the way. A ping queued
behind data that the peer doesn't read isn't acknowledged either: that peer
is given up, as it would be without a full queue. Where the system can't
tell (not Linux), a full queue keeps the peer.

A ping that can't be written because the socket has no room, and no write
is under way, counts as unanswered: a peer that stopped reading (a frozen
client, a stalled proxy) once a ``send()`` had filled the buffers leaves no
write whose deadline would end the connection, and its ping never goes
out. If ``timeout`` seconds later nothing came from it, still no write is
under way, the socket still has no room, and the peer's TCP acknowledged
nothing more (Linux; a peer reading slowly does), the peer is given up as
a silent one is. Linux's ``TCP_USER_TIMEOUT`` (:mod:`syncws.sockopts`) often
ends such a TCP connection first; this covers Unix sockets and the systems
without that option.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from . import timers
from .messages import MessageQueue
from .writer import Writer

__all__ = ["Keepalive"]


def _nothing(written: bool) -> None:
    pass


class Keepalive:
    """The keepalive pings of one connection.

    It uses the connection's writer (:class:`~syncws.writer.Writer`) only
    through :meth:`~syncws.writer.Writer.write` with ``now`` (a ping must
    never block the timer thread), :attr:`~syncws.writer.Writer.can_send`,
    :meth:`~syncws.writer.Writer.stalled` and
    :meth:`~syncws.writer.Writer.send_progress`.

    Args:
        writer: the connection's write side.
        received: the count of messages received from the peer (read
            without a lock: a count that lags by a message only moves a
            ping by one interval).
        interval: seconds between pings.
        timeout: seconds to wait for a pong; ``None`` never gives up.
        messages: the connection's message queue: while the reader thread
            waits there for room (:attr:`~syncws.messages.MessageQueue.put_waiting`),
            it reads no pong.
        on_timeout: called (on the timer thread, must not block) when a
            pong didn't come in time, with whether the ping was written:
            ``False`` when the peer, reading nothing, left no room to write
            it (so that the log says which).
    """

    __slots__ = (
        "writer", "received", "interval", "timeout", "messages", "on_timeout", "pings_sent", "pings_missed",
        "_timer", "_received", "_stall_check",
    )

    def __init__(
        self,
        writer: Writer,
        received: Callable[[], int],
        *,
        interval: float,
        timeout: Optional[float],
        messages: MessageQueue,
        on_timeout: Callable[[bool], None],
    ) -> None:
        self.writer = writer
        self.received = received
        self.interval = interval
        self.timeout = timeout
        self.messages = messages
        self.on_timeout = on_timeout
        #: Pings sent by keepalive, and those whose pong didn't come (or
        #: that the peer, reading nothing, left no room to send).
        self.pings_sent = 0
        self.pings_missed = 0
        self._timer: Optional[timers.Timer] = None
        # The peer's messages counted at the last look (the timer thread's).
        self._received = 0
        # Whether a _check_stalled is pending (the timer thread's).
        self._stall_check = False

    def start(self) -> None:
        """Schedule the first ping."""
        self._received = self.received()
        self._timer = timers.call_later(self.interval, self._ping)

    def stop(self) -> None:
        """Cancel the next ping, and let go of the connection's callback.

        Dropping it breaks the cycle connection → keepalive → bound method
        → connection, so a closed connection is freed at once, not by the
        garbage collector.
        """
        if self._timer is not None:
            self._timer.cancel()
        self.on_timeout = _nothing

    def _ping(self) -> None:
        """Timer callback: send a ping and schedule the next one."""
        if not self.writer.can_send:
            return
        self._timer = timers.call_later(self.interval, self._ping)
        received = self.received()
        if received != self._received:
            self._received = received
            return  # a message came since the last look: the peer is alive
        event = threading.Event()
        if not self.writer.write(lambda core: core.send_ping(None, (event, time.monotonic())), now=True):
            # A write under way has its own deadline watching the peer; with
            # none, a socket without room is a peer that doesn't read.
            if self.timeout is not None and not self._stall_check and self.writer.stalled():
                self._stall_check = True
                progress = self.writer.send_progress()
                acknowledged = None if progress is None else progress[0]
                timers.call_later(self.timeout, lambda: self._check_stalled(received, acknowledged))
            return
        self.pings_sent += 1
        if self.timeout is not None:
            # Where the ping ends in the stream (or a little further, should
            # another thread have written since): for _check.
            progress = self.writer.send_progress()
            ping_end = None if progress is None else progress[1]
            timers.call_later(self.timeout, lambda: self._check(event, ping_end))

    def _check(self, event: threading.Event, ping_end: Optional[int]) -> None:
        """Timer callback: give up on the peer if the pong didn't come.

        Args:
            event: set when the pong arrived.
            ping_end: where the ping ended in the TCP stream; ``None`` where
                the system can't tell.
        """
        if event.is_set() or not self.writer.can_send:
            return
        if self.messages.put_waiting and self._acknowledged(ping_end):
            return  # alive: its pong waits behind data we don't read yet
        self.pings_missed += 1
        self.on_timeout(True)

    def _check_stalled(self, received: int, acknowledged: Optional[int]) -> None:
        """Timer callback: give up on a peer that read nothing since a ping couldn't be written.

        Args:
            received: the peer's messages counted when the ping was due.
            acknowledged: how far the peer's TCP had acknowledged our stream
                then; ``None`` where the system can't tell.
        """
        self._stall_check = False
        if not self.writer.can_send or self.received() != received or not self.writer.stalled():
            return
        progress = self.writer.send_progress()
        if acknowledged is not None and progress is not None and progress[0] > acknowledged:
            return  # its TCP took more of our stream: it reads, slowly
        self.pings_missed += 1
        self.on_timeout(False)

    def _acknowledged(self, ping_end: Optional[int]) -> bool:
        """Whether the peer's TCP acknowledged the stream up to ``ping_end``; ``True`` when unknown."""
        progress = self.writer.send_progress()
        return ping_end is None or progress is None or progress[0] >= ping_end
