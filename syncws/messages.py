"""The bounded queue that hands whole messages from the reader thread to
``recv()``.

Theory of operation: the reader thread is the only producer; any number of
threads may consume. When ``maxsize`` messages are waiting, :meth:`put`
blocks, so the reader thread stops reading the socket and TCP flow control
pushes back on the peer: memory stays bounded by about ``maxsize`` messages.

The hand-off is a :class:`queue.SimpleQueue`, whose ``put`` and ``get`` are
implemented in C: a thread wake-up is the dominant cost of a round trip, and
this is the cheapest one CPython offers. The bound is kept beside it: the
reader checks the size before each put and, only when the queue is full,
waits on an event that consumers set once they have taken a message.

Two events lift the bound. While the connection closes, the reader must keep
reading to see the peer's close frame, so :meth:`unbound` lets it append
without waiting (for at most the closing timeout). When the reader thread
ends, :meth:`close` appends an end marker: consumers get every message that
was queued before it, then :exc:`QueueClosed`.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Optional

__all__ = ["MessageQueue", "QueueClosed"]


class QueueClosed(Exception):
    """Raised by :meth:`MessageQueue.get` once the queue is empty and closed."""


# The end marker. A consumer that takes it puts it back for the next one, so
# it stays last in the queue for good.
_CLOSED = object()


class MessageQueue:
    """A FIFO of messages with a blocking, bounded :meth:`put`.

    Args:
        maxsize: how many messages may wait before :meth:`put` blocks;
            ``None`` or 0 for no bound.
    """

    def __init__(self, maxsize: Optional[int]) -> None:
        self._items: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._maxsize = maxsize or 0
        # Cleared once when the connection starts closing or the queue closes.
        self._bounded = self._maxsize > 0
        # Set by close(); read without a lock (a bool flips once).
        self._closed = False
        # Set by consumers (and unbound/close) to wake a reader waiting for
        # room. The reader clears it before it checks the size again, so a
        # wake-up can't be lost between the check and the wait.
        self._room = threading.Event()
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
            self.put_waiting = True
            try:
                while self._bounded and self._items.qsize() >= self._maxsize:
                    self._room.clear()
                    # Checked again after the clear: a consumer that took a
                    # message in between has set the event, or will.
                    if self._bounded and self._items.qsize() >= self._maxsize:
                        self._room.wait()
            finally:
                self.put_waiting = False
        self._items.put(item)

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
        if item is _CLOSED:
            self._items.put(_CLOSED)
            raise QueueClosed
        if self.put_waiting:
            self._room.set()
        return item

    def unbound(self) -> None:
        """Let :meth:`put` append without waiting from now on."""
        self._bounded = False
        self._room.set()

    def close(self) -> None:
        """Mark the end of the messages and wake every waiting consumer.

        Called by the reader thread, once, after its last :meth:`put`.
        """
        if self._closed:
            return
        self._closed = True
        self._bounded = False
        self._items.put(_CLOSED)
        self._room.set()
