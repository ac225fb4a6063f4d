"""One timer thread shared by every connection in the process.

Theory of operation: a connection needs timers for keepalive pings and for
deadlines (opening handshake, closing handshake, a send to a peer that stopped
reading). A thread per timer, or per connection, is what makes threaded
servers collapse under many connections, so all timers live in one heap served
by one daemon thread, started on first use.

Callbacks run on that thread, so they must never block: they set flags, try a
lock without waiting, or shut a socket down (which wakes whatever thread is
blocked on it). A callback that raises is logged and forgotten.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from heapq import heappush as _heappush
from time import monotonic as _monotonic
from typing import Any, Callable, List, Optional, Tuple

__all__ = ["Timer", "call_later", "Deadline", "deadline"]

logger = logging.getLogger("syncws.timers")


def _cancelled_callback() -> None:
    """What a cancelled timer holds instead of its callback."""


# Cancelled entries are removed from the heap in one pass once they are more
# than half of it and at least this many: below that, leaving them costs less.
_COMPACT_MIN = 64


class Timer:
    """A scheduled callback; :meth:`cancel` it when it is no longer needed."""

    __slots__ = ("when", "callback", "cancelled", "_owner")

    def __init__(self, when: float, callback: Callable[[], None], owner: Optional["_TimerThread"] = None) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        # The heap that holds the timer, until the timer thread takes it out.
        self._owner = owner

    def cancel(self) -> None:
        """Stop the callback from running (a no-op once it has run).

        Safe to call from any thread. The callback is released at once, so
        whatever it refers to (a whole connection, for keepalive timers) can
        be freed without waiting for the timer's time; the heap drops
        cancelled entries in batches.
        """
        owner = self._owner
        if owner is None:
            self.cancelled = True
            self.callback = _cancelled_callback
            return
        # The heap's bookkeeping, here rather than in a method of the owner:
        # every connection cancels two or three timers, and a call costs.
        lock = owner._lock
        lock.acquire()
        try:
            if self.cancelled:
                return
            self.cancelled = True
            self.callback = _cancelled_callback
            if self._owner is None:
                return  # already taken out of the heap
            owner._cancelled += 1
            if owner._cancelled >= _COMPACT_MIN and 2 * owner._cancelled > len(owner._heap):
                owner.compact()
        finally:
            lock.release()


class _TimerThread:
    """The heap of timers and the thread that runs them."""

    def __init__(self) -> None:
        # Protects _heap, _cancelled, _thread and the timers' cancelled,
        # callback and _owner; _wakeup is signalled when a timer that is
        # earlier than every other one is added.
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        # Entries are (when, sequence, timer): the sequence breaks ties so
        # Timer objects are never compared.
        self._heap: List[Tuple[float, int, Timer]] = []
        # How many entries of _heap are cancelled.
        self._cancelled = 0
        self._sequence = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` on the shared timer thread after ``delay`` seconds.

        Args:
            delay: seconds from now.
            callback: a function that must not block.

        Returns:
            A :class:`Timer` to cancel it.
        """
        when = _monotonic() + delay
        timer = Timer(when, callback, self)
        entry = (when, next(self._sequence), timer)
        # acquire() and release() rather than a with statement: on CPython
        # 3.11-3.13 that costs three times as much, and every connection
        # sets two or three timers.
        lock = self._lock
        lock.acquire()
        try:
            _heappush(self._heap, entry)
            if self._thread is None:
                # Started lazily so that importing syncws starts no thread.
                self._thread = threading.Thread(
                    target=self._run, name="syncws-timers", daemon=True
                )
                self._thread.start()
            elif self._heap[0] is entry:
                self._wakeup.notify()
        finally:
            lock.release()
        return timer

    def after_fork_in_child(self) -> None:
        """Forget the parent's thread, which doesn't exist in a forked child.

        The next timer starts one; the lock, which one of the parent's
        threads may have held at the fork, is made anew.
        """
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._thread = None

    def compact(self) -> None:
        """Drop the cancelled entries of the heap; the caller holds the lock.

        Called by :meth:`Timer.cancel` once they are more than half of the
        heap: O(n) once every n/2 cancels, O(1) amortized per cancel. The
        earliest entry may go, which is harmless: the thread wakes up, finds
        a later one, and waits again.
        """
        for _, _, stale in self._heap:
            if stale.cancelled:
                stale._owner = None
        self._heap = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, timer = heapq.heappop(self._heap)
                        timer._owner = None
                        if timer.cancelled:
                            self._cancelled -= 1
                            continue
                        # Read under the lock: cancel() replaces it.
                        callback = timer.callback
                        break
                    # Waiting with no timeout on an empty heap is fine: the
                    # thread is a daemon, and call_later notifies it.
                    self._wakeup.wait(self._heap[0][0] - now if self._heap else None)
            try:
                callback()
            except Exception:  # a broken callback must not stop every timer
                logger.exception("timer callback %r failed", callback)
            # Don't keep the last callback (and its connection) alive while
            # waiting for the next timer.
            del timer, callback


_timers = _TimerThread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_timers.after_fork_in_child)

#: Run ``callback()`` on the shared timer thread after ``delay`` seconds
#: (:meth:`_TimerThread.call_later`). The method itself, not a function that
#: calls it: a call fewer per timer. The object stays the same after a fork.
call_later = _timers.call_later


class Deadline:
    """What :func:`deadline` returns: a context manager, and whether time ran out.

    A class rather than a generator-based context manager: every opening
    handshake enters one, and this costs a third as much.

    Args:
        seconds: the time allowed; ``None`` for no limit.
        on_expire: a callback that must not block.
    """

    __slots__ = ("_seconds", "_on_expire", "_lock", "_finished", "_timer", "expired")

    def __init__(self, seconds: Optional[float] = None, on_expire: Callable[[], None] = _cancelled_callback) -> None:
        self._seconds = seconds
        self._on_expire = on_expire
        # Orders the expiry against the end of the block, so on_expire never
        # runs after the block has finished in time.
        self._lock = threading.Lock()
        self._finished = False
        self._timer: Optional[Timer] = None
        #: True once time ran out and ``on_expire`` was called.
        self.expired = False

    def __enter__(self) -> "Deadline":
        if self._seconds is not None:
            self._timer = call_later(self._seconds, self._expire)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # acquire() and release(), as in call_later(): every opening
        # handshake, on both sides, goes through here.
        lock = self._lock
        lock.acquire()
        self._finished = True
        lock.release()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        # on_expire runs under the lock (it never blocks), so it can't start
        # after the block has finished.
        with self._lock:
            if self._finished:
                return
            self.expired = True
            self._on_expire()


def deadline(seconds: Optional[float], on_expire: Callable[[], None]) -> Deadline:
    """Call ``on_expire()`` if the block is still running after ``seconds``.

    Use it as ``with deadline(seconds, on_expire) as state:``. Blocking socket
    code is bounded this way without socket timeouts: ``on_expire`` shuts the
    socket down, the blocked call fails, and the block checks
    ``state.expired`` to tell a timeout from a real network error.

    Args:
        seconds: the time allowed; ``None`` for no limit.
        on_expire: a callback that must not block.

    Returns:
        A :class:`Deadline` to enter; once the block has ended,
        ``on_expire`` is never called.
    """
    return Deadline(seconds, on_expire)
