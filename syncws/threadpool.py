"""Threads reused from one task to the next: connections' readers, servers' connections, senders.

Theory of operation: every connection has a thread of its own that reads its
socket, from the end of the opening handshake to the end of the connection
(:mod:`syncws.reader` is what it runs), and a server gives each accepted
connection a thread for its handshake and its handler (:mod:`syncws.server`).
Starting a thread costs CPU, and the work waits as long for the new thread
to be scheduled and set up: for a connection that opens and closes quickly,
that is a large part of its cost, on both sides (see
docs/performance.rst#connections-per-second). So a thread whose task has
ended doesn't end at once: it waits, idle, for up to :data:`LINGER` seconds
for another task, which it picks up with one queue hand-off; only when none
comes does it end. At most :data:`MAX_IDLE` threads wait so at a time:
after a burst of closes the others end at once. While a task runs, its
thread is its own. This is syncws's one mechanism for reusing threads.

What runs here: a connection's reader, a server connection's handshake and
handler, :mod:`syncws.fanout`'s sender for a member that is behind, and
:func:`syncws.broadcast`'s send to a slow connection. A handler is
application code: like a thread pool server's (gunicorn's gthread workers),
what it leaves in thread-locals may be seen by a later connection's handler
on the same thread; syncws's own per-thread state (the connection a log
line is about, :func:`syncws.logs.set_connection`) is reset at each task's
end. Every thread is named after what it serves (``syncws-reader-<peer
address>``, ``syncws-server-<peer address>``, ``syncws-fanout-sender-...``,
``syncws-broadcast-...``), and ``syncws-idle`` while it waits.

:func:`start` is safe to call from any thread. After :func:`os.fork`, the
child has none of its parent's threads: its pool starts empty.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Callable, Dict, Optional, Tuple

__all__ = ["LINGER", "MAX_IDLE", "start"]

logger = logging.getLogger("syncws.threadpool")

#: Seconds an idle thread waits for another task before it ends.
LINGER = 1.0

#: The most threads that wait idle at once; more end at once.
MAX_IDLE = 64

# The name of a thread that waits for a connection.
_IDLE_NAME = "syncws-idle"

Task = Tuple[Callable[[], None], str]


class _Worker:
    """An idle thread's mailbox: :func:`start` puts the next task there."""

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        self.tasks: "queue.SimpleQueue[Task]" = queue.SimpleQueue()


# Protects _idle. Never held while blocking.
_lock = threading.Lock()
# The idle threads' mailboxes, in the order they became idle: start() takes
# the last one (its stack is the likeliest to be in the CPU caches), and a
# thread whose wait ran out removes its own (a dict: O(1) either way).
_idle: Dict[_Worker, None] = {}


def start(target: Callable[[], None], name: str) -> None:
    """Run ``target()`` in a pool thread: an idle one, or a new one.

    Returns at once; ``target`` tells its caller when it is done (the
    connection's reader signals its end itself).

    Args:
        target: one task (see the module's docstring); what it raises is
            logged.
        name: the thread's name while it runs ``target``.

    Raises:
        RuntimeError: no thread could be started (out of threads or memory).
    """
    with _lock:
        worker = _idle.popitem()[0] if _idle else None
    if worker is not None:
        worker.tasks.put((target, name))
        return
    # The task goes by the mailbox, as later ones do, rather than in the
    # thread's arguments: threading keeps those until the thread ends,
    # which would keep this connection alive while the thread reads for
    # later ones.
    worker = _Worker()
    worker.tasks.put((target, name))
    threading.Thread(target=_work, args=(worker,), name=name, daemon=True).start()


def _work(worker: _Worker) -> None:
    """A pool thread's body: run tasks until none comes for LINGER seconds."""
    thread = threading.current_thread()
    target: Optional[Callable[[], None]]
    target, name = worker.tasks.get()
    while target is not None:
        thread.name = name
        try:
            target()
        except Exception:  # every task catches its own errors; this is a last resort
            logger.exception("%s: unexpected error", name)
        # Don't keep the connection alive while idle.
        target = None
        with _lock:
            if len(_idle) >= MAX_IDLE:
                return  # enough threads wait already: a burst of closes doesn't park them all
            _idle[worker] = None
        # Renamed once offered: an idle-named thread can be taken.
        thread.name = _IDLE_NAME
        try:
            target, name = worker.tasks.get(timeout=LINGER)
        except queue.Empty:
            with _lock:
                if _idle.pop(worker, True) is None:
                    return  # still idle, and no longer offered to start()
            # start() took this thread just as the wait ran out: its task
            # is on the way.
            target, name = worker.tasks.get()


def _after_fork_in_child() -> None:
    # The parent's threads don't exist in the child, and the lock may have
    # been held by one of them at the fork.
    global _lock
    _lock = threading.Lock()
    _idle.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
