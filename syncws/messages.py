"""The bounded queue that hands received messages and fragments from the
reader thread to ``recv()``, and the assembly of fragments into messages.

Theory of operation: the reader thread is the only producer of a
:class:`MessageQueue`. Its items are whole messages (``str`` or ``bytes``)
and the :class:`~syncws.core.Fragment` items of fragmented messages, so that
``recv_streaming()`` yields fragments as they arrive. When ``high`` items are
waiting, :meth:`~MessageQueue.put` blocks until consumers have brought them
down to ``low``, so the reader thread stops reading the socket and TCP flow
control pushes back on the peer: memory stays bounded by about ``high``
frames. :class:`Assembler` is the one consumer: it joins fragments for
``recv()`` and refuses a second concurrent caller.

The hand-off is a :class:`queue.SimpleQueue`, whose ``put`` and ``get`` are
implemented in C: a thread wake-up is the dominant cost of a round trip, and
this is the cheapest one CPython offers. With the C speedups it is their
twin, whose ``get`` passes the interpreter lock's gate on its way back from
a wait (:data:`SimpleQueue`). The bound is kept beside it: the reader
checks the size before each put and, only when the queue is full, waits on
an event that consumers set once they have taken a message.

Two events lift the bound. When the connection closes, the reader must keep
reading to see the peer's close frame, so :meth:`unbound` lets it append
without waiting (the connection's core drops data received after our close
frame, so only what was parsed before it can still come). When the reader
thread ends, :meth:`close` appends an end marker: consumers get every item
that was queued before it, then :exc:`QueueClosed`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .accelerator import SPEEDUPS
from .core import BytesLike, Data, Fragment
from .exceptions import ConcurrencyError

__all__ = ["MessageQueue", "QueueClosed", "Assembler", "Outgoing", "prepare_message"]


class QueueClosed(Exception):
    """Raised by :meth:`MessageQueue.get` once the queue is empty and closed."""


#: The queue's hand-off: :class:`queue.SimpleQueue`, or its twin from the C
#: speedups, whose ``get()`` passes the interpreter lock's gate on the way
#: back from a wait (see :doc:`design`).
SimpleQueue: Any = getattr(SPEEDUPS, "SimpleQueue", queue.SimpleQueue)

# Orders the making of a queue's room event (the reader, the first time
# it waits) against unbound(), close() and consumers looking for it after
# they lifted the bound or took a message: either the event is found and
# set, or the reader sees the change and doesn't wait. Without a GIL
# (free-threaded builds) nothing else orders those plain attribute
# accesses. Rare paths: one lock serves every queue.
_room_lock = threading.Lock()

# The end marker. A consumer that takes it puts it back for the next one, so
# it stays last in the queue for good.
_CLOSED = object()


class MessageQueue:
    """A FIFO of messages and fragments with a blocking, bounded :meth:`put`.

    Args:
        high: how many items may wait before :meth:`put` blocks; ``None`` or
            0 for no bound.
        low: once blocked, :meth:`put` waits until no more than this many
            items wait; ``high - 1`` by default.
    """

    __slots__ = (
        "_items", "_maxsize", "_low", "_bounded", "_closed", "_room", "put_waiting",
    )

    def __init__(self, high: Optional[int], low: Optional[int] = None) -> None:
        self._items: "queue.SimpleQueue[Any]" = SimpleQueue()
        self._maxsize = high or 0
        self._low = self._maxsize - 1 if low is None else low
        # Cleared once when the connection starts closing or the queue closes.
        self._bounded = self._maxsize > 0
        # Set by close(); read without a lock (a bool flips once).
        self._closed = False
        # Set by consumers (and unbound/close) to wake a reader waiting for
        # room. The reader clears it before it checks the size again, so a
        # wake-up can't be lost between the check and the wait. Made by the
        # reader the first time it waits: most queues never fill, and an
        # Event (a Condition, a lock and a deque) would weigh on every
        # connection (see docs/performance.rst#memory-per-connection). unbound() and close()
        # change _bounded before they look for it, both under _room_lock,
        # so a reader that makes it after they looked sees _bounded False
        # and doesn't wait.
        self._room: Optional[threading.Event] = None
        #: True while the reader thread waits in put(): the peer is alive and
        #: sending faster than the application consumes.
        self.put_waiting = False

    def __len__(self) -> int:
        size = self._items.qsize()
        return size - 1 if self._closed and size else size

    def put(self, item: Any) -> None:
        """Append a message, waiting while the queue is full.

        Called by the reader thread only.
        """
        if self._bounded and self._items.qsize() >= self._maxsize:
            room = self._room
            if room is None:
                with _room_lock:
                    room = self._room = threading.Event()
            self.put_waiting = True
            try:
                while self._bounded and self._items.qsize() > self._low:
                    room.clear()
                    # Checked again after the clear: a consumer that took a
                    # message in between has set the event, or will.
                    if self._bounded and self._items.qsize() > self._low:
                        room.wait()
            finally:
                self.put_waiting = False
        self._items.put(item)

    def put_all(self, items: Sequence[Any]) -> None:
        """Append messages in order, waiting while the queue is full.

        What :meth:`put` does for each, with one look at the size when all
        fit: the reader thread queues what one read brought. Consumers
        only ever make room, so the room counted stays true. Called by the
        reader thread only.
        """
        # self._items.put() each time, not a bound method made per call:
        # that costs more than the lookups it saves, for the one or two
        # messages a read brings.
        items_ = self._items
        if not self._bounded or items_.qsize() + len(items) <= self._maxsize:
            for item in items:
                items_.put(item)
            return
        # More than there is room for (a peer streaming small messages, a
        # read bringing dozens): as many as fit at once, then put(), which
        # waits for room, and again as many as fit.
        room = self._maxsize - items_.qsize()
        for item in items:
            if room > 0:
                items_.put(item)
                room -= 1
            else:
                self.put(item)
                room = self._maxsize - items_.qsize() if self._bounded else len(items)

    def get(self, timeout: Optional[float] = None) -> Any:
        """Take the oldest message. Safe to call from any thread.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes and
                0 (or less) only takes a message that is already there.

        Raises:
            TimeoutError: no message within ``timeout``.
            QueueClosed: the queue is empty and will stay so.
        """
        try:
            if timeout is None:
                item = self._items.get()
            elif timeout <= 0:
                item = self._items.get(block=False)
            else:
                item = self._items.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no message received within {timeout} seconds") from None
        if item is _CLOSED or self.put_waiting:
            self._taken(item)
        return item

    def _taken(self, item: Any) -> None:
        """What follows taking ``item``, when it is the end marker or the reader waits for room.

        Raises:
            QueueClosed: ``item`` is the end marker (put back for the next consumer).
        """
        if item is _CLOSED:
            self._items.put(_CLOSED)
            raise QueueClosed
        if self.put_waiting and self._items.qsize() <= self._low:
            self._wake_reader()

    def unbound(self) -> None:
        """Let :meth:`put` append without waiting from now on."""
        self._bounded = False
        self._wake_reader()

    def close(self) -> None:
        """Mark the end of the messages and wake every waiting consumer.

        Called by the reader thread, once, after its last :meth:`put`.
        """
        if self._closed:
            return
        self._closed = True
        self._bounded = False
        self._items.put(_CLOSED)
        self._wake_reader()

    def _wake_reader(self) -> None:
        """Wake the reader if it waits for room (or may: it made the event)."""
        with _room_lock:
            room = self._room
        if room is not None:
            room.set()


# Fragments shorter than this are joined while a message is assembled (see
# Assembler._add_partial): large beside what a piece costs of its own (its
# object's header and its slot in the list), small enough to copy at once.
_JOIN_BELOW = 4096


class Assembler:
    """What ``recv()`` and ``recv_streaming()`` do with the queue's items.

    One thread at a time may receive: a second concurrent caller gets
    :exc:`~syncws.ConcurrencyError`, since two threads sharing one
    connection's messages is a bug (each would get a random share). A
    fragmented message that a timeout interrupts is kept for the next call.

    Args:
        items: the queue the reader thread fills.
    """

    __slots__ = (
        "items", "_receiving", "_partial",
    )

    def __init__(self, items: MessageQueue) -> None:
        self.items = items
        # One token, taken by the thread inside recv() or recv_streaming()
        # and put back when it leaves; a thread that finds none raises. A
        # lock tried and never waited for, in effect: list.pop() and
        # list.append() are as atomic as acquire(False) and release(), and
        # cost a fifth as much (this runs for every message).
        self._receiving = [True]
        # Fragments of a message already taken when a timeout interrupted
        # recv(), for the next call.
        self._partial: List[Data] = []

    def _enter(self) -> None:
        try:
            self._receiving.pop()
        except IndexError:
            raise _concurrent_receive() from None

    def _leave(self) -> None:
        self._receiving.append(True)

    def get(self, timeout: Optional[float] = None, decode: Optional[bool] = None) -> Data:
        """Return the next whole message.

        Args:
            timeout: seconds to wait; ``None`` forever; 0 only what arrived.
            decode: ``None`` gives text as ``str`` and binary as ``bytes``;
                ``False`` gives text as UTF-8 ``bytes``; ``True`` decodes
                binary as UTF-8.

        Raises:
            TimeoutError: no whole message within ``timeout``.
            QueueClosed: no message will come any more.
            ConcurrencyError: another thread is receiving.
            UnicodeDecodeError: ``decode=True`` and a binary message isn't UTF-8.
        """
        receiving = self._receiving
        # _enter() and _leave(), inline, as this runs for every message
        # (tests/test_messages.py holds them to the methods stream() calls).
        try:
            receiving.pop()
        except IndexError:
            raise _concurrent_receive() from None
        try:
            if not self._partial:
                items = self.items
                if timeout is None:
                    # items.get(), inline (a deliberate copy of its common
                    # case, held to it by tests/test_messages.py): a Python
                    # call fewer for every message.
                    item = items._items.get()
                    if item is _CLOSED or items.put_waiting:
                        items._taken(item)
                else:
                    item = items.get(timeout)
                if type(item) is not Fragment:
                    return item if decode is None else _convert(item, decode)
                self._add_partial(item.data)
                if item.fin:
                    return _convert(self._take_partial(), decode)
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                item = self.items.get(remaining)
                self._add_partial(item.data)
                if item.fin:
                    return _convert(self._take_partial(), decode)
        finally:
            receiving.append(True)  # _leave(), inline

    def _add_partial(self, data: Data) -> None:
        """Keep a fragment of the message being assembled, joined to the one before if both are short.

        A peer may send a message in tiny fragments, one per read, or in
        empty ones, which ``max_size`` doesn't count: an object kept per
        fragment would hold many times ``max_size``, or memory without
        bound. Joined while short, no two pieces in a row are shorter than
        :data:`_JOIN_BELOW`, and a join copies less than twice that.
        """
        pieces = self._partial
        if pieces and len(data) < _JOIN_BELOW:
            last = pieces[-1]
            if len(last) < _JOIN_BELOW:
                pieces[-1] = last + data  # type: ignore[operator]
                return
        pieces.append(data)

    def _take_partial(self) -> Data:
        pieces = self._partial
        self._partial = []
        return pieces[0] if len(pieces) == 1 else pieces[0][:0].join(pieces)  # type: ignore[arg-type]

    def stream(self, timeout: Optional[float] = None, decode: Optional[bool] = None) -> Iterator[Data]:
        """Yield the fragments of the next message as they arrive.

        Args:
            timeout: seconds to wait for the message's first fragment.
            decode: as for :meth:`get`, per fragment.

        Raises:
            TimeoutError: no message within ``timeout``.
            QueueClosed: no message will come any more.
            ConcurrencyError: another thread is receiving.
        """
        self._enter()
        try:
            if self._partial:
                yield _convert(self._take_partial(), decode)
            else:
                item = self.items.get(timeout)
                if type(item) is not Fragment:
                    yield _convert(item, decode)
                    return
                yield _convert(item.data, decode)
                if item.fin:
                    return
            while True:
                item = self.items.get()
                yield _convert(item.data, decode)
                if item.fin:
                    return
        finally:
            self._leave()


def _concurrent_receive() -> ConcurrencyError:
    return ConcurrencyError(
        "another thread is already receiving on this connection: "
        "call recv() / recv_streaming() from one thread at a time"
    )


def _convert(data: Data, decode: Optional[bool]) -> Data:
    """Apply recv()'s ``decode`` argument to a message or fragment."""
    if decode is None:
        return data
    if decode and type(data) is bytes:
        return data.decode()
    if not decode and type(data) is str:
        return data.encode()
    return data


