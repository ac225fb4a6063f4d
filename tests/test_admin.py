"""Tests for syncws.admin: the health check and the metrics on a listener of their own.

A server at ``max_connections`` answers 503 to every new connection before
reading it; the admin listener must still answer, over real sockets on
127.0.0.1. The command line's ``--admin-port`` is tested in
test_serveconfig.py.
"""

from __future__ import annotations

import http.client
import socket
import threading
from typing import Any, List

import pytest

import syncws
import syncws.admin
from conftest import http_get, servers_kept_alive, wait_for
from syncws import metrics
from syncws.datastructures import Headers

HOST = "127.0.0.1"
TIMEOUT = 10

pytestmark = pytest.mark.timeout(60)


def hold(websocket: Any) -> None:
    for _ in websocket:
        pass


def test_a_full_server_still_answers_its_health_check_and_metrics() -> None:
    with syncws.serve(hold, HOST, 0, max_connections=1) as server, syncws.admin.serve_admin(
        HOST, 0, health="/healthz", metrics_path="/metrics", render=lambda: metrics.render(server.metrics(), []),
    ) as admin:
        assert admin.port != server.port
        with syncws.connect(f"ws://{HOST}:{server.port}/", open_timeout=TIMEOUT):
            assert wait_for(lambda: len(server.connections) == 1, TIMEOUT)
            # The WebSocket port is full: it sheds load before reading.
            with pytest.raises(syncws.InvalidStatusCode) as busy:
                syncws.connect(f"ws://{HOST}:{server.port}/", open_timeout=TIMEOUT)
            assert busy.value.status_code == 503
            # The admin port answers, as many times as it is asked.
            for _ in range(3):
                assert http_get(admin.port, "/healthz?probe=1") == (200, "OK\n")
            status, text = http_get(admin.port, "/metrics")
            assert status == 200
            assert "\nsyncws_connections_open 1\n" in text
            assert 'syncws_handshakes_refused_total{status="503"} 1\n' in text


def test_the_admin_listener_answers_its_paths_only_and_never_upgrades() -> None:
    with servers_kept_alive(), syncws.admin.serve_admin(HOST, 0, health="/healthz") as admin:
        refused_before = metrics.collect().handshakes_refused
        assert http_get(admin.port, "/metrics") == (404, "Not Found: this port serves the health check and the metrics only.\n")
        with pytest.raises(syncws.InvalidStatusCode) as refused:
            syncws.connect(f"ws://{HOST}:{admin.port}/healthz", open_timeout=TIMEOUT)
        assert refused.value.status_code == 404  # health checks are plain GETs; never a 101
        with pytest.raises(syncws.InvalidStatusCode) as refused:
            syncws.connect(f"ws://{HOST}:{admin.port}/", open_timeout=TIMEOUT)
        assert refused.value.status_code == 404
        # Its 404s aren't refused WebSocket handshakes of the process.
        assert metrics.collect().handshakes_refused.get(404, 0) == refused_before.get(404, 0)
        assert admin.metrics().handshakes_refused == {404: 3}


def test_serve_admin_needs_something_to_answer() -> None:
    with pytest.raises(ValueError, match="health path, a metrics path"):
        syncws.admin.serve_admin(HOST, 0)


def test_the_admin_port_taken_is_an_error() -> None:
    with socket.create_server((HOST, 0)) as taken:
        with pytest.raises(OSError, match="in use"):
            syncws.admin.serve_admin(HOST, taken.getsockname()[1], health="/healthz")


def test_the_health_check_answers_503_once_the_process_is_not_ready() -> None:
    ready: List[bool] = [True]
    answer = syncws.admin.routes("/healthz", "/metrics", lambda: "syncws_up 1\n", ready=lambda: ready[0])
    assert answer is not None
    plain = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
    assert answer("/healthz", Headers()) == (200, plain, b"OK\n")
    ready[0] = False
    assert answer("/healthz?probe=1", Headers()) == (503, plain, b"draining\n")
    # The metrics and the rest don't depend on it.
    assert answer("/metrics", Headers())[:1] == (200,)
    assert answer("/other", Headers()) is None
    # Always ready without it.
    unasked = syncws.admin.routes("/healthz", None)
    assert unasked is not None and unasked("/healthz", Headers())[2] == b"OK\n"


def test_the_admin_listener_fails_the_health_check_while_the_server_drains() -> None:
    release = threading.Event()

    def slow_to_close(websocket: Any) -> None:
        hold(websocket)
        release.wait(TIMEOUT * 3)  # closed: this handler's cleanup makes the drain last

    server = syncws.serve(slow_to_close, HOST, 0)
    try:
        with syncws.admin.serve_admin(HOST, 0, health="/healthz", metrics_path="/metrics",
                                      render=lambda: metrics.render(server.metrics(), []),
                                      ready=server.is_serving) as admin:
            with syncws.connect(f"ws://{HOST}:{server.port}/", open_timeout=TIMEOUT) as websocket:
                assert http_get(admin.port, "/healthz") == (200, "OK\n")
                assert server.is_serving()
                server.close()
                with pytest.raises(syncws.ConnectionClosed) as closed:
                    websocket.recv(TIMEOUT)
                assert closed.value.code == 1001
            assert not server.is_serving()
            # Draining: the handler hasn't returned.
            connection = http.client.HTTPConnection(HOST, admin.port, timeout=TIMEOUT)
            try:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                assert (response.status, response.read()) == (503, b"draining\n")
                assert response.getheader("Cache-Control") == "no-store"
            finally:
                connection.close()
            status, text = http_get(admin.port, "/metrics")
            assert status == 200 and "\nsyncws_connections_open " in text
    finally:
        release.set()
        server.close()
        server.wait_closed(TIMEOUT)
