"""Fan-out: a message published to a channel reaches every connection subscribed to it.

::

    rooms = syncws.fanout.RedisFanout("redis://localhost:6379/0")  # or LocalFanout()

    def handler(websocket):
        room = websocket.path
        rooms.subscribe(room, websocket)
        try:
            for message in websocket:
                try:
                    rooms.publish(room, message)
                except syncws.PublishError:  # Redis down for publish_timeout
                    websocket.send("not sent, please try again")
        finally:
            rooms.unsubscribe_all(websocket)

Theory of operation
-------------------
Two classes, one interface (:class:`Fanout`):

* :class:`LocalFanout` delivers within one process: ``publish()`` hands the
  message straight to the local members.
* :class:`RedisFanout` delivers across processes and machines through Redis
  pub/sub (``pip install 'syncws[redis]'``). ``publish()`` sends an
  envelope to Redis, and **every** process, the publisher's included, gets
  it back from its subscription: a message reaches a local member only that
  way, so it arrives exactly once. One **subscriber thread** per
  :class:`RedisFanout` owns the subscription connection: it subscribes a
  channel in Redis when its first local member joins and unsubscribes when
  the last one leaves, reads messages, and hands them to the local members.

**Delivery to local members**: one slow or dead client never delays the
others. A send that takes longer than ``timeout`` aborts that connection,
and failures are reported (``on_failure`` and the log), not raised; a
member whose send failed is dropped from every channel. Every member has a
*mailbox* (a FIFO of messages). Delivering appends to the mailboxes of a
channel's members and puts the members that weren't already being served
on a queue. :data:`DISPATCHERS` *dispatcher* threads take members from it
and send each the messages that its socket takes at once
(:meth:`~syncws.protocol.WebSocketCommonProtocol.send_nowait`): a
dispatcher never waits for a member. The first message that would wait (a
full socket buffer, a message bigger than the room in it, a send under way
on the connection) and the rest of that mailbox go to a *sender thread* of
the member's own (:func:`syncws.threadpool.start`: an idle thread, or a new
one), which waits up to ``timeout`` for each send, then gives the member
back to the dispatchers once its mailbox is empty. So members that stop
reading hold one thread each, never one that others need, and a fan-out
costs threads only for the members that are behind. (:func:`~syncws.broadcast`
isn't used here: it returns only once its slow sends are done, and a stream
of messages can't wait for the slowest member before the next one.)

**Slow members**: a mailbox holds at most ``max_pending`` messages and
``max_pending_bytes`` bytes (payload bytes, UTF-8 for text; the message
being sent counts until sent; one message always fits in an empty
mailbox). A member whose next message would pass either limit can't keep
up: it is dropped from every channel, closed with
1008 ("too slow to keep up"; aborted if the close frame can't be sent
within the connection's ``close_timeout``), and reported (a WARNING line
with what was waiting, ``on_failure``, ``stats.failures``).

**Order**: messages from one publisher (one thread calling ``publish()``)
reach every member in the order they were published: Redis keeps the order
of one client connection, the subscriber thread appends to mailboxes in the
order it reads, and a mailbox is emptied by one sender at a time.

**Gaps**: Redis pub/sub is fire-and-forget: while a subscriber is
disconnected, messages published to its channels are lost, and Redis says
nothing. :class:`RedisFanout` detects and reports this two ways:

* the subscriber thread notices a lost connection (an error, or no answer to
  its pings for ``ping_timeout`` seconds), reconnects, subscribes again, and
  then reports the outage as a :class:`Gap` with its duration;
* each envelope carries its publisher's id and a sequence number per
  channel. A subscriber that sees a number jump (its connection was cut
  while the publisher's wasn't) reports a :class:`Gap` with the count of
  messages lost.

This bookkeeping stays bounded however many channels come and go: a
publisher keeps the numbers of its ``max_sequences`` most recent channels
(one forgotten and published to again starts afresh under a new publisher
id), and a subscriber those of the channels it subscribes to, for at most
:data:`PUBLISHERS_KEPT` publishers each.

**Forks**: a fan-out made before :func:`os.fork` (at module level, under
``gunicorn --preload`` or with :mod:`multiprocessing`) works in the child:
there it starts afresh, with new locks, no members (the parent's
connections stay the parent's), new Redis connections and publisher id, and
threads that start when used; an INFO line says so.

**Redis outages** (a restart, a failover, a network cut): nothing waits
longer than a parameter says, and nothing is lost unreported.

* The subscriber thread retries at once, then after ``reconnect_delay``,
  doubled up to ``max_reconnect_delay`` (0.5 s): it is back within about
  that long once Redis answers.
* :meth:`~Fanout.subscribe` returns ``False`` at once while the subscriber
  knows Redis is unreachable; the membership stands and takes effect when
  the subscriber is back (pub/sub has nothing to catch up on: what was
  published meanwhile is the outage's gap). Otherwise it waits for Redis to
  confirm the subscription, ``timeout`` at most.
* :meth:`~RedisFanout.publish` retries while Redis is unreachable, for up
  to ``publish_timeout`` (5 s). Once Redis answers again it waits until
  the channel has as many subscriptions as its last message reached, so the
  other processes, back too, get it; but for twice ``max_reconnect_delay``
  at most (1 s): every live subscriber retries at least that often, so one
  that isn't back by then has left (or is cut off from Redis, and reports
  its own outage). Past ``publish_timeout`` it raises
  :exc:`~syncws.PublishError`: the message is not sent. A retry reuses the
  first attempt's sequence number, so a message that reached Redis after
  all isn't delivered twice; a number whose message never went is counted
  lost by subscribers.

So a Redis restart shorter than ``publish_timeout`` costs no client its
connection and no publisher a message it was given; what is lost are the
messages Redis had accepted and not yet passed on when it died, and those
published while a process was cut off from Redis and their publisher
wasn't: each is counted (:attr:`FanoutStats.lost`,
:class:`Gap`, a WARNING line) once a later message from the same publisher
arrives.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import functools
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Deque, Dict, Iterator, List, NoReturn, Optional, Set, Tuple

from . import metrics, threadpool
from .exceptions import ConnectionClosed, PublishError
from .logs import format_address
from .protocol import Data, WebSocketCommonProtocol
from .redislink import Backoff, check_durations, client_options, import_redis
from .safetext import redact_uri
from .settings import check_seconds

__all__ = ["Fanout", "FanoutStats", "Gap", "LocalFanout", "PublishError", "RedisFanout"]

logger = logging.getLogger("syncws.fanout")

#: Dispatcher threads per fan-out. They never wait for a member (they only
#: send what its socket takes at once), so a few serve any number.
DISPATCHERS = 2

# How long the subscriber thread blocks reading Redis before it looks at its
# subscription requests again: the latency of a first subscribe(). Also how
# often a publish waiting for its turn looks whether Redis still answers.
_POLL = 0.05

# The channels named in an outage's log line; the others are counted.
_CHANNELS_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Gap:
    """Messages that some local members may have missed.

    Attributes:
        channels: the channels concerned.
        duration: seconds the subscription was down, for an outage; ``None``
            for a gap seen in a publisher's sequence numbers.
        lost: how many messages were lost, when known (sequence gaps);
            ``None`` after an outage, where Redis can't say.
        publisher: the publisher whose messages were lost, for a sequence gap.
        since: for a fan-out with history (:mod:`syncws.streams`), the id of
            the last message before those missing, when there was one.
    """

    channels: Tuple[str, ...]
    duration: Optional[float] = None
    lost: Optional[int] = None
    publisher: Optional[str] = None
    since: Optional[str] = None


GapCallback = Callable[[Gap], None]


def _counter(default: Any = 0, unit: Optional[str] = None) -> Any:
    return dataclasses.field(default=default, metadata={"kind": "counter", "unit": unit})


def _gauge(default: Any = 0, unit: Optional[str] = None) -> Any:
    return dataclasses.field(default=default, metadata={"kind": "gauge", "unit": unit})


@dataclasses.dataclass
class FanoutStats:
    """What a fan-out did and what it holds: :attr:`Fanout.stats` is a snapshot.

    Counters count from the fan-out's creation (in a forked child, from
    the fork) and only grow; gauges are values at the time of the
    snapshot. Each field's ``metadata["kind"]`` says which (``"counter"``
    or ``"gauge"``), and its ``metadata["unit"]`` its unit (``"seconds"``,
    ``"bytes"``, or ``None`` for a count), for exporters such as
    Prometheus' (:mod:`syncws.metrics` names ``oldest_pending``
    ``syncws_fanout_oldest_pending_seconds``). Counting costs an integer
    addition under a lock the fan-out takes anyway; a snapshot walks the
    members once.

    Attributes:
        published: messages this process published.
        publish_errors: publish() calls that raised PublishError.
        received: messages that reached this process for local members.
        delivered: messages sent to local members (one per member).
        delivery_seconds: the seconds delivered messages waited in this
            process between their arrival and their send, summed: divided
            by delivered, the mean delivery lag.
        failures: members dropped: a send that failed or timed out, or a
            full mailbox.
        too_slow: members dropped for a full mailbox (counted in failures
            too).
        discarded: messages never sent because the member they waited
            for was dropped or closed first.
        gaps: gaps reported, outages and sequence gaps (each a Gap).
        lost: messages known lost from sequence gaps (the sum of the
            gaps' lost).
        reconnects: times the subscriber reconnected to the broker.
        members: connections subscribed to a channel (gauge).
        channels: channels with a local member (gauge).
        pending: messages waiting in mailboxes (gauge).
        pending_bytes: bytes of the messages waiting in mailboxes (gauge).
        oldest_pending: seconds the oldest message in a mailbox has waited;
            0 when none waits (gauge).
        slow_members: members that a sender thread of their own serves,
            their socket being full (gauge).
        connected: 1 while messages from the broker can arrive, 0 during an
            outage (gauge; always 1 for LocalFanout).
    """

    published: int = _counter()
    publish_errors: int = _counter()
    received: int = _counter()
    delivered: int = _counter()
    delivery_seconds: float = _counter(0.0, "seconds")
    failures: int = _counter()
    too_slow: int = _counter()
    discarded: int = _counter()
    gaps: int = _counter()
    lost: int = _counter()
    reconnects: int = _counter()
    members: int = _gauge()
    channels: int = _gauge()
    pending: int = _gauge()
    pending_bytes: int = _gauge(unit="bytes")
    oldest_pending: float = _gauge(0.0, "seconds")
    slow_members: int = _gauge()
    connected: int = _gauge(1)


class _State(enum.Enum):
    """Where a member's delivery stands; changed under the fan-out's lock.

    ::

        IDLE ---mail---> QUEUED ---mailbox empty, or held---> IDLE
                         QUEUED ---can't send now---> SLOW
                         SLOW ---mailbox empty, or held---> IDLE
        IDLE (held, mail waiting) ---released---> QUEUED
        any ---dropped, left every channel, or fan-out closed---> GONE

    A *held* member (:meth:`Fanout._hold`) gets mail in its mailbox but
    nobody sends it, until it is released: meanwhile, the thread that held
    it sends it other messages that must go first (a fan-out with history
    sends a reconnecting member what it missed).
    """

    IDLE = "idle"  # nothing to send; nobody serves it
    QUEUED = "queued"  # on the dispatchers' queue, or a dispatcher sends to it
    SLOW = "slow"  # a sender thread of its own sends to it, waiting as long as it must
    GONE = "gone"  # dropped, no longer a member, or the fan-out closed: gets nothing more


# A message in mailboxes: (its payload, the payload's size in bytes,
# time.monotonic() at its arrival, whether it is text). Made once per
# message and shared by every member's mailbox: text is encoded to UTF-8
# once, not by each member's send. Hot path: see
# docs/performance.rst#fan-out-encoding-once.
_Mail = Tuple[bytes, int, float, bool]


class _Member:
    """One connection's mailbox; guarded by the fan-out's lock."""

    __slots__ = ("connection", "mailbox", "mailbox_bytes", "state", "channels", "holds")

    def __init__(self, connection: WebSocketCommonProtocol) -> None:
        self.connection = connection
        self.mailbox: Deque[_Mail] = collections.deque()
        self.mailbox_bytes = 0  # the sizes of the messages in the mailbox
        self.state = _State.IDLE
        self.channels: Set[str] = set()
        self.holds = 0  # _hold() calls not yet released: nobody sends while > 0

    @property
    def gone(self) -> bool:
        """Gets nothing more (another thread may have made it so)."""
        return self.state is _State.GONE


FailureCallback = Callable[[WebSocketCommonProtocol, Exception], None]


class Fanout:
    """Channels of local connections, and delivery to them.

    Subclasses decide how a published message reaches :meth:`_deliver` in
    every process; this class keeps the membership and the delivery policy.
    Every method is safe to call from any thread.

    A backend implements :meth:`publish` and calls ``_deliver(channel,
    message)`` for each message that reaches this process; it may override
    ``_channel_added(channel)`` and ``_channel_live(channel)`` (a channel's
    first member, another member: return whether messages will reach it),
    ``_connected()`` (for ``stats.connected``), ``_left(connection,
    channel, emptied)`` (a member left a channel, its last if ``emptied``;
    lock held), ``_start_fresh()`` (its state, set up at creation and again
    in a forked child; call the base's first) and :meth:`close` (call the
    base's). Membership, mailboxes, dispatchers and senders, the
    slow-member policy, the counters and fork safety come with this class.

    A backend that must change its own state in the same step as a
    delivery (a stream's position) keeps that state under ``_lock``, which
    guards the membership, the counters (``_counts``) and every mailbox,
    and delivers with ``with self._delivering() as enqueue:``, which holds
    the lock and wakes the dispatchers after the block. ``_join`` adds a member under the lock;
    ``_hold`` and ``_release`` pause a member's delivery while the backend
    sends it something first; ``_send_failed`` applies the failure policy
    to such a send; ``_gap`` reports a :class:`Gap`.

    Args:
        timeout: seconds a send to one member may take; past it the
            connection is aborted (``None``: each connection's
            ``write_timeout``).
        max_pending: the most messages waiting for one member (the one
            being sent included); a member with more is dropped.
        max_pending_bytes: the most bytes of messages waiting for one
            member (one message always fits in an empty mailbox); a member
            with more is dropped.
        on_failure: called with ``(connection, exception)`` when a member is
            dropped, from the thread that dropped it (keep it short).

    Raises:
        ValueError: a limit below 1, or a ``timeout`` that is NaN or
            negative (infinity is no limit, as ``None``).
    """

    def __init__(
        self,
        *,
        timeout: Optional[float] = 10,
        max_pending: int = 1024,
        max_pending_bytes: int = 4 * 2**20,
        on_failure: Optional[FailureCallback] = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        if max_pending_bytes < 1:
            raise ValueError(f"max_pending_bytes must be at least 1, got {max_pending_bytes}")
        self.timeout = check_seconds("timeout", timeout)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.on_failure = on_failure
        # Set by subclasses whose broker can lose messages; see _gap().
        self.on_gap: Optional[GapCallback] = None
        self._closed = False
        self._start_fresh()
        _fanouts.add(self)
        metrics.track_fanout(self)  # for syncws.metrics.render(), which reads stats

    def _start_fresh(self) -> None:
        """Set up the state of a new fan-out: at creation, and in a forked child."""
        # The counters; the gauges are computed by the stats property.
        self._counts = FanoutStats()
        # Guards _channels, _members, _counts and every _Member's fields.
        self._lock = threading.Lock()
        self._channels: Dict[str, Set[_Member]] = {}
        self._members: Dict[WebSocketCommonProtocol, _Member] = {}
        # QUEUED members, for the dispatchers; None tells a dispatcher to stop.
        self._ready: "queue.SimpleQueue[Optional[_Member]]" = queue.SimpleQueue()
        # Started by the first delivery.
        self._dispatchers: List[threading.Thread] = []

    def _after_fork(self) -> None:
        """In a child process made by :func:`os.fork`: start afresh, and say so.

        The parent's threads don't exist here, a lock may have been held by
        one of them at the fork, and the members' connections belong to the
        parent, which goes on serving them.
        """
        members = len(self._members)
        self._start_fresh()
        logger.info(
            "%s in process %d, forked from %d: starting afresh (the parent keeps its %d members; "
            "threads start when used)",
            type(self).__name__, os.getpid(), os.getppid(), members,
        )

    # -- membership -------------------------------------------------------

    def subscribe(self, channel: str, connection: WebSocketCommonProtocol) -> bool:
        """Make ``connection`` a member of ``channel``.

        Args:
            channel: the channel (room) name.
            connection: an open connection.

        Returns:
            ``True`` once messages published to ``channel`` from now on will
            reach ``connection``; ``False`` when that can't be confirmed yet
            (the broker is unreachable: the membership stands and takes
            effect once it is back).

        Raises:
            RuntimeError: the fan-out is closed.
            TypeError: ``channel`` isn't a ``str``.
        """
        self._check_channel(channel)
        with self._lock:
            self._check_open()
            first = channel not in self._channels
            self._join(channel, connection)
        return self._channel_added(channel) if first else self._channel_live(channel)

    @staticmethod
    def _check_channel(channel: str) -> None:
        if not isinstance(channel, str):
            raise TypeError(f"channel must be a str, got {type(channel).__name__}")

    def _check_open(self) -> None:
        """Raise RuntimeError if closed (lock held)."""
        if self._closed:
            raise RuntimeError("this fan-out is closed")

    def _join(self, channel: str, connection: WebSocketCommonProtocol) -> _Member:
        """Make ``connection`` a member of ``channel`` (lock held); its :class:`_Member`."""
        member = self._members.get(connection)
        if member is None:
            member = self._members[connection] = _Member(connection)
        self._channels.setdefault(channel, set()).add(member)
        member.channels.add(channel)
        return member

    def unsubscribe(self, channel: str, connection: WebSocketCommonProtocol) -> None:
        """Remove ``connection`` from ``channel`` (nothing if it isn't a member).

        Args:
            channel: the channel.
            connection: the connection.
        """
        with self._lock:
            member = self._members.get(connection)
            if member is None or channel not in member.channels:
                return
            self._remove(member, channel)

    def unsubscribe_all(self, connection: WebSocketCommonProtocol) -> None:
        """Remove ``connection`` from every channel: call it when it ends.

        Args:
            connection: the connection.
        """
        with self._lock:
            member = self._members.get(connection)
            if member is None:
                return
            for channel in list(member.channels):
                self._remove(member, channel)

    def _remove(self, member: _Member, channel: str) -> None:
        """Drop ``member`` from ``channel`` (lock held)."""
        member.channels.discard(channel)
        if not member.channels:
            del self._members[member.connection]
            member.state = _State.GONE
            member.mailbox.clear()
            member.mailbox_bytes = 0
        members = self._channels[channel]
        members.discard(member)
        if not members:
            del self._channels[channel]
        self._left(member.connection, channel, not members)

    def members(self, channel: str) -> Set[WebSocketCommonProtocol]:
        """The local connections subscribed to ``channel``.

        Args:
            channel: the channel.

        Returns:
            A new set (a snapshot).
        """
        with self._lock:
            return {m.connection for m in self._channels.get(channel, ())}

    def pending(self) -> int:
        """Messages waiting in local members' mailboxes: a gauge of slow clients.

        Returns:
            The count, over every member.
        """
        with self._lock:
            return sum(len(m.mailbox) for m in self._members.values())

    @property
    def stats(self) -> FanoutStats:
        """The counters and gauges of this fan-out, as of now (a new snapshot)."""
        now = time.monotonic()
        with self._lock:
            members = list(self._members.values())
            snapshot = dataclasses.replace(
                self._counts,
                members=len(members),
                channels=len(self._channels),
                pending=sum(len(m.mailbox) for m in members),
                pending_bytes=sum(m.mailbox_bytes for m in members),
                oldest_pending=max((now - m.mailbox[0][2] for m in members if m.mailbox), default=0.0),
                slow_members=sum(m.state is _State.SLOW for m in members),
                connected=int(self._connected()),
            )
        return snapshot

    def channels(self) -> Set[str]:
        """The channels with at least one local member (a snapshot).

        Returns:
            A new set.
        """
        with self._lock:
            return set(self._channels)

    # Hooks for subclasses. A channel got its first local member, or a
    # member joined a channel that had some (without the lock: they may
    # wait).

    def _channel_added(self, channel: str) -> bool:
        return True

    def _channel_live(self, channel: str) -> bool:
        return True

    def _connected(self) -> bool:
        """Whether messages from the broker can arrive now (lock held)."""
        return True

    def _left(self, connection: WebSocketCommonProtocol, channel: str, emptied: bool) -> None:
        """``connection`` left ``channel``, its last local member if ``emptied`` (lock held)."""

    # -- publishing and delivery -------------------------------------------

    def publish(self, channel: str, message: Data) -> Optional[str]:
        """Send ``message`` to every member of ``channel``, wherever it is.

        Returns once the message is on its way, not when it was delivered.

        Args:
            channel: the channel.
            message: ``str`` (a text message) or bytes-like (binary).

        Returns:
            The message's id, for a fan-out that gives ids
            (:class:`~syncws.streams.RedisStreamFanout`); else ``None``.

        Raises:
            PublishError: the message couldn't be handed to the broker.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        raise NotImplementedError

    def _deliver(self, channel: str, message: Data, text: bool = False) -> None:
        """Queue ``message`` for every local member of ``channel``.

        What a backend calls for each message that reaches this process:
        ``str`` for text, or ``bytes``, sent as text if ``text`` is true
        (UTF-8 the backend has checked).
        """
        payload, text = _payload(message, text)  # encoded before the lock is taken
        # Hot path (one message): what _delivering() does, without its
        # generator and partial.
        handover = _Handover()
        with self._lock:
            self._enqueue(channel, payload, handover, text)
        self._hand_over(handover)

    @contextlib.contextmanager
    def _delivering(self) -> Iterator[Callable[[str, Data], None]]:
        """Deliver several messages in one locked step, with other state changes.

        Holds the lock and yields ``enqueue(channel, message)``, which puts
        a message in the mailboxes of the channel's members; when the block
        ends, the dispatchers are woken (lock released).
        """
        handover = _Handover()
        with self._lock:
            yield functools.partial(self._enqueue, handover=handover)
        self._hand_over(handover)

    def _enqueue(self, channel: str, message: Data, handover: "_Handover", text: bool = False) -> None:
        """Put ``message`` in the mailboxes of ``channel``'s local members (lock held).

        ``message`` and ``text`` are as for :meth:`_deliver`. Members to
        serve and members dropped go to ``handover``, for :meth:`_hand_over`
        once the lock is released.
        """
        members = self._channels.get(channel)
        if not members or self._closed:
            return
        payload, text = _payload(message, text)
        size = len(payload)
        mail = (payload, size, time.monotonic(), text)
        self._counts.received += 1
        for member in list(members):  # _drop() may remove some
            if member.mailbox and (
                len(member.mailbox) >= self.max_pending or member.mailbox_bytes + size > self.max_pending_bytes
            ):
                handover.dropped.append(self._drop(member, self._too_slow(member, size)))
                continue
            member.mailbox.append(mail)
            member.mailbox_bytes += size
            if member.state is _State.IDLE and not member.holds:
                self._queue(member, handover)

    def _queue(self, member: _Member, handover: "_Handover") -> None:
        """Make an IDLE member QUEUED (lock held); :meth:`_hand_over` wakes a dispatcher."""
        member.state = _State.QUEUED
        handover.queued.append(member)
        if not self._dispatchers:
            self._start_dispatchers()

    def _hand_over(self, handover: "_Handover") -> None:
        """Wake the dispatchers for the members queued, report those dropped (lock not held)."""
        for member in handover.queued:
            self._ready.put(member)
        for connection, exc, channels in handover.dropped:
            self._report_drop(connection, exc, channels)

    def _hold(self, member: _Member) -> None:
        """Stop sending ``member`` its mail until :meth:`_release` (lock held).

        Mail still reaches its mailbox (within the limits); a send under way
        finishes. The caller may then send to the connection itself.
        """
        member.holds += 1

    def _release(self, member: _Member) -> None:
        """Undo one :meth:`_hold`: the mail that waited goes out (lock not held)."""
        handover = _Handover()
        with self._lock:
            member.holds -= 1
            assert member.holds >= 0
            if not member.holds and member.state is _State.IDLE and member.mailbox and not self._closed:
                self._queue(member, handover)
        self._hand_over(handover)

    def _too_slow(self, member: _Member, size: int) -> OverflowError:
        """Why ``member`` can't take one more message of ``size`` bytes (lock held)."""
        if len(member.mailbox) >= self.max_pending:
            limit = f"max_pending={self.max_pending}"
        else:
            limit = f"max_pending_bytes={self.max_pending_bytes}"
        return OverflowError(
            f"too slow: {len(member.mailbox)} messages ({member.mailbox_bytes} bytes) waiting, "
            f"one more ({size} bytes) would pass {limit}"
        )

    def _drop(self, member: _Member, exc: Exception) -> Tuple[WebSocketCommonProtocol, Exception, List[str]]:
        """Drop a member from every channel (lock held); :meth:`_report_drop` follows."""
        channels = sorted(member.channels)
        self._counts.failures += 1
        self._counts.too_slow += isinstance(exc, OverflowError)
        self._counts.discarded += len(member.mailbox)
        for channel in channels:
            self._remove(member, channel)
        assert member.gone and not member.mailbox
        return member.connection, exc, channels

    def _report_drop(self, connection: WebSocketCommonProtocol, exc: Exception, channels: List[str]) -> None:
        """Log a drop, close a member too slow to keep up, call ``on_failure`` (lock not held)."""
        logger.warning("dropping %s from %s: %s", _name(connection), channels, exc)
        if isinstance(exc, OverflowError):
            # Still open but too slow: tell it why it gets nothing more,
            # without waiting (a send blocked on it may hold its writer).
            connection.start_closing(1008, "too slow to keep up")
        if self.on_failure is not None:
            try:
                self.on_failure(connection, exc)
            except Exception:
                logger.exception("on_failure raised")

    def _start_dispatchers(self) -> None:
        for i in range(DISPATCHERS):
            thread = threading.Thread(target=self._dispatch, name=f"syncws-fanout-dispatcher-{i}", daemon=True)
            thread.start()
            self._dispatchers.append(thread)

    def _dispatch(self) -> None:
        """A dispatcher thread: send to QUEUED members what their sockets take at once."""
        while True:
            member = self._ready.get()
            if member is None:
                return
            self._serve(member, blocking=False)

    def _serve(self, member: _Member, blocking: bool) -> None:
        """Send a member its mail, in order, until its mailbox is empty.

        In a dispatcher (``blocking`` false), only what the socket takes at
        once: the first message that would block, and the rest after it,
        go to a sender thread of the member's own (``blocking``), which
        waits up to ``timeout`` for each send. So a stalled member holds
        only its own thread, never a dispatcher.
        """
        connection = member.connection
        lag = None  # of the message just sent, counted (and taken out) at the next lock acquisition
        while True:
            with self._lock:
                if lag is not None:  # the mailbox's first message was sent
                    self._counts.delivered += 1
                    self._counts.delivery_seconds += lag
                    if not member.gone:  # else the mailbox was emptied
                        member.mailbox_bytes -= member.mailbox.popleft()[1]
                if member.gone:
                    return
                if not member.mailbox or member.holds:
                    member.state = _State.IDLE
                    return
                # It stays in the mailbox until sent: a message being sent
                # still counts against the member's limits.
                payload, _, arrival, text = member.mailbox[0]
            try:
                if blocking:
                    connection.send(payload, timeout=self.timeout, text=text)
                elif not connection.send_nowait(payload, self.timeout, text=text):
                    with self._lock:
                        if member.gone:
                            return
                        member.state = _State.SLOW
                    self._start_sender(member)
                    return
            except Exception as exc:
                self._send_failed(member, exc)
                return
            lag = time.monotonic() - arrival

    def _send_failed(self, member: _Member, exc: Exception) -> None:
        """A send to ``member`` raised ``exc``: the message is discarded, the member dropped.

        A connection closing or closed (:exc:`~syncws.ConnectionClosed`)
        leaves quietly (its handler ends anyway); any other error is a
        failure, reported. Lock not held.
        """
        if isinstance(exc, ConnectionClosed):
            logger.debug("%s left: %s", _name(member.connection), exc)
            with self._lock:
                self._counts.discarded += len(member.mailbox)
                for channel in list(member.channels):
                    self._remove(member, channel)
            return
        with self._lock:
            drop = None if member.gone else self._drop(member, exc)
        if drop is not None:
            self._report_drop(*drop)

    def _gap(self, gap: Gap) -> None:
        """Count ``gap`` and call ``on_gap`` with it (lock not held)."""
        with self._lock:
            self._counts.gaps += 1
            self._counts.lost += gap.lost or 0
        if self.on_gap is not None:
            try:
                self.on_gap(gap)
            except Exception:
                logger.exception("on_gap raised")

    def _start_sender(self, member: _Member) -> None:
        """Give a SLOW member a sender thread of its own."""
        name = f"syncws-fanout-sender-{_name(member.connection)}"
        try:
            threadpool.start(functools.partial(self._serve, member, blocking=True), name)
        except RuntimeError as exc:  # out of threads: it can't be served
            with self._lock:
                drop = None if member.gone else self._drop(member, exc)
            if drop is not None:
                self._report_drop(*drop)

    @staticmethod
    def _checked_message(message: Data) -> Data:
        """``message`` as ``str`` or ``bytes``, for :meth:`publish`.

        Raises:
            TypeError: it is neither ``str`` nor bytes-like.
        """
        if isinstance(message, str):
            return message
        if isinstance(message, (bytes, bytearray, memoryview)):
            return bytes(message)
        raise TypeError(f"message must be str or bytes-like, got {type(message).__name__}")

    def close(self) -> None:
        """Stop delivering and release the threads and broker connections.

        Idempotent. Messages still in mailboxes are dropped.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            dispatchers = list(self._dispatchers)
            for member in self._members.values():
                member.state = _State.GONE
                member.mailbox.clear()
                member.mailbox_bytes = 0
        for _ in dispatchers:
            self._ready.put(None)
        for thread in dispatchers:
            thread.join()

    def __enter__(self) -> "Fanout":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# Every fan-out alive in this process, for _after_fork_in_child().
_fanouts: "weakref.WeakSet[Fanout]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # gunicorn --preload, multiprocessing: a fan-out made before the fork
    # (at module level) must work in the children.
    for fanout in list(_fanouts):
        fanout._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _name(connection: WebSocketCommonProtocol) -> str:
    try:
        return format_address(connection.remote_address)
    except Exception:
        return repr(connection)


def _payload(message: Data, text: bool) -> Tuple[bytes, bool]:
    """What members are sent: the payload's bytes (``str`` encoded to UTF-8), and whether it is text."""
    if isinstance(message, str):
        return message.encode(), True
    return message, text


class _Handover:
    """What :meth:`Fanout._enqueue` leaves for :meth:`Fanout._hand_over` to do without the lock."""

    __slots__ = ("queued", "dropped")

    def __init__(self) -> None:
        self.queued: List[_Member] = []  # made QUEUED: to put on the dispatchers' queue
        self.dropped: List[Tuple[WebSocketCommonProtocol, Exception, List[str]]] = []  # to report


class LocalFanout(Fanout):
    """Fan-out within one process: :meth:`publish` delivers directly.

    Same arguments as :class:`Fanout`.
    """

    def publish(self, channel: str, message: Data) -> None:
        """Send ``message`` to every member of ``channel`` in this process.

        Args:
            channel: the channel.
            message: ``str`` or bytes-like.

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        message = self._checked_message(message)
        with self._lock:
            self._counts.published += 1
        self._deliver(channel, message)


# -- Redis --------------------------------------------------------------------

# An envelope is b"<publisher> <sequence> <t|b>\n" followed by the payload
# (UTF-8 for text). The sequence number counts per publisher and channel.

#: The publishers per channel whose sequence numbers a subscriber remembers,
#: the least recently heard forgotten first: every process that published
#: to the channel since this one subscribed, and processes restart under new
#: ids. A forgotten publisher's next message is taken as its first.
PUBLISHERS_KEPT = 256


class _Sequence:
    """A publisher's numbering of one channel's messages."""

    __slots__ = ("publisher", "number", "receivers")

    def __init__(self, publisher: str) -> None:
        self.publisher = publisher  # the envelope's publisher field
        self.number = 0  # the last number given
        self.receivers = 0  # subscriptions the last PUBLISH reached (its reply)


def _pack(publisher: str, sequence: int, message: Data) -> bytes:
    if isinstance(message, str):
        return b"%s %d t\n%s" % (publisher.encode(), sequence, message.encode())
    return b"%s %d b\n%s" % (publisher.encode(), sequence, message)


def _unpack(envelope: bytes) -> Tuple[str, int, bytes, bool]:
    """(publisher, sequence, payload, whether it is text) of an envelope.

    A text payload stays UTF-8 bytes, sent to members as they are, once
    checked: a text frame must be UTF-8 (RFC 6455, section 8.1), and anyone
    with access to Redis can publish on a channel.

    Raises:
        ValueError: it isn't an envelope (UnicodeDecodeError: text that
            isn't UTF-8).
    """
    head, sep, payload = envelope.partition(b"\n")
    publisher, sequence, kind = head.split(b" ")
    if not sep or kind not in (b"t", b"b"):
        raise ValueError("not a syncws envelope")
    text = kind == b"t"
    if text:
        payload.decode()  # the check; the str isn't kept
    return publisher.decode(), int(sequence), payload, text


class RedisFanout(Fanout):
    """Fan-out across processes and machines over Redis pub/sub.

    Every process that shares ``url`` (and ``prefix``) shares the channels.
    See the module docstring for delivery, order, gaps and Redis outages.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://``,
            ``unix://``).
        prefix: put before every channel name in Redis.
        timeout: as for :class:`Fanout`; also bounds each Redis command
            and connection attempt, and how long :meth:`subscribe` waits for
            Redis to confirm a subscription.
        max_pending: as for :class:`Fanout`.
        max_pending_bytes: as for :class:`Fanout`.
        on_failure: as for :class:`Fanout`.
        on_gap: called with a :class:`Gap` when messages may have been lost
            (from the subscriber thread; keep it short).
        ping_interval: seconds between pings on the subscription
            connection, to notice a silent network cut.
        ping_timeout: seconds without any answer before the subscription
            connection is considered dead.
        reconnect_delay: the delay before the second attempt to reconnect
            (the first is immediate), doubled on each failure up to
            ``max_reconnect_delay``; each delay is shortened at random by up
            to half.
        max_reconnect_delay: the longest delay between attempts: once Redis
            answers again, the subscriber is back within about this long.
            After an outage, :meth:`publish` waits twice this long at most
            for the subscriptions of other processes to be back.
        publish_timeout: seconds :meth:`publish` keeps retrying while Redis
            is unreachable (as quickly as the subscriber reconnects) before
            it raises :exc:`~syncws.PublishError`; 0 raises at the first
            failure.
        max_sequences: the channels whose sequence numbers this publisher
            remembers, the least recently published to forgotten first. A
            forgotten channel's numbers start again under a new publisher
            id, which subscribers take for a new publisher: nothing is
            reported lost or repeated.

    Raises:
        ImportError: redis-py isn't installed (``syncws[redis]``).
        ValueError: ``url`` isn't a Redis URL, a limit is below 1, or a
            duration isn't a finite number of seconds >= 0.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "syncws:",
        timeout: Optional[float] = 10,
        max_pending: int = 1024,
        max_pending_bytes: int = 4 * 2**20,
        on_failure: Optional[FailureCallback] = None,
        on_gap: Optional[GapCallback] = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
        reconnect_delay: float = 0.05,
        max_reconnect_delay: float = 0.5,
        publish_timeout: float = 5.0,
        max_sequences: int = 4096,
    ) -> None:
        redis = import_redis("syncws.fanout.RedisFanout")
        if max_sequences < 1:
            raise ValueError(f"max_sequences must be at least 1, got {max_sequences}")
        check_durations(
            ping_interval=ping_interval, ping_timeout=ping_timeout, reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay, publish_timeout=publish_timeout,
        )
        timeout = check_seconds("timeout", timeout)
        self.url = url
        self.prefix = prefix
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.publish_timeout = publish_timeout
        self.max_sequences = max_sequences
        self._redis = redis
        self._client_options = client_options(redis, timeout)
        super().__init__(  # calls _start_fresh()
            timeout=timeout, max_pending=max_pending, max_pending_bytes=max_pending_bytes, on_failure=on_failure
        )
        self.on_gap = on_gap

    def _start_fresh(self) -> None:
        super()._start_fresh()
        # New clients after a fork: the parent's connections are the
        # parent's (redis-py leaves their sockets to it).
        self._publisher_client = self._redis.Redis.from_url(self.url, **self._client_options)
        self._subscriber_client = self._redis.Redis.from_url(self.url, **self._client_options)
        # Unique per process and instance: a restarted publisher, or a
        # forked one, starts new sequences instead of looking like a gap or
        # repeating its parent's numbers.
        self.publisher_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # Held across numbering and PUBLISH (its retries included), so
        # numbers go out in order; guards _sequences and _forgotten.
        self._publish_lock = threading.Lock()
        # Since when Redis hasn't answered: the start of the PUBLISH under
        # way, or of the first one of an outage; None once one is answered.
        # Written under _publish_lock, read by the publishes waiting for it.
        self._unanswered_since: Optional[float] = None
        # Whether an attempt failed since Redis last answered (likewise):
        # with publish_timeout 0, what fails the publishes waiting, rather
        # than an answer still on its way.
        self._failing = False
        # The channels published to, the least recently first.
        self._sequences: "collections.OrderedDict[str, _Sequence]" = collections.OrderedDict()
        # Channels dropped from _sequences so far: a channel numbered again
        # gets the publisher id with this count, one it never had.
        self._forgotten = 0
        # The subscriber thread's state, under _lock. _live: the channels
        # Redis confirmed on the current connection. _link_down: the last
        # attempt to reach Redis failed, so a subscribe() doesn't wait for a
        # confirmation. _down_since: the monotonic time the subscription
        # was lost, until it is whole again. _changed is notified when any
        # of them changes, for subscribe() to wait on.
        self._live: Set[str] = set()
        self._link_down = False
        self._down_since: Optional[float] = None
        self._changed = threading.Condition(self._lock)
        # channel -> publisher -> the last sequence number seen, the least
        # recently heard publisher first; only channels subscribed to
        # (subscriber thread only).
        self._last_seen: Dict[str, "collections.OrderedDict[str, int]"] = {}
        self._stop = threading.Event()
        # Started by the first subscribe(): a process that only publishes
        # needs none.
        self._thread: Optional[threading.Thread] = None

    # -- publishing ---------------------------------------------------------

    def publish(self, channel: str, message: Data) -> None:
        """Publish ``message`` to ``channel`` on every process.

        While Redis is unreachable, retries for up to ``publish_timeout``
        seconds (each attempt bounded by ``timeout``), as soon as it answers
        again. Publishes go out one at a time, in order: behind others that
        Redis answers, one waits its turn, and only time without an answer
        from Redis counts against ``publish_timeout``. Once Redis is back it
        waits until the channel has as many subscriptions as
        the last publish reached, so that the processes that were subscribed
        get it too, for at most twice ``max_reconnect_delay`` (a process
        that left meanwhile never comes back). A retry carries the first
        attempt's sequence number, so a message that reached Redis after all
        isn't delivered twice.

        Args:
            channel: the channel.
            message: ``str`` or bytes-like.

        Raises:
            PublishError: Redis couldn't be reached within
                ``publish_timeout`` or refused the command (the message is
                not sent).
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        message = self._checked_message(message)
        arrived = time.monotonic()
        # Other publishes hold the lock in turn: while Redis answers them,
        # this one waits its turn, however long the queue (a refused message
        # is lost; a slow one is only late). Redis unreachable, the time
        # counts against publish_timeout.
        while not self._publish_lock.acquire(timeout=_POLL):
            if time.monotonic() >= self._publish_deadline(arrived):
                self._publish_failed(channel, "another publish waited for Redis all this time")
        try:
            # The number is used even if PUBLISH fails: a command that
            # timed out may have reached Redis, and reusing its number would
            # make the next message look like a repeat. When it didn't go,
            # subscribers count it lost.
            sequence = self._number(channel)
            envelope = _pack(sequence.publisher, sequence.number, message)
            backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
            retrying = False
            while True:
                try:
                    if self._unanswered_since is None:
                        self._unanswered_since = time.monotonic()
                    if retrying:
                        self._await_subscribers(channel, sequence.receivers, self._publish_deadline(arrived))
                    sequence.receivers = self._publisher_client.publish(self.prefix + channel, envelope)
                    self._answered()
                    break
                except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
                    retrying = self._failing = True
                    remaining = self._publish_deadline(arrived) - time.monotonic()
                    if remaining <= 0 or self._stop.is_set():
                        self._publish_failed(channel, str(exc), exc)
                    self._stop.wait(min(backoff.next(), remaining))
                except self._redis.RedisError as exc:  # refused: retrying won't help
                    self._answered()
                    self._publish_failed(channel, str(exc), exc)
            with self._lock:
                self._counts.published += 1
        finally:
            self._publish_lock.release()

    def _publish_deadline(self, arrived: float) -> float:
        """When a message given to :meth:`publish` at ``arrived`` stops waiting for Redis.

        ``publish_timeout`` after Redis stopped answering, or after the
        message arrived if that came later; never while Redis answers. With
        ``publish_timeout`` 0, once an attempt failed: not while an answer
        may still come.
        """
        unanswered_since = self._unanswered_since
        if unanswered_since is None or not (self.publish_timeout or self._failing):
            return float("inf")
        return max(arrived, unanswered_since) + self.publish_timeout

    def _answered(self) -> None:
        """Redis answered a PUBLISH (``_publish_lock`` held): the publishes waiting wait their turn."""
        self._unanswered_since = None
        self._failing = False

    def _await_subscribers(self, channel: str, receivers: int, deadline: float) -> None:
        """After an outage, wait until ``channel`` has its ``receivers`` back, briefly.

        A restarted Redis has no subscriptions: a message published before
        the other processes subscribe again would be lost to them. The
        last PUBLISH's reply said how many subscriptions it reached, and
        the message goes once Redis counts as many again. A live process
        retries at most ``max_reconnect_delay`` apart, so it is back within
        about that long once Redis answers; one that isn't back within twice
        that has left (it never comes back), or is cut off from Redis (it
        reports its outage, this message included). So the wait ends then,
        or at ``deadline``.
        """
        grace_ends = None  # set by Redis's first answer
        while not self._stop.is_set():
            ((_, subscribed),) = self._publisher_client.pubsub_numsub(self.prefix + channel)
            now = time.monotonic()
            if grace_ends is None:
                grace_ends = min(deadline, now + 2 * self.max_reconnect_delay)
            if subscribed >= receivers:
                return
            if now >= grace_ends:
                logger.debug(
                    "publishing to %r with %d of its %d subscriptions back after the outage",
                    channel, subscribed, receivers,
                )
                return
            self._stop.wait(min(_POLL, grace_ends - now))

    def _publish_failed(self, channel: str, why: str, cause: Optional[BaseException] = None) -> NoReturn:
        with self._lock:
            self._counts.publish_errors += 1
        within = f" within {self.publish_timeout} s" if self.publish_timeout > 0 else ""
        raise PublishError(f"cannot publish to {channel!r} on {redact_uri(self.url)}{within}: {why}") from cause

    def _number(self, channel: str) -> _Sequence:
        """Number the next message to ``channel`` (``_publish_lock`` held)."""
        sequence = self._sequences.get(channel)
        if sequence is None:
            suffix = f".{self._forgotten}" if self._forgotten else ""
            sequence = self._sequences[channel] = _Sequence(self.publisher_id + suffix)
            if len(self._sequences) > self.max_sequences:
                self._sequences.popitem(last=False)
                self._forgotten += 1
        else:
            self._sequences.move_to_end(channel)
        sequence.number += 1
        return sequence

    # -- subscriptions --------------------------------------------------------

    def _channel_added(self, channel: str) -> bool:
        return self._wait_live(channel)

    def _channel_live(self, channel: str) -> bool:
        return self._wait_live(channel)

    def _wait_live(self, channel: str) -> bool:
        """Wait until Redis confirms ``channel``: ``False`` at once while it is down.

        At most ``timeout`` seconds, when Redis neither confirms nor fails
        (a connection attempt that hangs).
        """
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._subscriber, name="syncws-fanout-redis", daemon=True)
                self._thread.start()
            self._changed.wait_for(
                lambda: channel in self._live or self._link_down or self._closed, self.timeout
            )
            return channel in self._live

    def _connected(self) -> bool:
        return self._down_since is None

    def _subscriber(self) -> None:
        """The subscriber thread: connect, subscribe, read, reconnect."""
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while not self._stop.is_set():
            pubsub = self._subscriber_client.pubsub()
            try:
                pubsub.ping()  # connects, or raises
                with self._lock:
                    self._link_down = False
                    if self._down_since is not None:
                        self._counts.reconnects += 1
                self._serve_subscription(pubsub, backoff)
                return  # closed
            except Exception as exc:
                # Connection errors are expected; anything else is a bug,
                # logged with its traceback, but the thread carries on:
                # without it no message reaches this process.
                if not isinstance(exc, (self._redis.RedisError, OSError)):
                    logger.exception("redis subscriber failed; reconnecting")
                if self._down_since is None:
                    logger.warning("redis subscription to %s lost: %s; reconnecting", redact_uri(self.url), exc)
                else:
                    logger.debug("reconnecting to %s failed: %s", redact_uri(self.url), exc)
                with self._lock:
                    if self._down_since is None:
                        self._down_since = time.monotonic()  # a new outage
                    self._link_down = True
                    self._changed.notify_all()  # subscribe() calls return
            finally:
                with self._lock:
                    self._live.clear()  # subscribe() waits again until Redis confirms
                try:
                    pubsub.close()
                except Exception:  # a broken connection may fail to close
                    pass
            self._stop.wait(backoff.next())

    def _serve_subscription(self, pubsub: Any, backoff: Backoff) -> None:
        """Run one subscription connection until it breaks (raises) or we close."""
        pending: Set[str] = set()  # SUBSCRIBE sent, confirmation not yet read
        last_heard = last_ping = time.monotonic()
        with self._lock:
            wanted = set(self._channels)
        for channel in set(self._last_seen) - wanted:  # left during an outage: no UNSUBSCRIBE said so
            del self._last_seen[channel]
        while not self._stop.is_set():
            with self._lock:
                wanted = set(self._channels)
                to_unsubscribe = self._live - wanted
                # Not live from now on, before UNSUBSCRIBE goes: a first
                # member joining meanwhile waits for a new confirmation.
                self._live -= to_unsubscribe
                to_subscribe = wanted - self._live - pending
            if to_subscribe:
                pubsub.subscribe(*(self.prefix + c for c in to_subscribe))
                pending |= to_subscribe
            if to_unsubscribe:
                pubsub.unsubscribe(*(self.prefix + c for c in to_unsubscribe))
            if self._down_since is not None and not pending:
                # Every wanted channel is live again: the outage is over,
                # and the next one starts with an immediate retry.
                self._report_outage(time.monotonic() - self._down_since, tuple(sorted(wanted)))
                with self._lock:
                    self._down_since = None
                backoff.reset()
            message = pubsub.get_message(timeout=_POLL)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                self._handle(message, pending)
            if pubsub.subscribed:
                # Pings are answered on the subscription connection only
                # while it is subscribed (redis-py reads nothing otherwise).
                if now - last_ping >= self.ping_interval:
                    pubsub.ping()
                    last_ping = now
                if now - last_heard > self.ping_interval + self.ping_timeout:
                    raise self._redis.ConnectionError(
                        f"no answer from {redact_uri(self.url)} for {now - last_heard:.1f} seconds"
                    )
            else:
                last_heard = now

    def _handle(self, message: Dict[str, Any], pending: Set[str]) -> None:
        kind = message["type"]
        if kind == "pong":
            return
        raw = message["channel"]
        channel = (raw.decode() if isinstance(raw, bytes) else raw)[len(self.prefix):]
        if kind == "subscribe":
            pending.discard(channel)
            with self._lock:
                self._live.add(channel)  # unsubscribed next round if no longer wanted
                self._changed.notify_all()
        elif kind == "unsubscribe":
            with self._lock:
                self._live.discard(channel)
            self._last_seen.pop(channel, None)
        elif kind == "message":
            try:
                publisher, sequence, payload, text = _unpack(message["data"])
            except (ValueError, UnicodeDecodeError):
                logger.warning("ignoring a message on %r that isn't a syncws envelope", channel)
                return
            seen = self._last_seen.setdefault(channel, collections.OrderedDict())
            last = seen.get(publisher)
            if last is not None and sequence <= last:
                logger.warning("dropping a repeated message %d from %r on %r", sequence, publisher, channel)
                return
            seen[publisher] = sequence
            seen.move_to_end(publisher)
            if len(seen) > PUBLISHERS_KEPT:
                seen.popitem(last=False)
            if last is not None and sequence > last + 1:
                lost = sequence - last - 1
                logger.warning("%d messages from publisher %r on %r were lost", lost, publisher, channel)
                self._gap(Gap((channel,), lost=lost, publisher=publisher))
            self._deliver(channel, payload, text)

    def _report_outage(self, duration: float, channels: Tuple[str, ...]) -> None:
        if not channels:
            logger.warning(
                "redis subscription to %s restored after %.2f s; no channel had members here meanwhile",
                redact_uri(self.url), duration,
            )
            return
        shown = ", ".join(repr(channel) for channel in channels[:_CHANNELS_SHOWN])
        more = f" and {len(channels) - _CHANNELS_SHOWN} more" if len(channels) > _CHANNELS_SHOWN else ""
        logger.warning(
            "redis subscription to %s restored after %.2f s: what was published meanwhile to %s%s "
            "didn't reach this process (Redis pub/sub keeps nothing)",
            redact_uri(self.url), duration, shown, more,
        )
        self._gap(Gap(channels, duration=duration))

    def close(self) -> None:
        """Stop the subscriber thread and the senders; close Redis connections.

        Idempotent.
        """
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()
        super().close()
        with self._lock:
            self._changed.notify_all()
        self._publisher_client.close()
        self._subscriber_client.close()