class Outgoing(NamedTuple):
    """What ``send()`` was given, ready for the core.

    Attributes:
        payload: the bytes of a message sent in one frame; ``None`` when
            ``fragments`` is set.
        text: whether it is a text message.
        fragments: for an iterable, its frames as ``(payload, fin)``.
    """

    payload: Optional[BytesLike]
    text: bool
    fragments: Optional[Iterator[Tuple[BytesLike, bool]]]


def prepare_message(message: Any, text: Optional[bool]) -> Outgoing:
    """Classify and encode what ``send()`` was given.

    Args:
        message: ``str``, a bytes-like object, or an iterable of either.
        text: ``send()``'s ``text`` argument: ``None`` follows the type.

    Returns:
        The message, ready to send. For an iterable, its first item is
        checked here, before anything is sent, so that a wrong type leaves
        the connection usable.

    Raises:
        TypeError: an unsupported type (or a dict, whose keys are never what
            was meant).
    """
    if isinstance(message, str):
        return Outgoing(message.encode(), text is not False, None)
    if isinstance(message, (bytes, bytearray, memoryview)):
        return Outgoing(_as_bytes(message), text is True, None)
    if isinstance(message, dict):
        raise TypeError("send() got a dict; send json.dumps(data) instead")
    if not isinstance(message, Iterable):
        raise TypeError(
            f"send() takes str, a bytes-like object or an iterable of them, "
            f"not {type(message).__name__}"
        )
    items = iter(message)
    first = next(items, _END)
    if first is _END:
        return Outgoing(None, False, iter(()))  # an empty iterable is no message
    first_is_str = isinstance(first, str)
    _fragment_payload(first, first_is_str, first)
    return Outgoing(None, first_is_str if text is None else text, _fragments(first, items, first_is_str))


