"""Fan-out with history on Redis Streams: nothing lost across Redis restarts and reconnects.

::

    def as_json(event):  # what each member is sent
        if isinstance(event, Message):
            return json.dumps({"id": event.id, "text": event.data})
        if isinstance(event, Gap):
            return json.dumps({"recovered": False})
        return None  # presence events: not sent

    rooms = RedisStreamFanout("redis://localhost:6379/0", history=1000, encode=as_json)

    def handler(websocket):
        room, since = ...  # from the URL: the last id this client saw, if any
        rooms.subscribe(room, websocket, since=since)  # what it missed, then live
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
:class:`RedisStreamFanout` is a :class:`~syncws.fanout.Fanout`: members,
mailboxes, dispatchers and sender threads, the slow-member policy, the
counters and fork safety are the base class's (see :mod:`syncws.fanout`).
What differs is how messages travel: each channel is a Redis stream (a log),
not a pub/sub channel, so nothing depends on a process being connected at
the moment a message goes by.

**Keys.** For a channel ``C`` and the default prefix: the stream
``syncws:s:C`` holds the channel's last ``history`` messages (and none older
than ``max_age``); the hash ``syncws:m:C`` holds the stream's *epoch* (a
random token), its *offset* counter and the size of its largest message;
with presence on, the sorted set
``syncws:p:C`` holds who is there. Each process also has a small stream
``syncws:w:<token>`` that wakes its reader.

**Publishing** runs one Lua script, so that these steps are one: take the
epoch (or make one: the stream or its epoch is missing, so it starts anew,
and any id from before names another epoch), count the offset, ``XADD`` the
message with its epoch, offset, type and a token unique to this publish,
trim (``MAXLEN history``, then ``MINID`` for ``max_age``), and give the keys
``max_age`` to live. The id a message gets, ``"<epoch>:<stream id>"``, is
returned to the publisher and given to every member with the message.

**Reading.** One *reader thread* per process, on one connection of its own,
runs ``XREAD BLOCK`` over every stream that has local members. It keeps,
per stream, a *position*: the id, epoch and offset of the last entry it
delivered. Each entry read is encoded once (``encode``) and put in the
mailboxes of the channel's members in the same locked step that moves the
position: so a member that joins sees every entry after the position, and
none at or before it. After a Redis outage, the reader reconnects and reads
every stream from its position: nothing published meanwhile (by a process
that could still reach Redis, or after the restart) is skipped. A channel
whose first member joined while the reader was away has no position yet:
the reader, back, places it before every entry added since the member
joined, by Redis's clock (``TIME``, less the time since), not at the
stream's end, which may hold messages published after the join.

**Gaps the reader sees.** Offsets count 1, 2, 3... within an epoch: a jump
means entries were trimmed before this process read them (it was behind by
more than ``history``), an offset that goes back means Redis lost writes it
had acknowledged (a crash without ``appendfsync always``), and a new epoch
means the stream was deleted or expired and made again. Each is reported as
a :class:`~syncws.fanout.Gap` (with ``lost`` when known, and ``since``, the
last id delivered before it): counted, logged, passed to ``on_gap``, and
sent to the channel's members, in order, as ``encode(gap)``.

**Recovery.** ``subscribe(channel, member, since=ID)``, in the caller's
thread: the member joins the channel *held* (its live messages wait in its
mailbox, after the reader's position ``P`` at that moment); the caller reads
``(ID, P]`` from the stream with ``XRANGE``, a page at a time (as many
entries as 1 MiB holds of the stream's largest message, so that members
that don't read hold little memory each), and sends it to the connection
itself; then the member is released and its mailbox
follows. History up to ``P`` and live messages after it: no gap, no
duplicate. When ``ID`` is of another epoch, or no longer in the stream
(trimmed), or not an id at all, the member is sent ``encode(Gap)`` first,
then whatever the history still holds up to ``P``, then live messages, and
``subscribe()`` returns ``False``. An ``ID`` ahead of ``P`` (seen through a
process whose reader is ahead of this one's) is checked with Redis and
waited for, so that nothing after it comes twice. ``since=""`` asks for the
whole history.

**Publishing while Redis is unreachable** retries as soon as it answers, for
up to ``publish_timeout``. A retry asks the script to look for the first
attempt's token in the stream first: an ``XADD`` that Redis applied but
whose answer was lost (Redis killed between the two, a network cut) is not
added twice.

**Presence** (``presence=True``): every member is an element of the
channel's sorted set, scored by when it expires; a *presence thread* per
process renews them every ``presence_ttl / 3`` and removes those that
expired, so the members of a process that died vanish within
``presence_ttl``. A join and a leave are also entries of the stream
(:class:`PresenceEvent`), in order with the messages, recovered like them.
:meth:`RedisStreamFanout.presence` lists the members of every process.

Threads: the reader; the base class's dispatchers and senders; the presence
thread when presence is on. Connections: the reader's, and a pool of at most
``max_connections`` for commands (publish, recovery, presence), opened as
they are needed.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import re
import secrets
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, NoReturn, Optional, Set, Tuple, Union, cast

from .exceptions import PublishError
from .fanout import FailureCallback, Fanout, FanoutStats, Gap, GapCallback, _Member
from .protocol import Data, WebSocketCommonProtocol
from .redislink import Backoff, check_durations, client_options, import_redis
from .safetext import redact_uri

__all__ = ["Event", "Message", "PresenceEvent", "RedisStreamFanout", "StreamFanoutStats", "plain"]

logger = logging.getLogger("syncws.streams")


class Message(NamedTuple):
    """A message of a channel, as a member gets it.

    Attributes:
        channel: the channel.
        id: ``"<epoch>:<stream id>"``: unique in the channel, and growing in
            the channel's order within an epoch. Give it back as ``since``
            to recover what came after it.
        data: the message: ``str`` (text) or ``bytes`` (binary).
    """

    channel: str
    id: str
    data: Data


class PresenceEvent(NamedTuple):
    """A member joined or left a channel (``presence=True``).

    Attributes:
        channel: the channel.
        id: its place in the channel, like :attr:`Message.id`.
        joined: ``True`` for a join, ``False`` for a leave.
        member: the member's key, unique across processes.
        info: what ``subscribe(..., info=)`` said of the member (a user
            name, say).
    """

    channel: str
    id: str
    joined: bool
    member: str
    info: str


#: What ``encode`` is given: a message, a presence event, or a gap before
#: the messages that follow (``{"recovered": false}`` for a client).
Event = Union[Message, PresenceEvent, Gap]

Encoder = Callable[[Event], Optional[Data]]


def plain(event: Event) -> Optional[Data]:
    """The default ``encode``: a message as it was published; nothing else is sent.

    Members get exactly what they would from :class:`~syncws.fanout.RedisFanout`.
    """
    return event.data if isinstance(event, Message) else None


def _counter() -> Any:
    return dataclasses.field(default=0, metadata={"kind": "counter"})


@dataclasses.dataclass
class StreamFanoutStats(FanoutStats):
    """:class:`~syncws.fanout.FanoutStats`, and what recovery did.

    ``gaps`` and ``lost`` count what the reader found missing (a trimmed,
    lost or re-created stream), not the members whose ``since`` couldn't be
    recovered; ``delivered`` counts live messages only.

    Attributes:
        recoveries: subscriptions with since that got everything after it.
        recoveries_failed: subscriptions with since that could not, and got a gap first.
        recovered: messages sent from the history to members that subscribed with since.
    """

    recoveries: int = _counter()
    recoveries_failed: int = _counter()
    recovered: int = _counter()


# The entry fields: the epoch, the offset, the type (t: text, b: binary,
# j: join, l: leave), the data (for j and l: "<member key> <info>"), and the
# publish's token.
_EPOCH, _OFFSET, _TYPE, _DATA, _TOKEN = b"e", b"o", b"t", b"d", b"p"

_PUBLISH = """
-- KEYS: the stream, its meta hash. ARGV: a new epoch, history, max_age in ms
-- ('' for none), type, data, token, '1' on a retry.
if ARGV[7] == '1' then
  -- The first attempt may have been applied, its answer lost: look for it.
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])) do
    local fields, epoch, found = entry[2], nil, false
    for i = 1, #fields, 2 do
      if fields[i] == 'e' then epoch = fields[i + 1] end
      if fields[i] == 'p' and fields[i + 1] == ARGV[6] then found = true end
    end
    if found then return {epoch, entry[1]} end
  end
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch or redis.call('EXISTS', KEYS[1]) == 0 then
  -- A new stream, or one whose history or epoch was lost: a new epoch.
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0, 'largest', 0)
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*',
  'e', epoch, 'o', offset, 't', ARGV[4], 'd', ARGV[5], 'p', ARGV[6])
