"""syncws's log lines under gunicorn: in its error log, at its level, with time and level.

gunicorn configures its own loggers, not the root logger: without
``syncws.gunicorn_conf``'s hook, syncws's lines went to Python's last-resort
handler (WARNING and above, without time or level) and its INFO lines were
lost. gunicorn runs a small application of the test's own, on 127.0.0.1 and
a free port, and is stopped by its PID.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

import syncws

pytest.importorskip("gunicorn")

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 20

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def gunicorn_log(tmp_path: Path, *args: str, **env: str) -> str:
    """Run gunicorn with the app, make its handler fail once, stop it; its log."""
    (tmp_path / "boomapp.py").write_text(APP)
    port = free_port()
    log = tmp_path / "gunicorn.log"
    from gunicorn.config import KNOWN_SETTINGS

    no_control = ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-b", f"{HOST}:{port}", "-k", "gthread", "--threads", "4",
             "-c", "python:syncws.gunicorn_conf", *no_control, *args, "boomapp:app"],
            cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]), **env),
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                websocket = syncws.connect(f"ws://{HOST}:{port}/ws/boom", timeout=TIMEOUT)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        with websocket:
            websocket.send("go")
            with pytest.raises(syncws.ConnectionClosed) as closed:
                websocket.recv(TIMEOUT)
            assert closed.value.code == 1011
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)
    return log.read_text()


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
