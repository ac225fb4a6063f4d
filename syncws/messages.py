"""The bounded queue that hands whole messages from the reader thread to
``recv()``.

Theory of operation: the reader thread is the only producer; any number of
threads may consume. When ``maxsize`` messages are waiting, :meth:`put`
blocks, so the reader thread stops reading the socket and TCP flow control
pushes back on the peer: memory stays bounded by about ``maxsize`` messages.

Two events lift that bound. While the connection closes, the reader must keep
reading to see the peer's close frame, so :meth:`unbound` lets it append
without waiting (for at most the closing timeout). When the reader thread
ends, :meth:`close` marks the end: consumers get every message that was
queued, then :exc:`QueueClosed`.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Deque, Optional

__all__ = ["MessageQueue", "QueueClosed"]


class QueueClosed(Exception):
    """Raised by :meth:`MessageQueue.get` once the queue is empty and closed."""


class MessageQueue:
    """A FIFO of messages with a blocking, bounded :meth:`put`.

    Args:
        maxsize: how many messages may wait before :meth:`put` blocks;
            ``None`` or 0 for no bound.
    """

    def __init__(self, maxsize: Optional[int]) -> None:
        self._items: Deque[Any] = collections.deque()
        self._maxsize = maxsize or 0
        # One mutex guards _items, _closed and _bounded; the two conditions
        # share it. _not_empty wakes consumers, _not_full wakes the reader.
        self._mutex = threading.Lock()
        self._not_empty = threading.Condition(self._mutex)
        self._not_full = threading.Condition(self._mutex)
        # Set once by the reader thread when it ends: no more puts.
        self._closed = False
        # Cleared once when the connection starts closing.
        self._bounded = self._maxsize > 0
        #: True while the reader thread waits in put(): the peer is alive and
        #: sending faster than the application consumes.
        self.put_waiting = False
        # How many consumers wait in get(). Condition.notify() costs an
        # allocation even with nobody to wake; this count skips it.
        self._getters = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        """Append a message, waiting while the queue is full.

        Called by the reader thread only.
        """
        with self._mutex:
            if self._bounded and len(self._items) >= self._maxsize:
                self.put_waiting = True
                while self._bounded and len(self._items) >= self._maxsize:
                    self._not_full.wait()
                self.put_waiting = False
            self._items.append(item)
            if self._getters:
                self._not_empty.notify()

    def get(self, timeout: Optional[float] = None) -> Any:
        """Take the oldest message. Safe to call from any thread.

        Args:
            timeout: seconds to wait; ``None`` waits as long as it takes and
                0 only takes a message that is already there.

        Raises:
            TimeoutError: no message within ``timeout``.
            QueueClosed: the queue is empty and will stay so.
        """
        with self._mutex:
            if not self._items:
                self._getters += 1
                try:
                    self._wait_for_item(timeout)
                finally:
                    self._getters -= 1
                if not self._items:
                    raise QueueClosed
            item = self._items.popleft()
            if self.put_waiting:
                self._not_full.notify()
            return item

    def _wait_for_item(self, timeout: Optional[float]) -> None:
        """Wait until an item arrives or the queue closes; holds ``_mutex``."""
        if timeout is None:
            while not self._items and not self._closed:
                self._not_empty.wait()
            return
        deadline = time.monotonic() + timeout
        while not self._items and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message received within {timeout} seconds")
            self._not_empty.wait(remaining)

    def unbound(self) -> None:
        """Let :meth:`put` append without waiting from now on."""
        with self._mutex:
            self._bounded = False
            self._not_full.notify_all()

    def close(self) -> None:
        """Mark the end of the messages and wake every waiting consumer."""
        with self._mutex:
            self._closed = True
            self._bounded = False
            self._not_empty.notify_all()
            self._not_full.notify_all()
