"""syncws.settings: every bad setting is refused at the call, naming itself."""

from __future__ import annotations

import socket
from typing import Any, Type

import pytest

import syncws
from syncws.settings import check_settings

BAD_SETTINGS = [
    ("max_size", 0, ValueError),
    ("max_size", -1, ValueError),
    ("max_size", 1.5, TypeError),
    ("max_size", True, TypeError),
    ("max_size", "1M", TypeError),
    ("max_size", (1000, 100, 10), TypeError),
    ("max_size", (1000, 0), ValueError),
    ("max_size", (100, 1000), ValueError),
    ("max_size", ("a", 10), TypeError),
    ("max_queue", 0, ValueError),
    ("max_queue", 2.0, TypeError),
    ("max_queue", (4, 8), ValueError),
    ("max_queue", (4, -1), ValueError),
    ("max_queue", (None, 2), ValueError),
    ("max_queue", (4, "2"), TypeError),
    ("timeout", -1, ValueError),
    ("timeout", float("nan"), ValueError),
    ("timeout", "10", TypeError),
    ("open_timeout", -0.5, ValueError),
    ("close_timeout", -1, ValueError),
    ("write_timeout", "x", TypeError),
    ("read_limit", 0, ValueError),
    ("read_limit", None, TypeError),
    ("write_limit", -5, ValueError),
    ("write_limit", 2.5, TypeError),
    ("ping_interval", 0, ValueError),
    ("ping_interval", -1, ValueError),
    ("ping_timeout", 0, ValueError),
    ("ping_timeout", "20", TypeError),
    ("compression", "gzip", ValueError),
    ("compression", True, TypeError),
]


@pytest.mark.parametrize("name,value,error", BAD_SETTINGS)
def test_check_settings_refuses(name: str, value: Any, error: Type[Exception]) -> None:
    with pytest.raises(error) as excinfo:
        check_settings(**{name: value})
    assert name in str(excinfo.value)
    assert repr(value) in str(excinfo.value)


def _port_nobody_listens_on() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("name,value,error", BAD_SETTINGS)
def test_connect_refuses_before_connecting(name: str, value: Any, error: Type[Exception]) -> None:
    # Nobody listens on this port: a socket opened would be ConnectionRefused.
    port = _port_nobody_listens_on()
    with pytest.raises(error, match=name):
        syncws.connect(f"ws://127.0.0.1:{port}/", proxy=None, **{name: value})


@pytest.mark.parametrize("name,value,error", BAD_SETTINGS)
def test_serve_refuses_before_binding(name: str, value: Any, error: Type[Exception]) -> None:
    port = _port_nobody_listens_on()
    with pytest.raises(error, match=name):
        syncws.serve(lambda ws: None, "127.0.0.1", port, **{name: value})
    # Nothing was bound: the port is still free.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_normalized_values() -> None:
    settings = check_settings(max_size=1000, max_queue=16)
    assert settings.max_size == (1000, 1000)
    assert settings.max_queue == (16, 4)
    settings = check_settings(max_size=(1000, 100), max_queue=(10, 3))
    assert (settings.max_message_size, settings.max_fragment_size) == (1000, 100)
    assert (settings.max_queue_high, settings.max_queue_low) == (10, 3)
    settings = check_settings(max_size=None, max_queue=None)
    assert settings.max_size == (None, None) and settings.max_queue == (None, None)
    assert check_settings(max_size=(1000, None)).max_size == (1000, None)
    assert check_settings(max_queue=(8, None)).max_queue == (8, 2)


def test_timeouts_resolve() -> None:
    settings = check_settings(timeout=5)
    assert (settings.open_timeout, settings.close_timeout) == (5, 5)
    settings = check_settings(timeout=5, open_timeout=1, close_timeout=0)
    assert (settings.open_timeout, settings.close_timeout) == (1, 0)
    assert check_settings(timeout=None).open_timeout is None


def _echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


def test_tuple_limits_against_websockets(ws_serve: Any) -> None:
    # Once accepted, then every connection died with 1011 in the reader thread.
    uri = ws_serve(_echo, max_size=1000)
    with syncws.connect(uri, max_size=(1000, 1000), max_queue=(4, 1)) as ws:
        ws.send("x" * 500)
        assert ws.recv(timeout=5) == "x" * 500


def test_tuple_limits_syncws_both_ways() -> None:
    with syncws.serve(_echo, "127.0.0.1", 0, max_size=(2000, 1000), max_queue=(8, 2)) as server:
        with syncws.connect(f"ws://127.0.0.1:{server.port}/", max_size=(1000, None), max_queue=(4, None)) as ws:
            ws.send("y" * 900)
            assert ws.recv(timeout=5) == "y" * 900
