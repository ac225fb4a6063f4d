"""reconnect(): backoff that grows while connections die young,
process_exception, and the ways to stop the loop. Over 127.0.0.1."""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any, List

import pytest

import syncws
from syncws import ConnectionClosed, InvalidStatusCode

pytestmark = pytest.mark.timeout(30)


def crash_at_once_syncws(counter: List[int]) -> Any:
    def handler(ws: Any) -> None:
        counter.append(1)
        ws.close(1011, "crash")

    return handler


def drain_until(connections: Any, seconds: float) -> None:
    """Use connections the usual way until ``seconds`` pass, then stop()."""
    timer = threading.Timer(seconds, connections.stop)
    timer.start()
    try:
        for ws in connections:
            try:
                for _ in ws:
                    pass
            except ConnectionClosed:
                continue
    finally:
        timer.cancel()


@pytest.mark.parametrize("server", ["syncws", "websockets"])
def test_crash_looping_server_is_not_hammered(server: str, ws_serve: Any) -> None:
    # Once: 1,019 connections in 3 s against this server.
    counter: List[int] = []
    if server == "syncws":
        srv = syncws.serve(crash_at_once_syncws(counter), "127.0.0.1", 0)
        uri = f"ws://127.0.0.1:{srv.port}/"
    else:
        def handler(ws: Any) -> None:
            counter.append(1)
            ws.close(1011, "crash")

        uri = ws_serve(handler)
    try:
        connections = syncws.reconnect(uri)
        started = time.monotonic()
        drain_until(connections, 3.0)
        assert time.monotonic() - started < 5  # stop() ended it promptly
    finally:
        if server == "syncws":
            srv.close()
            srv.wait_closed(10)
    # Delays of 0.5-1 s, 0.8-1.6 s, 1.3-2.6 s...: at most 4 in 3 s.
    assert 2 <= len(counter) <= 5, len(counter)
    assert connections.connections_opened == len(counter)


def test_healthy_connection_resets_the_backoff() -> None:
    counter: List[int] = []
    with syncws.serve(crash_at_once_syncws(counter), "127.0.0.1", 0) as server:
        connections = syncws.reconnect(f"ws://127.0.0.1:{server.port}/", initial_delay=0.01, min_uptime=0)
        for ws in connections:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            if len(counter) == 20:
                break
        # min_uptime=0: every connection counts as a success, no growth.
        assert connections._ceiling == 0.01


def test_process_exception_decides_what_is_retried() -> None:
    attempts: List[str] = []

    def process_request(path: str, headers: Any) -> Any:
        attempts.append(path)
        if len(attempts) < 3:
            return syncws.respond(403, "not yet\n")
        return None

    seen: "queue.Queue[BaseException]" = queue.Queue()

    def retry_403(exc: Exception) -> Any:
        seen.put(exc)
        if isinstance(exc, InvalidStatusCode) and exc.status_code == 403:
            return None
        return exc

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(message)

    with syncws.serve(echo, "127.0.0.1", 0, process_request=process_request) as server:
        connections = syncws.reconnect(
            f"ws://127.0.0.1:{server.port}/", initial_delay=0.01, process_exception=retry_403
        )
        with connections:
            ws = next(connections)
            ws.send("finally")
            assert ws.recv(timeout=5) == "finally"
        assert ws.closed
    assert len(attempts) == 3 and seen.qsize() == 2


def test_process_exception_can_raise_another_exception() -> None:
    class GiveUp(Exception):
        pass

    with syncws.serve(lambda ws: None, "127.0.0.1", 0, process_request=lambda p, h: syncws.respond(503, "busy")) as server:
        connections = syncws.reconnect(
            f"ws://127.0.0.1:{server.port}/", process_exception=lambda exc: GiveUp(str(exc))
        )
        with pytest.raises(GiveUp, match="503"):
            next(connections)


def test_default_retries_503_but_not_404() -> None:
    answers = ["busy", "busy", "missing"]

    def process_request(path: str, headers: Any) -> Any:
        answer = answers.pop(0)
        return syncws.respond(503 if answer == "busy" else 404, answer)

    with syncws.serve(lambda ws: None, "127.0.0.1", 0, process_request=process_request) as server:
        with pytest.raises(InvalidStatusCode) as excinfo:
            next(syncws.reconnect(f"ws://127.0.0.1:{server.port}/", initial_delay=0.01))
    assert excinfo.value.status_code == 404 and answers == []


def close_code_reporter(closed: "queue.Queue[Any]", greeting: Any = None) -> Any:
    """A handler that (optionally) greets, waits for the close, reports its code."""

    def handler(ws: Any) -> None:
        if greeting is not None:
            ws.send(greeting)
        try:
            ws.recv(timeout=20)
        except ConnectionClosed:
            pass
        closed.put(ws.close_code)

    return handler


def test_stop_from_another_thread_closes_the_current_connection() -> None:
    closed: "queue.Queue[Any]" = queue.Queue()
    with syncws.serve(close_code_reporter(closed), "127.0.0.1", 0) as server:
        connections = syncws.reconnect(f"ws://127.0.0.1:{server.port}/")
        yielded = []
        timer = threading.Timer(0.2, connections.stop)
        timer.start()
        for ws in connections:
            yielded.append(ws)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)  # ended by stop(), not by the timeout
        assert len(yielded) == 1 and yielded[0].closed
        assert closed.get(timeout=5) == 1000


def test_stop_cuts_a_backoff_wait_short() -> None:
    # Nobody listens: every attempt fails, the wait would be up to 60 s.
    connections = syncws.reconnect("ws://127.0.0.1:9/", initial_delay=60, max_delay=60, proxy=None)
    threading.Timer(0.3, connections.stop).start()
    started = time.monotonic()
    assert list(connections) == []
    assert time.monotonic() - started < 5


def test_break_closes_the_current_connection() -> None:
    closed: "queue.Queue[Any]" = queue.Queue()
    with syncws.serve(close_code_reporter(closed, "hello"), "127.0.0.1", 0) as server:
        for ws in syncws.reconnect(f"ws://127.0.0.1:{server.port}/"):
            assert ws.recv(timeout=5) == "hello"
            break
        assert closed.get(timeout=5) == 1000
        assert ws.closed


def test_bad_backoff_settings() -> None:
    with pytest.raises(ValueError, match="initial_delay"):
        syncws.reconnect("ws://127.0.0.1/", initial_delay=-1)
    with pytest.raises(ValueError, match="factor"):
        syncws.reconnect("ws://127.0.0.1/", factor=0.5)


def test_backoff_lines_leave_the_password_and_query_values_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="syncws.client")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, not listening: refused
        port = unused.getsockname()[1]
        uri = f"ws://bob:hunter2@127.0.0.1:{port}/?access_token=tok123"
        connections = syncws.reconnect(uri, initial_delay=0.01, max_delay=0.01)
        failures: List[Exception] = []

        def count(exc: Exception) -> Any:
            failures.append(exc)
            return exc if len(failures) > 2 else None

        connections.process_exception = count
        with pytest.raises(ConnectionRefusedError):
            next(connections)
    lines = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(lines) == 2
    for line in lines:
        assert line.startswith(f"ws://bob:[redacted]@127.0.0.1:{port}/?access_token=[redacted]: ")
    assert "hunter2" not in caplog.text and "tok123" not in caplog.text
