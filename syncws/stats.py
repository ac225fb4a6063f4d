"""A snapshot of one connection's counters: :class:`Stats`.

The counters themselves live where they are counted (the core counts
messages and bytes, keepalive its pings); :func:`snapshot` reads them into
one immutable value, for ``WebSocketCommonProtocol.stats``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from .core import ConnectionCore
from .keepalive import Keepalive

__all__ = ["Stats", "snapshot"]


class Stats(NamedTuple):
    """A snapshot of a connection's counters (see :attr:`~syncws.WebSocketCommonProtocol.stats`).

    Attributes:
        messages_in: messages received.
        messages_out: messages sent.
        bytes_in: WebSocket bytes received, frame headers included (the
            opening handshake isn't counted, either way).
        bytes_out: WebSocket bytes sent, frame headers included.
        queued: messages and fragments received and not yet taken by ``recv()``.
        pings_sent: pings sent, by ``ping()`` and by keepalive.
        pings_missed: keepalive pings whose pong didn't come in time, or
            that the peer, reading nothing, left no room to send.
    """

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    queued: int
    pings_sent: int
    pings_missed: int


def snapshot(core: ConnectionCore, queued: int, pings_sent: int, keepalive: Optional[Keepalive]) -> Stats:
    """Read a connection's counters into :class:`Stats`.

    Args:
        core: the connection's core, which counts messages and bytes.
        queued: the messages and fragments waiting for ``recv()``.
        pings_sent: the pings ``ping()`` sent.
        keepalive: the connection's keepalive, which counts its own pings;
            ``None`` without keepalive.
    """
    return Stats(
        messages_in=core.messages_received,
        messages_out=core.messages_sent,
        bytes_in=core.bytes_received,
        bytes_out=core.bytes_sent,
        queued=queued,
        pings_sent=pings_sent + (keepalive.pings_sent if keepalive else 0),
        pings_missed=keepalive.pings_missed if keepalive else 0,
    )
