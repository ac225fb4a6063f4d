"""Admission: which accepted connections get a thread, and when.

Theory of operation. A threaded server spends a thread on every connection
it serves, so a client that connects and then sends nothing, or a byte a
second (slowloris), costs a thread for as long as the server waits. When such
connections counted against ``max_connections``, sixty idle sockets were
enough to make every real client get 503. The servers that resist this do
three things, and so does this module:

- **Nothing is spent before the first byte.** nginx's ``deferred`` listen
  option (``TCP_DEFER_ACCEPT``) and its event loop keep a silent connection
  down to a descriptor. Here the accept thread waits for a new connection's
  first byte (the request line, or the TLS ClientHello) in a selector, with
  no thread, for at most ``first_byte_timeout``. At most
  :data:`SILENT_PER_SLOT` × ``max_pending`` connections wait so; past that
  the oldest silent one is dropped.
- **A deadline for the whole head.** HAProxy's ``timeout http-request`` and
  ``timeout client-hs``, nginx's ``client_header_timeout``, Node's
  ``server.headersTimeout`` (added against CVE-2018-12122, slow headers)
  bound the time for the complete request, however the bytes trickle in.
  Here it is ``open_timeout``, for TLS and the HTTP head together; the
  server's connection code enforces it.
- **Handshakes are not connections.** Connections in their opening
  handshake don't count against ``max_connections`` (open WebSockets) but
  against their own pool of ``max_pending`` threads, the
  :class:`HandshakePool`. When it is full, a connection whose first byte has
  arrived waits (without a thread) for a slot, newest first by the time it
  was accepted (the oldest waiting are the likeliest to be an attacker's:
  last in, first out is what keeps a queue useful under overload), for at
  most ``queue_timeout`` from its accept; if the oldest handshake in the
  pool has already taken :data:`EVICTABLE_AFTER` seconds, it is dropped to
  make room: a real client sends its whole request at once and is done in
  milliseconds, so the oldest handshake is the likeliest to be an attacker's,
  while a burst of real clients (all young) is queued rather than dropped.

Everything here runs on the accept thread except the :class:`HandshakePool`
methods, which the connection threads call too (they take the pool's lock).
"""

from __future__ import annotations

import collections
import logging
import select
import selectors
import socket
import threading
import time
from typing import Any, Callable, Deque, Dict, Optional, Tuple

__all__ = ["EVICTABLE_AFTER", "SILENT_PER_SLOT", "HandshakePool", "accept_loop"]

#: A handshake in a full pool may be dropped for a newcomer once it has
#: lasted this many seconds; younger ones are never dropped.
EVICTABLE_AFTER = 1.0

#: Connections that may wait for their first byte, per slot of the pool:
#: they cost a descriptor each, no thread, and a burst of real clients
#: looks like this for a moment (connected, request not yet arrived).
SILENT_PER_SLOT = 8

# How often the accept thread looks for a free slot while connections wait
# for one: connection threads don't signal the end of a handshake.
_SLOT_POLL = 0.02

# Connections accepted in one go before the loop looks at the others.
_ACCEPT_BATCH = 64

# Lets _has_data peek without blocking on a blocking socket: accepted sockets
# then stay blocking, as their connection thread wants them, with no system
# call to switch modes and back. POSIX only; elsewhere the socket is
# switched to non-blocking while it waits here.
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
# The flags of _has_data's peek, as a plain int: or-ing socket.MSG_PEEK
# makes a MsgFlag, which costs an enum construction per connection.
_PEEK_NOWAIT = int(socket.MSG_PEEK) | int(_MSG_DONTWAIT)


class _Entry:
    __slots__ = ("started", "cancel")

    def __init__(self, started: float) -> None:
        self.started = started
        # Set by the connection thread once it can be cancelled.
        self.cancel: Optional[Callable[[], None]] = None


