"""The health check and the metrics, on the WebSocket port or on one of their own.

::

    server = syncws.serve(handler, "0.0.0.0", 8765, max_connections=5000)
    admin = syncws.admin.serve_admin("127.0.0.1", 9100, health="/healthz", metrics_path="/metrics")

Theory of operation
-------------------
A server at ``max_connections`` answers 503 to every new connection before
reading its request (:mod:`syncws.admission`: it sheds load without
spending a thread). A health check or a metrics scrape sent to the
WebSocket port then gets 503 too: the server goes dark to its operator
exactly when it is busiest. That suits a load balancer's readiness check
(a full server should get no new clients), not a liveness probe nor
Prometheus.

So, as Envoy's admin listener, Spring Boot's management port or Traefik's
metrics entry point do, the health check and the metrics can have a
listener of their own: :func:`serve_admin`. It is a server of its own
(:func:`~syncws.serve`), with its own pool of handshakes, so no count of
WebSocket connections, and no flood of them, keeps it from answering. It
answers ``GET`` of its two paths (:func:`routes`), 404 to any other path,
and never upgrades a connection. Its own requests are counted apart from the
process's metrics (:func:`syncws.metrics.collect` doesn't see them): a
request to an unknown path there isn't a refused WebSocket handshake.

Readiness: draining
-------------------
A server closing (:meth:`~syncws.WebSocketServer.close`, which the command
line calls on ``SIGTERM``) stops accepting, sends 1001 to its clients and
waits for their handlers, which may take a while; its admin listener is
closed last. Meanwhile the health check answers ``503`` (``draining``), as
Envoy's health check filter fails once Envoy is told to drain
(``/healthcheck/fail``) and Spring Boot's readiness turns to
``REFUSING_TRAFFIC`` when its application begins to close: a load balancer
stops sending clients to a server that refuses them. The metrics keep
answering. Pass the
server's :meth:`~syncws.WebSocketServer.is_serving` as ``ready``::

    admin = syncws.admin.serve_admin("127.0.0.1", 9100, health="/healthz", ready=server.is_serving)

or any callable that says whether the process takes new clients (to fail
the check before closing, during a Kubernetes ``preStop`` delay, say).
The health check is then a readiness check: point a liveness probe, which
restarts what fails it, elsewhere (a process that drains is alive).

Keep it off the public network (``host`` a private or loopback address):
the metrics tell how busy the server is, and the listener has no TLS.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from . import metrics
from .datastructures import Headers
from .hooks import respond
from .server import WebSocketServer, serve

__all__ = ["ProcessRequest", "routes", "serve_admin"]

#: ``process_request(path, request_headers)``, as :func:`~syncws.serve` takes it.
ProcessRequest = Callable[[str, Headers], Any]


def routes(
    health: Optional[str],
    metrics_path: Optional[str],
    render: Optional[Callable[[], str]] = None,
    then: Optional[ProcessRequest] = None,
    ready: Optional[Callable[[], bool]] = None,
) -> Optional[ProcessRequest]:
    """A ``process_request`` hook answering the health check and the metrics.

    Only plain ``GET`` requests are answered there: a WebSocket upgrade goes
    on to ``then`` and the handler, whatever its path.

    Args:
        health: the health check's path, or ``None``.
        metrics_path: the metrics' path, or ``None``.
        render: writes the metrics; :func:`syncws.metrics.render` by
            default (this process).
        then: the application's hook, asked about every other request.
        ready: whether the process takes new clients, asked at every
            health check: ``200 OK`` when it does, ``503`` (``draining``)
            once it doesn't, e.g. a server's
            :meth:`~syncws.WebSocketServer.is_serving`. Always ready by
            default.

    Returns:
        The hook (``then`` itself without either path; ``None`` without
        anything to answer).
    """
    if health is None and metrics_path is None:
        return then
    write = render or metrics.render

    def answer(path: str, request_headers: Headers) -> Any:
        # A WebSocket client's upgrade goes on, even on one of these paths
        # (--health /): health checks and scrapes are plain GETs.
        bare = "" if "Upgrade" in request_headers else path.partition("?")[0]
        if bare == health:
            status, text = (200, b"OK\n") if ready is None or ready() else (503, b"draining\n")
            return status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")], text
        if bare == metrics_path:
            return 200, [("Content-Type", metrics.CONTENT_TYPE), ("Cache-Control", "no-store")], write().encode()
        return None if then is None else then(path, request_headers)

    return answer


def _not_found(path: str, request_headers: Headers) -> Any:
    return respond(404, "Not Found: this port serves the health check and the metrics only.\n")


def _no_websocket(websocket: Any) -> None:
    """The admin server's handler, which never runs: every request gets an HTTP answer."""
    raise AssertionError("the admin listener upgraded a connection")


def serve_admin(
    host: Optional[str],
    port: int,
    *,
    health: Optional[str] = None,
    metrics_path: Optional[str] = None,
    render: Optional[Callable[[], str]] = None,
    reuse_port: bool = False,
    logger: Optional[logging.Logger] = None,
    ready: Optional[Callable[[], bool]] = None,
) -> WebSocketServer:
    """Answer the health check and the metrics on a listener of their own.

    Not counted in any server's ``max_connections``; never a WebSocket.
    Close it as any server (:meth:`~syncws.WebSocketServer.close`, or a
    ``with`` block).

    Args:
        host: the interface; ``None`` for all (keep it private).
        port: the port; 0 picks a free one (the server's ``port``).
        health: the path answered ``200 OK`` (``503`` once ``ready``
            says no), e.g. ``/healthz``.
        metrics_path: the path answered with :func:`syncws.metrics.render`'s
            text, e.g. ``/metrics``.
        render: writes the metrics instead (a group's:
            :meth:`syncws.metrics.GroupMetrics.render`).
        reuse_port: share the port with the other processes of a group, as
            their WebSocket port (see :func:`~syncws.serve`).
        logger: the server's logger (default ``syncws.admin``).
        ready: whether the process takes new clients (see :func:`routes`):
            pass the WebSocket server's
            :meth:`~syncws.WebSocketServer.is_serving`, so that the health
            check answers ``503`` while it drains after
            :meth:`~syncws.WebSocketServer.close`.

    Returns:
        The running server.

    Raises:
        ValueError: neither ``health`` nor ``metrics_path``.
        OSError: the address can't be bound.
    """
    answer = routes(health, metrics_path, render, then=_not_found, ready=ready)
    if answer is _not_found:
        raise ValueError("serve_admin() needs a health path, a metrics path, or both")
    return serve(
        _no_websocket, host, port, process_request=answer, compression=None, ping_interval=None,
        reuse_port=reuse_port, logger=logger or logging.getLogger("syncws.admin"),
        # Its refusals (404s) aren't WebSocket handshakes: counted apart.
        counters=metrics.ConnectionCounters(),
    )
