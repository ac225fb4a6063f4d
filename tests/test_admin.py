"""Tests for syncws.admin: the health check and the metrics on a listener of their own.

A server at ``max_connections`` answers 503 to every new connection before
reading it; the admin listener must still answer, over real sockets on
127.0.0.1. The command line's ``--admin-port`` is tested in
test_serveconfig.py.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

import syncws
import syncws.admin
from conftest import http_get, wait_for
from syncws import metrics

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
    refused_before = metrics.collect().handshakes_refused
    with syncws.admin.serve_admin(HOST, 0, health="/healthz") as admin:
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