class HandshakePool:
    """The connections in their opening handshake, oldest first, bounded.

    Safe to call from any thread.

    Args:
        size: the most handshakes at once; ``None`` for no limit.
        clock: seconds, monotonic: how old a handshake is.

    Raises:
        ValueError: ``size`` is less than 1.
    """

    def __init__(self, size: Optional[int], clock: Callable[[], float] = time.monotonic) -> None:
        if size is not None and size < 1:
            raise ValueError(f"max_pending_handshakes must be >= 1 or None, got {size}")
        self.size = size
        self._clock = clock
        # Protects _entries; never held while blocking.
        self._lock = threading.Lock()
        # Insertion-ordered: the first entry is the oldest handshake.
        self._entries: Dict[Any, _Entry] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def add(self, key: Any) -> None:
        """Count a handshake that a connection thread is about to perform.

        The thread calls :meth:`remove` when it is done with the
        connection, whatever happened.

        Args:
            key: identifies the connection (its socket) in later calls.
        """
        with self._lock:
            self._entries[key] = _Entry(self._clock())

    def cancellable(self, key: Any, cancel: Callable[[], None]) -> None:
        """Tell how to drop the handshake: ``cancel()`` must not block.

        Args:
            key: as given to :meth:`add`.
            cancel: aborts the handshake (the thread then ends soon).
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.cancel = cancel

    def remove(self, key: Any) -> None:
        """Free the slot of a handshake that ended, whatever its outcome.

        Args:
            key: as given to :meth:`add`; unknown keys are ignored.
        """
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            # The accept thread made the entry: on a free-threaded build it
            # is freed only when that thread next runs, and an idle server's
            # accept thread waits; the connection it refers to needn't.
            entry.cancel = None

    def make_room(self, logger: logging.Logger) -> bool:
        """Return whether a new handshake may start, dropping the oldest
        one when the pool is full and it is old enough.

        Args:
            logger: where a dropped handshake is logged.

        Returns:
            ``True`` when there is a free slot (now).
        """
        cancel = None
        with self._lock:
            if self.size is None or len(self._entries) < self.size:
                return True
            key, oldest = next(iter(self._entries.items()))
            age = self._clock() - oldest.started
            if oldest.cancel is None or age < EVICTABLE_AFTER:
                return False
            del self._entries[key]
            cancel = oldest.cancel
        logger.info(
            "max_pending_handshakes (%d) reached: dropping a handshake that has lasted %.1f s",
            self.size, age,
        )
        cancel()
        return True


def watch(listener: socket.socket, wakeup: socket.socket) -> selectors.BaseSelector:
    """Make the selector :func:`accept_loop` waits on: ``listener`` and ``wakeup``.

    Called before the accept thread starts, so that a server holds every
    descriptor it needs once it is returned (and a failure to make one
    raises there). The listener is made non-blocking.

    Raises:
        OSError: no selector could be made (out of descriptors).
    """
    selector = selectors.DefaultSelector()
    try:
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ)
        selector.register(wakeup, selectors.EVENT_READ)
    except BaseException:
        selector.close()
        raise
    return selector


def accept_loop(
    listener: socket.socket,
    *,
    selector: selectors.BaseSelector,
    wakeup: socket.socket,
    pool: HandshakePool,
    first_byte_timeout: Optional[float],
    queue_timeout: Optional[float],
    is_closing: Callable[[], bool],
    at_capacity: Callable[[], bool],
    refuse_busy: Callable[[socket.socket], None],
    start_handshake: Callable[[socket.socket, Any], None],
    logger: logging.Logger,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Accept connections on ``listener`` until the server closes.

    A new connection waits here, without a thread, for its first byte, then
    for a slot in ``pool``; ``start_handshake(sock, address)`` then gives it
    a thread (and adds it to the pool).

    Args:
        listener: the listening socket.
        selector: :func:`watch`'s selector for ``listener`` and ``wakeup``;
            closed when the loop ends.
        wakeup: one end of a socket pair: a byte written to the other end
            wakes the loop up, which ends if ``is_closing()`` is true. (A
            listener closed under a selector doesn't wake it up.) Closed
            when the loop ends.
        pool: the pool of handshakes, shared by every listener of a server.
        first_byte_timeout: seconds a connection may stay silent; ``None``
            for no limit (the pool's bound still applies).
        queue_timeout: seconds from its accept within which a connection
            that has sent its first byte must get a slot, or be dropped;
            ``None`` for no limit.
        is_closing: whether the server is closing.
        at_capacity: whether the server serves ``max_connections`` open
            connections; new connections then get 503 at once.
        refuse_busy: answers 503 and lets the socket go.
        start_handshake: starts the connection's thread.
        logger: the server's logger.
        clock: seconds, monotonic: when a connection was accepted, and
            how long ago.
    """
    try:
        backlog_holds_more = _backlog_probe(listener)
    except (OSError, ValueError):  # the server was closed before this thread got here
        selector.close()
        wakeup.close()
        return
    # Silent connections, oldest first: socket -> (accepted at, address).
    silent: Dict[socket.socket, Tuple[float, Any]] = {}
    # Connections whose first byte arrived, waiting for a slot: (socket,
    # address, accepted at), oldest accepted first (served newest first; see
    # _queue).
    waiting: Deque[Tuple[socket.socket, Any, float]] = collections.deque()
    max_silent = None if pool.size is None else SILENT_PER_SLOT * pool.size

    def drop(sock: socket.socket) -> None:
        try:
            sock.close()
        except OSError:
            pass

    try:
        while True:
            now = clock()
            timeout: Optional[float] = None
            if silent and first_byte_timeout is not None:
                oldest = next(iter(silent.values()))[0]
                timeout = max(0.0, oldest + first_byte_timeout - now)
            if waiting:
                timeout = _SLOT_POLL if timeout is None else min(timeout, _SLOT_POLL)
            try:
                events = selector.select(timeout)
            except OSError:  # the listener was closed under us
                events = []
            if is_closing():
                return
            for key, _ in events:
                if key.fileobj is wakeup:
                    continue  # only the server's close() writes to it
                if key.fileobj is listener:
                    _accept_batch(
                        listener, selector, silent, waiting, max_silent, at_capacity, refuse_busy, logger, drop,
                        backlog_holds_more, clock,
                    )
                else:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    selector.unregister(sock)
                    accepted, address = silent.pop(sock)
                    _queue(waiting, (sock, address, accepted))

            now = clock()
            if first_byte_timeout is not None:
                for sock, (accepted, address) in list(silent.items()):
                    if now - accepted < first_byte_timeout:
                        break  # the others are younger
                    logger.debug("%s sent nothing within %s s: dropped", address, first_byte_timeout)
                    selector.unregister(sock)
                    del silent[sock]
                    drop(sock)
            while waiting and queue_timeout is not None and now - waiting[0][2] >= queue_timeout:
                sock, address, _ = waiting.popleft()
                logger.warning("%s waited %s s for a handshake slot: dropped", address, queue_timeout)
                drop(sock)
            # Newest first: under attack, the connections that have waited
            # longest are the likeliest to be slow on purpose; in a burst of
            # real clients, every one is served within the burst's time.
            while waiting and pool.make_room(logger):
                sock, address, _ = waiting.pop()
                if not _MSG_DONTWAIT:
                    sock.setblocking(True)
                start_handshake(sock, address)
    finally:
        selector.close()
        wakeup.close()
        for sock in list(silent) + [entry[0] for entry in waiting]:
            drop(sock)


