"""syncws's log lines under gunicorn: in its error log, at its level, with time and level.

gunicorn configures its own loggers, not the root logger: without
``syncws.gunicorn_conf``'s hook, syncws's lines went to Python's last-resort
handler (WARNING and above, without time or level) and its INFO lines were
lost. gunicorn runs a small application of the test's own, on 127.0.0.1 and
a free port, and is stopped by its PID.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

import syncws
from services import HOST, Gunicorn

pytest.importorskip("gunicorn")

TIMEOUT = 20

# A thread per open WebSocket, as docs/wsgi.rst recommends.
THREADS = ("-k", "gthread", "--threads", "4")

APP = '''
import logging
import os

from syncws.wsgi import WebSocketMiddleware

if os.environ.get("APP_LOGGING"):
    logging.basicConfig(level=logging.INFO, format="APP %(levelname)s %(name)s: %(message)s")


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\\n"]


def boom(websocket):
    websocket.recv()
    raise RuntimeError("the handler failed")


app = WebSocketMiddleware(hello, {"/ws/boom": boom})
'''

# gunicorn's error log format: "[time] [pid] [LEVEL] message".
GUNICORN_LINE = r"^\[[^]]+\] \[\d+\] \[{level}\] "


def gunicorn_log(tmp_path: Path, *args: str, **env: str) -> str:
    """Run gunicorn with the app, make its handler fail once, stop it; its log."""
    (tmp_path / "boomapp.py").write_text(APP)
    gunicorn = Gunicorn(tmp_path, "boomapp:app", *THREADS, *args, env=dict(env, PYTHONPATH=str(tmp_path)))
    try:
        with syncws.connect(f"ws://{HOST}:{gunicorn.port}/ws/boom", timeout=TIMEOUT) as websocket:
            websocket.send("go")
            with pytest.raises(syncws.ConnectionClosed) as closed:
                websocket.recv(TIMEOUT)
            assert closed.value.code == 1011
    finally:
        gunicorn.stop()
    return gunicorn.log()


def lines_with(log: str, text: str) -> List[str]:
    return [line for line in log.splitlines() if text in line]


@pytest.mark.timeout(60)
def test_syncws_lines_go_to_gunicorns_error_log(tmp_path: Path) -> None:
    log = gunicorn_log(tmp_path)
    (error,) = lines_with(log, "the handler raised")
    assert re.match(GUNICORN_LINE.format(level="ERROR"), error), log
    # The traceback follows it.
    assert "Traceback (most recent call last):" in log.split(error, 1)[1]
    assert "RuntimeError: the handler failed" in log
    # INFO, gunicorn's default level: the connection's end.
    (closed,) = lines_with(log, "closed: 1011 (internal error)")
    assert re.match(GUNICORN_LINE.format(level="INFO"), closed), log


@pytest.mark.timeout(60)
def test_gunicorns_log_level_applies(tmp_path: Path) -> None:
    log = gunicorn_log(tmp_path, "--log-level", "warning")
    (error,) = lines_with(log, "the handler raised")
    assert re.match(GUNICORN_LINE.format(level="ERROR"), error), log
    assert lines_with(log, "closed: 1011") == []


@pytest.mark.timeout(60)
def test_an_applications_logging_configuration_is_kept(tmp_path: Path) -> None:
    log = gunicorn_log(tmp_path, APP_LOGGING="1")
    assert lines_with(log, "APP ERROR syncws.server: connection") == lines_with(log, "the handler raised")
    assert len(lines_with(log, "APP INFO syncws.server: connection")) == 1  # closed: 1011