-- The largest message of this epoch: how many fit in a page of recovery.
if #ARGV[5] > tonumber(redis.call('HGET', KEYS[2], 'largest') or 0) then
  redis.call('HSET', KEYS[2], 'largest', #ARGV[5])
end
if ARGV[3] ~= '' then
  local ms = tonumber(string.match(id, '^(%d+)'))
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', ms - tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {epoch, id}
"""

_PRESENT = """
-- KEYS: a presence set. ARGV: presence_ttl in ms, then members to renew.
-- Redis's clock, not each process's: expiry means the same to all.
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
"""

_WHO = """
-- KEYS: a presence set. The members that haven't expired.
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

# An id given to members: "<epoch>:<ms>-<seq>". Hostile input when it comes
# back as since: anything else is not an id, and neither is a part beyond
# what a Redis stream id holds (64 bits), which Redis refuses.
_ID = re.compile(r"([0-9a-f]{12}):([0-9]{1,20})-([0-9]{1,20})")
_MAX_ID_PART = 2**64 - 1

# Entries read per stream by one XREAD, and per page of a recovery.
_READ_COUNT = 500
_PAGE = 200
# And the most bytes of messages in a page, going by the largest message of
# the stream: a recovering member that doesn't read holds its page for as
# long as each send may wait (timeout), and peers choose how many recover at
# once and how large the history's messages are, so a count alone would let
# them choose the memory each member holds.
_PAGE_BYTES = 2**20

# How long the reader's wake-up stream lives after its last use.
_WAKE_TTL_MS = 60_000


def _stream_id(text: str) -> Tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


def _streams_read(reply: Any) -> List[Tuple[bytes, List[Any]]]:
    """XREAD's reply as ``(key, entries)`` pairs, in whichever shape redis-py gave it.

    The URL picks the shape (``protocol=3``, ``legacy_responses=false``): a
    list of ``[key, entries]`` (RESP2), a dict of key to entries (the
    unified shape), or of key to ``[entries]`` (RESP3, legacy).
    """
    if not isinstance(reply, dict):
        return [(key, entries) for key, entries in reply or ()]
    return [
        (key, entries[0] if entries and isinstance(entries[0], list) else entries)
        for key, entries in reply.items()
    ]


class _Position:
    """Where the reader stands in one stream; changed under the fan-out's lock.

    A position is made when a channel gets its first local member and
    dropped when it loses its last; only the reader thread moves it.
    """

    __slots__ = ("last_id", "epoch", "offset", "made")

    def __init__(
        self, last_id: Optional[str], epoch: Optional[str], offset: Optional[int], made: Optional[float] = None
    ) -> None:
        # The last entry delivered (or the stream's end when the position
        # was made; "0-0" for a stream that didn't exist); None until
        # Redis could be asked.
        self.last_id = last_id
        self.epoch = epoch  # of that entry; None: no entry seen yet
        self.offset = offset  # of that entry; None: unknown, no check on the next one
        # When it was made (time.monotonic(), now by default): an unplaced
        # position is placed before every entry added since.
        self.made = time.monotonic() if made is None else made

    @property
    def placed(self) -> bool:
        return self.last_id is not None


class _Target(NamedTuple):
    """A ``since`` that is an id."""

    epoch: str
    id: str
    key: Tuple[int, int]  # the stream id, comparable


def _target(since: str) -> Optional[_Target]:
    match = _ID.fullmatch(since)
    if match is None:
        return None
    epoch, ms, seq = match.groups()
    key = int(ms), int(seq)
    if max(key) > _MAX_ID_PART:
        return None
    return _Target(epoch, f"{ms}-{seq}", key)


class _Presence(NamedTuple):
    """A join or leave to apply: the presence set, then an entry of the stream."""

    channel: str
    element: str  # "<member key> <info>"
    joined: bool
    token: str  # the entry's: applied again after a lost answer, it is added once


class _Entry(NamedTuple):
    """A stream entry written by :meth:`RedisStreamFanout.publish`."""

    id: str
    epoch: str
    offset: int
    event: Union[Message, PresenceEvent]


def _entry(channel: str, raw_id: bytes, fields: Dict[bytes, bytes]) -> Optional[_Entry]:
    """Parse an entry; ``None`` for one that another program wrote."""
    try:
        entry_id = raw_id.decode()
        epoch = fields[_EPOCH].decode()
        offset = int(fields[_OFFSET])
        kind = fields[_TYPE]
        data = fields[_DATA]
        public_id = f"{epoch}:{entry_id}"
        event: Union[Message, PresenceEvent]
        if kind == b"t":
            event = Message(channel, public_id, data.decode())
        elif kind == b"b":
            event = Message(channel, public_id, data)
        elif kind in (b"j", b"l"):
            member, _, info = data.decode().partition(" ")
            event = PresenceEvent(channel, public_id, kind == b"j", member, info)
        else:
            return None
    except (KeyError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return _Entry(entry_id, epoch, offset, event)


class RedisStreamFanout(Fanout):
    """Fan-out across processes over Redis Streams, with history and recovery.

    Every process that shares ``url`` (and ``prefix``) shares the channels.
    Needs Redis 6.2 or later; use one with ``appendonly yes`` for messages
    to outlive a Redis restart, and ``appendfsync always`` for them to
    outlive its crash. See the module docstring for how it works,
    and docs/deployment.rst for what can still be lost.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://``,
            ``unix://``).
        history: the messages (and presence events) each channel keeps, the
            newest.
        max_age: seconds a message is kept at most; a channel's keys expire
            this long after its last message. ``None``: kept until pushed
            out by ``history`` newer ones, and the keys stay.
        encode: what a member is sent for each :data:`Event` (``None``:
            nothing); called once per event, not per member, from the reader
            thread, and from the thread of a :meth:`subscribe` that recovers.
            Default :func:`plain`.
        prefix: put before every key in Redis.
        timeout: as for :class:`~syncws.fanout.Fanout`; also bounds each
            Redis command and connection attempt, and how long
            :meth:`subscribe` waits for Redis or for this process's reader.
        max_pending: as for :class:`~syncws.fanout.Fanout`.
        max_pending_bytes: as for :class:`~syncws.fanout.Fanout`.
        on_failure: as for :class:`~syncws.fanout.Fanout`.
        on_gap: called with a :class:`~syncws.fanout.Gap` when the reader
            finds messages missing (from the reader thread; keep it short).
        ping_interval: the longest an ``XREAD`` blocks: the reader hears
            from Redis at least this often.
        ping_timeout: seconds past ``ping_interval`` without an answer
            before the reader's connection is considered dead.
        reconnect_delay: the delay before the second attempt to reconnect
            (the first is immediate), doubled up to ``max_reconnect_delay``.
        max_reconnect_delay: the longest delay between attempts.
        publish_timeout: seconds :meth:`publish` keeps retrying while Redis
            is unreachable before it raises :exc:`~syncws.PublishError`; 0
            raises at the first failure.
        presence: keep who is where (:meth:`presence`) and publish joins and
            leaves (:class:`PresenceEvent`).
        presence_ttl: seconds after which a member that no process renews
            (its process died) is gone from :meth:`presence`.
        max_connections: the most connections for commands, besides the
            reader's.

    Raises:
        ImportError: redis-py isn't installed (``syncws[redis]``).
        ValueError: a limit is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        history: int = 1000,
        max_age: Optional[float] = None,
        encode: Encoder = plain,
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
        presence: bool = False,
        presence_ttl: float = 30.0,
        max_connections: int = 16,
    ) -> None:
        redis = import_redis("syncws.streams.RedisStreamFanout")
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        check_durations(
            ping_interval=ping_interval, ping_timeout=ping_timeout, reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay, publish_timeout=publish_timeout, presence_ttl=presence_ttl,
            **({} if max_age is None else {"max_age": max_age}),
        )
        if max_age is not None and max_age < 0.001:
            raise ValueError(f"max_age must be at least 0.001 seconds, got {max_age}")
        if presence_ttl < 0.003:
            raise ValueError(f"presence_ttl must be at least 0.003 seconds, got {presence_ttl}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.url = url
        self.history = history
        self.max_age = max_age
        self.encode = encode
        self.prefix = prefix
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.publish_timeout = publish_timeout
        self.presence_enabled = presence
        self.presence_ttl = presence_ttl
        self.max_connections = max_connections
        self._redis = redis
        super().__init__(  # calls _start_fresh()
            timeout=timeout, max_pending=max_pending, max_pending_bytes=max_pending_bytes, on_failure=on_failure
        )
        self.on_gap = on_gap

    def _start_fresh(self) -> None:
        super()._start_fresh()
        self._stream_counts = StreamFanoutStats()
        self._counts = self._stream_counts
        redis = self._redis
        # New clients after a fork: the parent's connections are the
        # parent's. The reader's blocks for up to ping_interval.
        pool = redis.BlockingConnectionPool.from_url(
            self.url, max_connections=self.max_connections, **client_options(redis, self.timeout)
        )
        pool.timeout = self.timeout  # waiting for a free connection
        self._client = redis.Redis(connection_pool=pool)
        self._reader_client = redis.Redis.from_url(
            self.url, **client_options(redis, self.ping_interval + self.ping_timeout)
        )
        self._publish_script = self._client.register_script(_PUBLISH)
        self._present_script = self._client.register_script(_PRESENT)
        self._who_script = self._client.register_script(_WHO)
        # Unique per process and instance (forks included): the publish
        # tokens, the presence member keys, the wake-up stream.
        self._token = secrets.token_hex(6)
        self._numbers = itertools.count(1)  # next() is atomic: tokens, member keys
        self._wake_key = f"{self.prefix}w:{self._token}"
        self._wake_id = "0-0"  # reader thread only
        # Under _lock: channel -> the reader's position in its stream.
        self._positions: Dict[str, _Position] = {}
        # The reader's link, under _lock. _link_down: the last attempt to
        # reach Redis failed (subscribe() doesn't wait then); _down_since:
        # when the connection was lost, until it is back. _changed is
        # notified when a position moves or the link changes.
        self._link_down = False
        self._down_since: Optional[float] = None
        self._changed = threading.Condition(self._lock)
        # Under _lock: channel -> connection -> its presence element
        # ("<member key> <info>").
        self._present: Dict[str, Dict[WebSocketCommonProtocol, str]] = {}
        # Joins and leaves for the presence thread: (channel, element, joined).
        self._presence_queue: "queue.SimpleQueue[Optional[_Presence]]" = queue.SimpleQueue()
        self._stop = threading.Event()
        # Started by the first subscribe(): a process that only publishes
        # needs none.
        self._reader: Optional[threading.Thread] = None
        self._presence_thread: Optional[threading.Thread] = None

    @property
    def stats(self) -> StreamFanoutStats:
        """The counters and gauges of this fan-out, as of now (a new snapshot)."""
        return cast(StreamFanoutStats, super().stats)

    # -- keys -------------------------------------------------------------------

    def _key(self, kind: str, channel: str) -> str:
        """The key of ``channel``'s stream (``s``), meta hash (``m``) or presence set (``p``).

        Raises:
            ValueError: ``channel`` can't be encoded in UTF-8 (a lone surrogate).
        """
        try:
            channel.encode()
        except UnicodeEncodeError:
            raise ValueError(f"channel {channel!r} can't be encoded in UTF-8") from None
        return f"{self.prefix}{kind}:{channel}"

    # -- publishing -------------------------------------------------------------

    def publish(self, channel: str, message: Data) -> str:
        """Append ``message`` to ``channel``'s stream, for every process's members.

        While Redis is unreachable, retries as soon as it answers, for up to
        ``publish_timeout`` seconds (each attempt bounded by ``timeout``). A
        retry first looks for the first attempt in the stream: a message
        that reached Redis after all isn't added twice.

        Args:
            channel: the channel.
            message: ``str`` or bytes-like.

        Returns:
            The message's id, as members get it.

        Raises:
            PublishError: Redis couldn't be reached within
                ``publish_timeout`` or refused the command (the message is
                not sent).
            TypeError: ``message`` is neither ``str`` nor bytes-like, or
                ``channel`` isn't a ``str``.
            ValueError: ``channel`` can't be encoded in UTF-8.
        """
        self._check_channel(channel)
        message = self._checked_message(message)
        if isinstance(message, str):
            kind, data = "t", message.encode()
        else:
            kind, data = "b", message
        message_id = self._append(channel, kind, data, self._new_token(), self.publish_timeout)
        with self._lock:
            self._counts.published += 1
        return message_id

    def _append(self, channel: str, kind: str, data: bytes, token: str, patience: float, retry: bool = False) -> str:
        """Run the publish script, retrying for ``patience`` seconds; the entry's public id.

        ``token`` is unique to one entry: a retry (``retry``, or any attempt
        after the first) first looks for it, so that an entry is added once.

        Raises:
            PublishError: Redis couldn't be reached within ``patience``, or
                refused the command.
        """
        keys = [self._key("s", channel), self._key("m", channel)]
        max_age = "" if self.max_age is None else str(max(1, round(self.max_age * 1000)))
        deadline = time.monotonic() + patience
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while True:
            try:
                epoch, entry_id = self._publish_script(
                    keys=keys, args=[secrets.token_hex(6), self.history, max_age, kind, data, token, "1" if retry else "0"]
                )
                return f"{epoch.decode()}:{entry_id.decode()}"
            except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
                # A timed-out attempt may have been applied: the retry looks.
                retry = True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    self._publish_failed(channel, str(exc), exc, patience)
                self._stop.wait(min(backoff.next(), remaining))
            except self._redis.RedisError as exc:  # refused (a key of another type...): retrying won't help
                self._publish_failed(channel, str(exc), exc, patience)

    def _publish_failed(self, channel: str, why: str, cause: BaseException, patience: float) -> NoReturn:
        with self._lock:
            self._counts.publish_errors += 1
        within = f" within {patience} s" if patience > 0 else ""
        raise PublishError(f"cannot publish to {channel!r} on {redact_uri(self.url)}{within}: {why}") from cause

    # -- membership ---------------------------------------------------------------

    def subscribe(
        self, channel: str, connection: WebSocketCommonProtocol, since: Optional[str] = None, info: str = ""
    ) -> bool:
        """Make ``connection`` a member of ``channel``; with ``since``, send it what it missed first.

        Without ``since``, the member gets the messages that come after its
        subscription. With ``since`` (an id a member was given), this call
        first sends the connection every message of the history after that
        id, in order, then the member gets the live ones: no gap, no
        duplicate. When that can't be done (``since`` is of another epoch,
        older than the history, or not an id), the connection is sent
        ``encode(Gap)`` first, then what the history holds, then the live
        messages. ``since=""`` sends the whole history first.

        Blocks while it sends (each send bounded by ``timeout``), and while
        Redis is unreachable, up to ``timeout``, when ``since`` is given (it
        can't be recovered without Redis; nothing is published meanwhile).
        A connection that is already a member of ``channel`` stays one;
        ``since`` is then ignored.

        Args:
            channel: the channel (room) name.
            connection: an open connection.
            since: the id of the last message the client had, ``""`` for
                the whole history, or ``None``.
            info: with ``presence=True``, what :meth:`presence` and
                :class:`PresenceEvent` say of this member (a user name).

        Returns:
            ``True`` once the member is live (this process reads the
            channel's stream) and, with ``since``, got everything after it;
            ``False`` when Redis couldn't be reached (the membership stands:
            what is published from this call on reaches it once this
            process's reader is back), or ``since`` couldn't be recovered
            (the member got ``encode(Gap)`` first).

        Raises:
            RuntimeError: the fan-out is closed.
            TypeError: ``channel`` or ``since`` isn't a ``str``.
            ValueError: ``channel`` can't be encoded in UTF-8.
        """
        self._check_channel(channel)
        if since is not None and not isinstance(since, str):
            raise TypeError(f"since must be a str, got {type(since).__name__}")
        if not isinstance(info, str):
            raise TypeError(f"info must be a str, got {type(info).__name__}")
        stream = self._key("s", channel)
        target = _target(since) if since else None
        deadline = time.monotonic() + self._wait_limit
        checked = False  # whether a target ahead of the reader was looked up
        new = False  # whether this call made the channel's position
        with self._lock:
            self._check_open()
            self._start_threads()
            known = self._members.get(connection)
            if known is not None and channel in known.channels:
                return self._positions[channel].placed
            while True:
                self._check_open()
                position = self._positions.get(channel)
                if position is None:
                    fresh = self._place(channel)  # the lock is released meanwhile
                    if channel not in self._positions:
                        self._positions[channel] = fresh
                        new = True
                    continue
                if since is None:
                    break
                if target is not None and self._ahead(target, position) and not checked:
                    checked = True
                    if not self._unlocked(self._exists, stream, target):
                        target = None  # not an id of this stream: it can't be recovered
                    continue
                ready = self._ready_to_recover(position, target)
                if ready() or time.monotonic() >= deadline:
                    break  # ready, or recover what can be without waiting longer
                self._changed.wait_for(
                    lambda: ready() or self._positions.get(channel) is not position or self._closed,
                    deadline - time.monotonic(),
                )
            member = self._join(channel, connection)
            if since is not None:
                self._hold(member)
            start = (position.epoch, position.last_id)
            element = self._mark_present(channel, connection, info)
            placed = position.placed
        if new:
            self._send_wake()
        if element is not None:
            self._announce(_Presence(channel, element, True, self._new_token()))
        if since is None:
            return placed
        try:
            return self._recover(member, channel, since, target, start)
        finally:
            self._release(member)

    @property
    def _wait_limit(self) -> float:
        """How long a subscribe() waits for Redis or the reader."""
        return self.timeout if self.timeout is not None else 10.0

    def _ready_to_recover(self, position: _Position, target: Optional[_Target]) -> Callable[[], bool]:
        """What must hold before a recovery starts: the reader placed in the stream, and past ``target``.

        Placed: what to replay ends at the position. Past ``target``: an
        id seen through another process's reader, ahead of this one's, is
        not sent again when this reader reaches it.
        """
        return lambda: position.placed and (target is None or not self._ahead(target, position))

    def _unlocked(self, function: Callable[..., Any], *args: Any) -> Any:
        """Call ``function`` with ``_lock`` released (it was held)."""
        self._lock.release()
        try:
            return function(*args)
        finally:
            self._lock.acquire()

    def _place(self, channel: str) -> _Position:
        """A new position at the end of ``channel``'s stream (``_lock`` held, released meanwhile).

        Unplaced when Redis can't be reached: the reader places it when back,
        before what was added since this look began (a failing one may take
        ``timeout``, while other processes publish).
        """
        if self._link_down:
            return _Position(None, None, None)
        asked = time.monotonic()
        try:
            last = self._unlocked(self._client.xrevrange, self._key("s", channel), "+", "-", 1)
        except self._redis.RedisError as exc:
            logger.debug("cannot read the end of %r on %s: %s", channel, redact_uri(self.url), exc)
            return _Position(None, None, None, made=asked)
        return self._position_at(channel, last)

    def _position_at(self, channel: str, last: List[Tuple[bytes, Dict[bytes, bytes]]]) -> _Position:
        """A position after ``last``, the reply of ``XREVRANGE stream + - COUNT 1``."""
        if not last:
            return _Position("0-0", None, None)
        entry = _entry(channel, *last[0])
        if entry is None:  # another program's entry: start after it, check nothing
            return _Position(last[0][0].decode(), None, None)
        return _Position(entry.id, entry.epoch, entry.offset)

    @staticmethod
    def _ahead(target: _Target, position: _Position) -> bool:
        """Whether ``target`` is an entry of ``position``'s epoch that the reader hasn't reached."""
        return (
            position.last_id is not None
            and target.epoch == position.epoch
            and target.key > _stream_id(position.last_id)
        )

    def _exists(self, stream: str, target: _Target) -> bool:
        """Whether ``target`` is an entry of ``stream`` (False when Redis can't say)."""
        try:
            entries = self._client.xrange(stream, target.id, target.id, 1)
        except self._redis.RedisError:
            return False
        return bool(entries) and entries[0][1].get(_EPOCH) == target.epoch.encode()

    def _left(self, connection: WebSocketCommonProtocol, channel: str, emptied: bool) -> None:
        if emptied:
            # The reader stops reading it; a member that joins later gets a
            # new position at the stream's end then.
            self._positions.pop(channel, None)
            self._changed.notify_all()  # a subscribe() waiting on it places a new one
        element = self._present.get(channel, {}).pop(connection, None)
        if element is not None:
            if not self._present[channel]:
                del self._present[channel]
            self._presence_queue.put(_Presence(channel, element, False, self._new_token()))

    # -- recovery -------------------------------------------------------------------

    def _recover(
        self,
        member: _Member,
        channel: str,
        since: str,
        target: Optional[_Target],
        start: Tuple[Optional[str], Optional[str]],
    ) -> bool:
        """Send ``member`` (held) what followed ``since``, up to ``start``; whether all of it was.

        ``start`` is the reader's position (epoch, id) when the member
        joined: what follows it reaches the member live.
        """
        epoch, end = start
        stream = self._key("s", channel)
        after: Optional[str] = None  # replay the entries after this id (None: from the first)
        if end is None:  # Redis unreachable all this time: nothing can be read
            recovered = False
        elif since == "":
            recovered = True
        elif target is None or target.epoch != epoch:
            recovered = False
        elif target.id == end:
            recovered, after = True, end
        else:
            first = self._read(stream, target.id, end, 1)
            if first is None:
                recovered, end = False, None  # Redis went away: no history to send either
            else:
                recovered = bool(first) and first[0][0].decode() == target.id and first[0][1].get(_EPOCH) == epoch.encode()
            after = target.id if recovered else None
        with self._lock:
            if recovered:
                self._stream_counts.recoveries += 1
            else:
                self._stream_counts.recoveries_failed += 1
        if not recovered and not self._send(member, Gap((channel,), since=since or None)):
            return False
        if end is None or epoch is None or after == end:
            return recovered
        count = self._page_size(channel)
        while True:
            page = self._read(stream, f"({after}" if after else "-", end, count)
            if page is None:  # Redis went away: the member misses the rest, and is told
                self._send(member, Gap((channel,), since=f"{epoch}:{after}" if after else since or None))
                return False
            for raw_id, fields in page:
                after = raw_id.decode()
                entry = _entry(channel, raw_id, fields)
                if entry is None:
                    continue
                if entry.epoch != epoch:
                    return recovered  # the stream was made again: the reader reports it
                if not self._send(member, entry.event, recovered=True):
                    return False
            if len(page) < count:
                return recovered

    def _page_size(self, channel: str) -> int:
        """Entries per page of a recovery: what :data:`_PAGE_BYTES` holds of the stream's largest message.

        1 to :data:`_PAGE`; 1 when the largest is unknown (Redis away, or
        a stream that an older syncws wrote, until its next message).
        """
        try:
            largest = self._client.hget(self._key("m", channel), "largest")
        except self._redis.RedisError:
            return 1
        if largest is None:
            return 1
        return max(1, min(_PAGE, _PAGE_BYTES // max(1, int(largest))))

    def _read(self, stream: str, first: str, last: str, count: int) -> Optional[List[Any]]:
        """``XRANGE stream first last COUNT count``, retried within ``timeout``; ``None`` if Redis stays away."""
        deadline = time.monotonic() + (self.timeout if self.timeout is not None else 3600)
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while True:
            try:
                return cast(List[Any], self._client.xrange(stream, first, last, count))
            except self._redis.RedisError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set():
                    logger.warning("cannot read the history of %r on %s: %s", stream, redact_uri(self.url), exc)
                    return None
                self._stop.wait(min(backoff.next(), remaining))

    def _send(self, member: _Member, event: Event, recovered: bool = False) -> bool:
        """Send ``encode(event)`` to a held member, from this thread; whether it is still a member."""
        data = self._encoded(event)
        if member.gone:
            return False
        if data is None:
            return True
        try:
            member.connection.send(data, timeout=self.timeout)
        except Exception as exc:
            self._send_failed(member, exc)
            return False
        if recovered:
            with self._lock:
                self._stream_counts.recovered += 1
        return True

    def _encoded(self, event: Event) -> Optional[Data]:
        try:
            return self.encode(event)
        except Exception:
            logger.exception("encode raised on %r; not sent", type(event).__name__)
            return None

    # -- the reader thread ------------------------------------------------------------

    def _start_threads(self) -> None:
        """Start the reader (and the presence thread) if not yet running (lock held)."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read_streams, name="syncws-streams-reader", daemon=True)
            self._reader.start()
        if self.presence_enabled and self._presence_thread is None:
            self._presence_thread = threading.Thread(
                target=self._keep_presence, name="syncws-streams-presence", daemon=True
            )
            self._presence_thread.start()

    def _send_wake(self) -> None:
        """Make the reader's XREAD return, so that it reads a new stream at once."""
        try:
            with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": "1"}, maxlen=1)
                pipe.pexpire(self._wake_key, _WAKE_TTL_MS)
                pipe.execute()
        except self._redis.RedisError as exc:  # the reader sees the new stream within ping_interval
            logger.debug("cannot wake the reader: %s", exc)

    def _connected(self) -> bool:
        return self._down_since is None

    def _read_streams(self) -> None:
        """The reader thread: connect, read every stream from its position, reconnect."""
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while not self._stop.is_set():
            try:
                self._reader_client.ping()  # connects, or raises
                self._place_all()
                with self._lock:
                    self._link_down = False
                    outage = None if self._down_since is None else time.monotonic() - self._down_since
                    self._down_since = None
                    streams = len(self._positions)
                    if outage is not None:
                        self._counts.reconnects += 1
                    self._changed.notify_all()
                if outage is not None:
                    logger.warning(
                        "redis stream reader back on %s after %.2f s: reading %d streams from where it stopped",
                        redact_uri(self.url), outage, streams,
                    )
                backoff.reset()
                while not self._stop.is_set():
                    self._read_once()
                return  # closed
            except Exception as exc:
                # Connection errors are expected; anything else is a bug,
                # logged with its traceback, but the thread carries on:
                # without it nothing reaches this process.
                if not isinstance(exc, (self._redis.RedisError, OSError)):
                    logger.exception("redis stream reader failed; reconnecting")
                with self._lock:
                    first = self._down_since is None
                    if first:
                        self._down_since = time.monotonic()
                    self._link_down = True
                    self._changed.notify_all()  # subscribe() calls stop waiting
                if first:
                    logger.warning(
                        "redis stream reader lost %s: %s; reconnecting (nothing is lost: it resumes where it stopped)",
                        redact_uri(self.url), exc,
                    )
                else:
                    logger.debug("reconnecting to %s failed: %s", redact_uri(self.url), exc)
            self._stop.wait(backoff.next())

    def _place_all(self) -> None:
        """Place the positions made while Redis was unreachable, before every entry added since they were made.

        Not at the streams' ends now: an entry added after a member joined,
        while this reader was away (by another process, or by this one
        while only the reader timed out), would be skipped. Stream ids
        count milliseconds of Redis's clock: a position made ``age``
        seconds ago is placed after the last entry older than Redis's
        ``TIME`` minus ``age``, measured once ``TIME`` has answered, so
        never later than the moment it was made.
        """
        with self._lock:
            unplaced = {channel: p.made for channel, p in self._positions.items() if not p.placed}
        if not unplaced:
            return
        seconds, microseconds = self._reader_client.time()
        answered = time.monotonic()
        now_ms = seconds * 1000 + microseconds // 1000
        with self._reader_client.pipeline(transaction=False) as pipe:
            for channel, made in unplaced.items():
                made_ms = now_ms - int((answered - made) * 1000) - 1
                pipe.xrevrange(self._key("s", channel), f"({max(0, made_ms)}-0", "-", 1)
            befores = pipe.execute()
        with self._lock:
            for channel, last in zip(unplaced, befores):
                position = self._positions.get(channel)
                if position is not None and not position.placed:
                    placed = self._position_at(channel, last)
                    position.last_id, position.epoch, position.offset = placed.last_id, placed.epoch, placed.offset
            self._changed.notify_all()

    def _read_once(self) -> None:
        """One XREAD over every stream with local members, and its delivery."""
        with self._lock:
            positions = {channel: p for channel, p in self._positions.items() if p.placed}
            unplaced = len(positions) < len(self._positions)
        if unplaced:
            self._place_all()
        streams: Dict[str, str] = {self._key("s", channel): cast(str, p.last_id) for channel, p in positions.items()}
        streams[self._wake_key] = self._wake_id
        reply = self._reader_client.xread(streams, count=_READ_COUNT, block=max(1, round(self.ping_interval * 1000)))
        prefix = len(self.prefix) + 2  # "s:"
        for raw_key, entries in _streams_read(reply):
            key = raw_key.decode()
            if key == self._wake_key:
                self._wake_id = entries[-1][0].decode()
                continue
            channel = key[prefix:]
            position = positions.get(channel)
            if position is not None:
                self._deliver_entries(channel, position, entries)

    def _deliver_entries(self, channel: str, position: _Position, entries: List[Any]) -> None:
        """Check, encode and deliver a batch of ``channel``'s entries, and move its position.

        Encoding happens without the lock (``encode`` is the application's);
        moving the position and filling the mailboxes happen in one locked
        step. The reader is the only thread that moves a position, so the
        one read here is still the one it checks against.
        """
        epoch, offset = position.epoch, position.offset
        last_id = cast(str, position.last_id)
        moves: List[Tuple[str, Optional[str], Optional[int], Optional[Data]]] = []
        gaps: List[Gap] = []
        for raw_id, fields in entries:
            entry = _entry(channel, raw_id, fields)
            if entry is None:
                logger.warning("skipping an entry of %r that syncws didn't write", channel)
                last_id = raw_id.decode()
                moves.append((last_id, epoch, offset, None))
                continue
            since = f"{epoch}:{last_id}" if epoch is not None else None
            if epoch is not None and entry.epoch != epoch:
                gap = Gap((channel,), since=since)
                gaps.append(gap)
                logger.warning(
                    "the stream of %r was made again (epoch %s, was %s): what followed %s may be lost",
                    channel, entry.epoch, epoch, last_id,
                )
                if entry.offset != 1:
                    # Earlier entries of the new stream may have ids at or
                    # before ours (another host's clock): read it all.
                    moves.append(("0-0", entry.epoch, None, self._encoded(gap)))
                    break
                moves.append((last_id, entry.epoch, None, self._encoded(gap)))
                offset = None
            elif offset is not None and entry.offset != offset + 1:
                lost = entry.offset - offset - 1 if entry.offset > offset else None
                gap = Gap((channel,), lost=lost, since=since)
                gaps.append(gap)
                logger.warning(
                    "%s messages of %r after %s are missing from its stream (%s)",
                    lost if lost is not None else "some", channel, since,
                    "trimmed before this process read them" if lost is not None else "Redis lost writes",
                )
                moves.append((last_id, epoch, offset, self._encoded(gap)))
            last_id, epoch, offset = entry.id, entry.epoch, entry.offset
            moves.append((last_id, epoch, offset, self._encoded(entry.event)))
        with self._delivering() as enqueue:
            if self._positions.get(channel) is not position:
                return  # its last member left meanwhile
            for last_id, epoch, offset, data in moves:
                position.last_id, position.epoch, position.offset = last_id, epoch, offset
                if data is not None:
                    enqueue(channel, data)
            self._changed.notify_all()
        for gap in gaps:
            self._gap(gap)

    # -- presence ---------------------------------------------------------------

    def _mark_present(self, channel: str, connection: WebSocketCommonProtocol, info: str) -> Optional[str]:
        """Note ``connection`` present in ``channel`` (lock held); its presence element."""
        if not self.presence_enabled:
            return None
        if not isinstance(info, str):
            raise TypeError(f"info must be a str, got {type(info).__name__}")
        element = f"{self._token}-{next(self._numbers)} {info}"
        self._present.setdefault(channel, {})[connection] = element
        return element

    def _new_token(self) -> str:
        """A token for one entry of a stream: unique to this process and entry."""
        return f"{self._token}:{next(self._numbers)}"

    def _announce(self, change: _Presence) -> None:
        """Apply a join or leave now, or leave it to the presence thread if Redis is away."""
        try:
            self._update_presence(change, retry=False)
        except PublishError as exc:
            logger.debug("presence of %r not updated yet: %s", change.channel, exc)
            self._presence_queue.put(change)

    def _update_presence(self, change: _Presence, retry: bool) -> None:
        """Add or remove a presence element, and append the join or leave to the stream (one attempt).

        Raises:
            PublishError: Redis couldn't be reached, or refused.
        """
        key = self._key("p", change.channel)
        try:
            if change.joined:
                self._present_script(keys=[key], args=[self._presence_ttl_ms, change.element])
            else:
                self._client.zrem(key, change.element)
        except self._redis.RedisError as exc:
            raise PublishError(f"cannot update the presence of {change.channel!r}: {exc}") from exc
        kind = "j" if change.joined else "l"
        self._append(change.channel, kind, change.element.encode(), change.token, 0, retry)

    @property
    def _presence_ttl_ms(self) -> int:
        return max(1, round(self.presence_ttl * 1000))

    def _keep_presence(self) -> None:
        """The presence thread: apply joins and leaves that waited, renew this process's members.

        Until ``close()`` puts ``None`` on the queue; then it applies what is
        left, once each, and ends.
        """
        interval = self.presence_ttl / 3
        next_renewal = time.monotonic() + interval
        waiting: List[_Presence] = []  # not applied yet: Redis was away
        closing = False
        while not closing:
            try:
                change = self._presence_queue.get(timeout=max(0.0, next_renewal - time.monotonic()))
            except queue.Empty:
                change = None
            else:
                if change is None:
                    closing = True
            if change is not None:
                waiting.append(change)
            try:
                while waiting:
                    self._update_presence(waiting[0], retry=True)
                    waiting.pop(0)
                if time.monotonic() >= next_renewal and not closing:
                    next_renewal = time.monotonic() + interval
                    self._renew_presence()
            except (PublishError, self._redis.RedisError) as exc:
                logger.debug("presence not renewed: %s", exc)
                self._stop.wait(min(interval, self.max_reconnect_delay))

    def _renew_presence(self) -> None:
        with self._lock:
            present = {channel: list(elements.values()) for channel, elements in self._present.items()}
        with self._client.pipeline(transaction=False) as pipe:
            for channel, elements in present.items():
                self._present_script(keys=[self._key("p", channel)], args=[self._presence_ttl_ms, *elements], client=pipe)
            pipe.execute()

    def presence(self, channel: str) -> Dict[str, str]:
        """Who is in ``channel``, in every process (``presence=True``).

        A member of a process that died stays listed until ``presence_ttl``
        has passed.

        Args:
            channel: the channel.

        Returns:
            Each member's key (unique across processes) mapped to its
            ``info``.

        Raises:
            RuntimeError: presence is off.
            ConnectionError: Redis couldn't be reached within ``timeout``.
        """
        if not self.presence_enabled:
            raise RuntimeError("presence is off: make the fan-out with presence=True")
        try:
            elements = self._who_script(keys=[self._key("p", channel)])
        except self._redis.RedisError as exc:
            raise ConnectionError(f"cannot read the presence of {channel!r} on {redact_uri(self.url)}: {exc}") from exc
        members = {}
        for element in elements:
            key, _, info = element.decode().partition(" ")
            members[key] = info
        return members

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Stop the threads, remove this process's members from presence, close Redis connections.

        Idempotent. Messages still in mailboxes are dropped.
        """
        self._stop.set()
        with self._lock:
            reader, presence = self._reader, self._presence_thread
            self._changed.notify_all()
        if reader is not None:
            self._send_wake()
            reader.join()
        super().close()  # nobody is a member any more: leaves are queued
        if presence is not None:
            with self._lock:
                for channel, elements in self._present.items():
                    for element in elements.values():
                        self._presence_queue.put(_Presence(channel, element, False, self._new_token()))
                self._present.clear()
            self._presence_queue.put(None)
            presence.join()
        self._client.close()
        self._reader_client.close()