# Marks the end of an iterable passed to send(); None could be an item.
_END = object()


def _fragments(first: Any, rest: Iterator[Any], text: bool) -> Iterator[Tuple[BytesLike, bool]]:
    """Yield ``(payload, fin)`` per item, reading one ahead to know the last."""
    item = first
    while True:
        payload = _fragment_payload(item, text, first)
        following = next(rest, _END)
        yield payload, following is _END
        if following is _END:
            return
        item = following


def _fragment_payload(fragment: Any, text: bool, first: Any) -> BytesLike:
    """The bytes of one item of a fragmented message, checking its type."""
    if text and isinstance(fragment, str):
        return fragment.encode()
    if not text and isinstance(fragment, (bytes, bytearray, memoryview)):
        return _as_bytes(fragment)
    if fragment is first:
        raise TypeError(
            f"send() takes an iterable of str or of bytes-likes, "
            f"not of {type(fragment).__name__}"
        )
    raise TypeError(
        f"a fragmented message mixes types: started with "
        f"{type(first).__name__}, then got {type(fragment).__name__}"
    )


def _as_bytes(data: BytesLike) -> BytesLike:
    """Give a bytes-like object whose ``len()`` counts bytes.

    A memoryview's ``len()`` counts the items of its first dimension: a view
    of wider items, or of several dimensions (whose ``len()`` counts rows),
    is copied, as a strided one is; a plain view of bytes is kept.
    """
    if isinstance(data, memoryview) and (data.itemsize != 1 or data.ndim != 1 or not data.c_contiguous):
        return data.tobytes()
    return data
