"""Socket options for WebSocket connections: latency, dead peers, backlog.

Theory of operation: syncws notices a dead peer with keepalive pings (a ping
every ``ping_interval``, the connection closed when no pong comes within
``ping_timeout``). That needs the reader thread to see the pong, and a
connection whose handler stopped reading doesn't: a peer that vanished
(no FIN, no RST: unplugged, firewalled, a NAT that forgot it) then went
unnoticed. The kernel can tell on its own, from TCP, and nothing blocks it:

- ``TCP_USER_TIMEOUT`` (Linux, RFC 5482): data we sent that stays
  unacknowledged for that long fails the connection with ``ETIMEDOUT``. It is
  ``ping_timeout``: the next keepalive ping, sent at most ``ping_interval``
  after the peer vanished, is never acknowledged, so the connection fails
  within ``ping_interval + ping_timeout``, whatever the handler does.
  Since Linux 5.11 it also fails a connection whose peer keeps its receive
  window closed that long, though the peer, alive, answers every
  zero-window probe: a peer that doesn't read is not a dead one, and while
  a ``send()`` waits for it, ``write_timeout`` must decide. So the transport
  lifts the option for as long as a write blocks (:func:`user_timeout`,
  :func:`set_user_timeout`); the write's own deadline watches the peer
  then, alive or not.
- TCP keepalive probes (``SO_KEEPALIVE``, ``TCP_KEEPIDLE``,
  ``TCP_KEEPINTVL``, ``TCP_KEEPCNT``): after ``ping_interval`` without
  receiving anything, probes every ``ping_timeout / 3`` seconds; with
  ``TCP_USER_TIMEOUT`` set, Linux gives up once ``ping_timeout`` has passed
  with probes unanswered. This covers a connection with nothing in flight.

A server sets them once, on its listening sockets, where accepted
connections inherit them (Linux copies a listener's options, these
included, into every connection it accepts): six system calls fewer per
connection. Elsewhere it sets them on each accepted connection.

Where an option doesn't exist (macOS has ``TCP_KEEPALIVE`` for the idle
time, Windows none of the TCP ones through :mod:`socket`), it is skipped:
keepalive pings remain the portable mechanism. Unix sockets get nothing.

The listen backlog: a burst of connections larger than the accept queue is
not refused but dropped (Linux ignores the handshake's last ACK, or the SYN,
when the queue is full), and the client retransmits after 1 s, then 3 s, 7 s:
1000 simultaneous clients behind a backlog of 128 waited seconds. The kernel
caps whatever ``listen()`` asks at ``net.core.somaxconn`` (4096 since Linux
5.4, 128 before), so :func:`default_backlog` asks for that much, as Go does;
nginx and Node ask for 511.
"""

from __future__ import annotations

import functools
import math
import socket
import sys
from typing import Optional, Tuple

__all__ = [
    "DEFAULT_BACKLOG", "default_backlog", "tune_connection", "tune_listener", "connection_failed", "user_timeout",
    "set_user_timeout", "send_progress",
]

#: The backlog asked for where ``net.core.somaxconn`` can't be read.
DEFAULT_BACKLOG = 1024

_SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"

# struct tcp_info starts with tcpi_state; TCP_CLOSE is 7 (include/net/tcp_states.h).
_TCP_CLOSE = 7

# Keepalive probes sent before the connection is given up, without
# TCP_USER_TIMEOUT; with it, the timeout decides.
_KEEPALIVE_PROBES = 3

# The largest values Linux takes (include/net/tcp.h: MAX_TCP_KEEPIDLE and
# MAX_TCP_KEEPINTVL, in seconds; TCP_USER_TIMEOUT is an int of ms): beyond
# them setsockopt() fails with EINVAL, so a longer ping_interval (over
# 9 hours) or ping_timeout gets the largest. Probing sooner than asked
# costs a few bytes; failing every connection cost them all.
_MAX_KEEPALIVE_SECONDS = 32_767
_MAX_USER_TIMEOUT_MS = 2**31 - 1


def default_backlog() -> int:
    """The listen backlog syncws asks for when none is given.

    Returns:
        ``net.core.somaxconn`` where it can be read (Linux), at least 128;
        :data:`DEFAULT_BACKLOG` elsewhere.
    """
    try:
        with open(_SOMAXCONN_PATH) as f:
            return max(128, int(f.read().strip()))
    except (OSError, ValueError):
        return DEFAULT_BACKLOG


