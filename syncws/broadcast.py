"""Sending one message to many connections.

Theory of operation: most sends complete at once, because the socket buffer
has room. :func:`broadcast` first sends inline to every connection whose
socket buffer surely holds the whole frame; each of the others (a send
already under way, a full buffer, a message bigger than the free room) gets
a thread of its own (:func:`syncws.threadpool.start`: an idle one, or a new
one), whose send is bounded by the timeout. So one slow or dead client never
delays the others, however many are slow, and a call returns within about
``timeout``, at the price of a thread per slow connection while it lasts.
"""

from __future__ import annotations

import functools
import threading
from typing import Dict, Iterable, Optional

from . import threadpool
from .logs import format_address
from .protocol import Data, WebSocketCommonProtocol

__all__ = ["broadcast"]


def broadcast(
    connections: Iterable[WebSocketCommonProtocol],
    message: Data,
    timeout: Optional[float] = 10,
) -> Dict[WebSocketCommonProtocol, Exception]:
    """Send ``message`` to every open connection in ``connections``.

    Connections that aren't open are skipped. A connection whose send fails
    or takes longer than ``timeout`` is reported, not raised: a timed-out
    connection is aborted, as with :meth:`~WebSocketCommonProtocol.send`.
    Returns once every send is done: within about ``timeout``.

    Args:
        connections: the connections, e.g. ``server.connections``.
        message: ``str`` or bytes-like.
        timeout: seconds a slow connection may take; ``None`` uses each
            connection's ``write_timeout``.

    Returns:
        The connections that failed, mapped to their exception (empty when
        every send went through).
    """
    failures: Dict[WebSocketCommonProtocol, Exception] = {}
    slow = []
    for connection in connections:
        if not connection.open:
            continue
        try:
            if not connection.send_nowait(message, timeout):
                slow.append(connection)
        except Exception as exc:
            failures[connection] = exc
    if slow:
        lock = threading.Lock()  # guards failures while the slow sends run
        done = threading.Semaphore(0)  # released once per slow send

        def send(connection: WebSocketCommonProtocol) -> None:
            try:
                connection.send(message, timeout=timeout)
            except Exception as exc:
                with lock:
                    failures[connection] = exc
            finally:
                done.release()

        for connection in slow:
            name = f"syncws-broadcast-{format_address(connection.remote_address)}"
            try:
                threadpool.start(functools.partial(send, connection), name)
            except RuntimeError as exc:  # out of threads: this one fails
                with lock:
                    failures[connection] = exc
                done.release()
        for _ in slow:
            done.acquire()
    return failures
