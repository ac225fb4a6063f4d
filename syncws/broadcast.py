"""Sending one message to many connections.

Theory of operation: most sends complete at once, because the socket buffer
has room. :func:`broadcast` first sends inline to every connection whose
socket buffer surely holds the whole frame; the others (a send already under
way, a full buffer, a message bigger than the free room) are handed to a few
worker threads, each send bounded by the timeout. So one slow or dead client
never delays the others.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional

from .protocol import Data, WebSocketCommonProtocol

__all__ = ["broadcast"]

# Enough workers to wait on several slow clients in parallel without a
# thread per connection.
_MAX_WORKERS = 16


def broadcast(
    connections: Iterable[WebSocketCommonProtocol],
    message: Data,
    timeout: Optional[float] = 10,
) -> Dict[WebSocketCommonProtocol, Exception]:
    """Send ``message`` to every open connection in ``connections``.

    Connections that aren't open are skipped. A connection whose send fails
    or takes longer than ``timeout`` is reported, not raised: a timed-out
    connection is aborted, as with :meth:`~WebSocketCommonProtocol.send`.

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
        import concurrent.futures  # only when some connection is slow

        with concurrent.futures.ThreadPoolExecutor(
            max_workers=min(_MAX_WORKERS, len(slow)), thread_name_prefix="syncws-broadcast"
        ) as pool:
            futures = {pool.submit(c.send, message, timeout): c for c in slow}
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                if isinstance(error, Exception):
                    failures[futures[future]] = error
    return failures