def tune_connection(
    sock: socket.socket,
    *,
    ping_interval: Optional[float],
    ping_timeout: Optional[float],
) -> None:
    """Set the options of a new TCP connection, client or server side.

    Disables Nagle's algorithm (``TCP_NODELAY``: a frame goes out at once),
    and when both ``ping_interval`` and ``ping_timeout`` are set, enables
    TCP keepalive and ``TCP_USER_TIMEOUT`` so that the kernel fails the
    connection to a vanished peer within ``ping_interval + ping_timeout``
    (see the module's docstring). Options the system lacks are skipped; a
    Unix socket is left alone.

    Args:
        sock: a connected socket (before TLS is set up).
        ping_interval: the connection's keepalive interval, or ``None``.
        ping_timeout: the connection's keepalive timeout, or ``None``.

    Raises:
        OSError: the socket is closed or an option is refused.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in _options(ping_interval, ping_timeout):
        sock.setsockopt(level, option, value)


@functools.lru_cache(maxsize=16)
def _options(ping_interval: Optional[float], ping_timeout: Optional[float]) -> Tuple[Tuple[int, int, int], ...]:
    """The ``(level, option, value)`` triples :func:`tune_connection` sets.

    Worked out once per pair of settings: a client sets them on every
    connection it opens.
    """
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    if ping_interval is None or ping_timeout is None or math.isinf(ping_interval) or math.isinf(ping_timeout):
        return tuple(options)  # no deadline to derive: keep the system's defaults
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    # The kernel counts keepalive times in whole seconds, at least 1.
    idle = min(max(1, math.ceil(ping_interval)), _MAX_KEEPALIVE_SECONDS)
    interval = min(max(1, math.ceil(ping_timeout / _KEEPALIVE_PROBES)), _MAX_KEEPALIVE_SECONDS)
    idle_option = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    if idle_option is not None:
        options.append((socket.IPPROTO_TCP, idle_option, idle))
    if hasattr(socket, "TCP_KEEPINTVL"):
        options.append((socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval))
    if hasattr(socket, "TCP_KEEPCNT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _KEEPALIVE_PROBES))
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        # Milliseconds; 0 would mean the system default, so at least 1.
        user_timeout = min(max(1, int(ping_timeout * 1000)), _MAX_USER_TIMEOUT_MS)
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout))
    return tuple(options)


def tune_listener(
    sock: socket.socket,
    *,
    ping_interval: Optional[float],
    ping_timeout: Optional[float],
) -> bool:
    """Set :func:`tune_connection`'s options on a listening socket, where
    the connections it accepts inherit them.

    Linux clones an accepted connection from its listener, options
    included (``TCP_NODELAY``, ``SO_KEEPALIVE``, the keepalive times,
    ``TCP_USER_TIMEOUT``), so a server that tunes its listeners needn't
    tune each connection. Elsewhere nothing is set.

    Args:
        sock: a listening socket.
        ping_interval: the server's keepalive interval, or ``None``.
        ping_timeout: the server's keepalive timeout, or ``None``.

    Returns:
        ``True`` when the connections ``sock`` accepts come tuned (or are
        Unix connections, which need nothing); ``False`` when each must be
        tuned with :func:`tune_connection`.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # tune_connection leaves these alone anyway
    if not sys.platform.startswith("linux"):
        return False
    try:
        tune_connection(sock, ping_interval=ping_interval, ping_timeout=ping_timeout)
    except OSError:
        return False
    return True


def connection_failed(sock: socket.socket) -> bool:
    """Whether the kernel has already given a TCP connection up.

    After ``TCP_USER_TIMEOUT`` or unanswered keepalive probes, the socket
    holds an error (``ETIMEDOUT``) that only the next read or write reports:
    a connection whose reader is paused (its queue is full) never makes one.
    This looks without reading or writing, and without clearing the error.

    Args:
        sock: a TCP socket (or a TLS socket over one).

    Returns:
        ``True`` when the connection is closed at the TCP level; ``False``
        while it is alive, for non-TCP sockets, and where ``TCP_INFO``
        doesn't exist (not Linux).
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return False
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    except OSError:
        return True  # the descriptor is already closed
    return info[0] == _TCP_CLOSE


def user_timeout(sock: socket.socket) -> int:
    """A TCP connection's ``TCP_USER_TIMEOUT``, in milliseconds.

    Args:
        sock: a socket (or a TLS socket over one).

    Returns:
        The option's value; 0 when it isn't set (the system's rules apply),
        for non-TCP sockets, where the option doesn't exist (not Linux), and
        for a socket already closed.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_USER_TIMEOUT"):
        return 0
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
    except OSError:
        return 0


def set_user_timeout(sock: socket.socket, milliseconds: int) -> None:
    """Set a TCP connection's ``TCP_USER_TIMEOUT``; 0 lifts it.

    Only for a socket where :func:`user_timeout` found one set. Never
    raises: a socket closed or shut down meanwhile needs none.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
    except OSError:
        pass


# struct tcp_info's tcpi_bytes_acked (Linux 4.2 and later): a 64-bit count
# 120 bytes in, after 8 one-byte fields, 24 32-bit ones and two 64-bit ones.
_BYTES_ACKED_START, _BYTES_ACKED_END = 120, 128


def send_progress(sock: socket.socket) -> Optional[Tuple[int, int]]:
    """How far what we wrote to a TCP connection has got.

    Counted in bytes of the TCP stream, from the same origin: what the peer's
    TCP acknowledged (``tcpi_bytes_acked``), and that plus what is still in
    our send queue, unacknowledged, sent or not (``SIOCOUTQ``): the end of
    everything written so far. A ping written when the second was ``n`` has
    reached the peer's TCP once the first is ``n`` or more; a ping that never
    left this host (no route, a firewall dropping it, the interface down)
    hasn't.

    Args:
        sock: a TCP socket (or a TLS socket over one).

    Returns:
        ``(acknowledged, written)``, or ``None`` where the system doesn't
        tell (not Linux, a kernel older than 4.2, a non-TCP or closed
        socket).
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    # Imported here: only Linux gets this far, once per keepalive ping.
    import fcntl
    import termios

    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _BYTES_ACKED_END)
        # Read after the acknowledged count: an acknowledgement arriving in
        # between can only make the sum smaller, so a ping's end is never
        # put past where it really is.
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
    except (OSError, ValueError):  # closed, maybe meanwhile (its descriptor is then -1)
        return None
    if len(info) < _BYTES_ACKED_END:
        return None
    acknowledged = int.from_bytes(info[_BYTES_ACKED_START:_BYTES_ACKED_END], sys.byteorder)
    return acknowledged, acknowledged + int.from_bytes(queued, sys.byteorder, signed=True)