def _queue(waiting: Deque[Tuple[socket.socket, Any, float]], entry: Tuple[socket.socket, Any, float]) -> None:
    """Add a connection whose first byte arrived to ``waiting``, in the order
    of the accept times (the entries' last field).

    The loop notices first bytes in its own order: a connection accepted
    silent may be seen ready only after a newer one was accepted with its
    request there (in the same batch of events, or while the loop was busy
    accepting). Appending it would put it after the newer one, and serve it
    first.
    """
    accepted = entry[2]
    low, high = 0, len(waiting)
    # bisect, by hand: its key argument needs Python 3.10.
    while low < high:  # the first entry accepted later
        middle = (low + high) // 2
        if waiting[middle][2] <= accepted:
            low = middle + 1
        else:
            high = middle
    waiting.insert(low, entry)


def _backlog_probe(listener: socket.socket) -> Callable[[], bool]:
    """Return a function that tells whether another connection waits to be accepted.

    One ``poll()`` of the listener: a non-blocking ``accept()`` that finds
    the backlog empty raises BlockingIOError, and when clients come one at
    a time that was one exception per connection, raised and caught.
    Where ``poll()`` doesn't exist, accept() finds out.
    """
    if not hasattr(select, "poll"):
        return lambda: True
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    return lambda: bool(poller.poll(0))


def _has_data(sock: socket.socket) -> Optional[bool]:
    """Whether a socket has bytes to read, without waiting; ``None`` at EOF.

    The socket is blocking where ``MSG_DONTWAIT`` exists, non-blocking
    elsewhere.
    """
    try:
        return True if sock.recv(1, _PEEK_NOWAIT) else None
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return None


def _accept_batch(
    listener: socket.socket,
    selector: selectors.BaseSelector,
    silent: Dict[socket.socket, Tuple[float, Any]],
    waiting: Deque[Tuple[socket.socket, Any, float]],
    max_silent: Optional[int],
    at_capacity: Callable[[], bool],
    refuse_busy: Callable[[socket.socket], None],
    logger: logging.Logger,
    drop: Callable[[socket.socket], None],
    backlog_holds_more: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Accept what the backlog holds (up to a batch).

    The listener was readable: the first ``accept()`` finds a connection;
    ``backlog_holds_more()`` tells whether to try for the next one.

    A connection whose first byte is already there goes straight to
    ``waiting``; the others to ``silent``, where at most ``max_silent``
    stay: past that, the oldest that is still silent is dropped.
    """
    for attempt in range(_ACCEPT_BATCH):
        if attempt and not backlog_holds_more():
            return
        try:
            sock, address = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # EMFILE and friends: the listener stays readable, so give
            # descriptors a moment to free up rather than spin.
            logger.error("accept() failed: %s", exc)
            time.sleep(0.1)
            return
        if at_capacity():
            refuse_busy(sock)
            continue
        now = clock()
        if not _MSG_DONTWAIT:
            sock.setblocking(False)
        ready = _has_data(sock)
        if ready is None:
            drop(sock)  # already gone
            continue
        if ready:
            waiting.append((sock, address, now))
            continue
        # In a burst, the oldest "silent" ones may have sent their request
        # since: they move on instead of being dropped.
        while max_silent is not None and len(silent) >= max_silent:
            oldest = next(iter(silent))
            accepted, oldest_address = silent.pop(oldest)
            selector.unregister(oldest)
            state = _has_data(oldest)
            if state:
                _queue(waiting, (oldest, oldest_address, accepted))
            else:
                if state is not None:
                    logger.info("%d connections sent nothing yet: dropping the oldest", max_silent)
                drop(oldest)
        silent[sock] = (now, address)
        selector.register(sock, selectors.EVENT_READ)
