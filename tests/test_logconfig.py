"""Tests for syncws.logconfig: the connection on every line, JSON lines, who configures.

Servers run in this process on 127.0.0.1; their lines are captured by a
handler with the filter and formatter under test. ``configure()`` runs in a
fresh interpreter, where nothing configured logging yet (pytest does, here).
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, List

import pytest

import syncws
from conftest import wait_for
from syncws.logconfig import ConnectionFilter, JsonFormatter

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 10

app_logger = logging.getLogger("app")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON lines of every record at INFO and above, through the filter under test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ConnectionFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(stream: io.StringIO) -> List[Any]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_carry_the_pid_and_the_connection(captured: io.StringIO) -> None:
    ids: List[str] = []
    ended = threading.Semaphore(0)

    def handler(websocket: syncws.WebSocketServerProtocol) -> None:
        ids.append(websocket.id.hex[:8])
        app_logger.info("hello from the handler")
        for message in websocket:
            app_logger.info("got %s", message)
        ended.release()

    with syncws.serve(handler, HOST, 0) as server:
        for _ in range(2):
            with syncws.connect(f"ws://{HOST}:{server.port}/") as client:
                client.send("hi")
        for _ in range(2):
            assert ended.acquire(timeout=TIMEOUT)
        # The server side's "closed" line comes from its reader thread.
        assert wait_for(lambda: captured.getvalue().count("closed: 1000") >= 2, TIMEOUT)
    lines = parsed(captured)
    assert {line["pid"] for line in lines} == {os.getpid()}
    assert {line["level"] for line in lines} == {"INFO"}
    for connection in ids:
        mine = [line for line in lines if line["connection"] == connection]
        messages = [line["message"] for line in mine]
        # The handler's own lines, and syncws's from both of its threads.
        assert "hello from the handler" in messages and "got hi" in messages
        assert any(m.startswith(f"connection {connection} opened") for m in messages)
        assert any(m.startswith(f"connection {connection} closed: 1000") for m in messages)
    # The server's own life is about no connection.
    listening = [line for line in lines if line["message"].startswith("server listening")]
    assert listening and all(line["connection"] is None for line in listening)


def test_a_line_from_another_thread_names_the_connection_it_logs_about(captured: io.StringIO) -> None:
    # The timer thread's keepalive line, say: the connection is an argument.
    opened = threading.Event()
    connections: List[Any] = []

    def handler(websocket: syncws.WebSocketServerProtocol) -> None:
        connections.append(websocket)
        opened.set()
        for _ in websocket:
            pass

    with syncws.serve(handler, HOST, 0) as server:
        with syncws.connect(f"ws://{HOST}:{server.port}/"):
            assert opened.wait(TIMEOUT)
            logging.getLogger("syncws.server").info("%s: elsewhere", connections[0])
            from syncws.logs import LazyLabel

            logging.getLogger("syncws.server").info("%s: lazily", LazyLabel(connections[0]))
    lines = {line["message"].rpartition(": ")[2]: line for line in parsed(captured)}
    assert lines["elsewhere"]["connection"] == lines["lazily"]["connection"] == connections[0].id.hex[:8]


def test_json_lines_carry_the_traceback(captured: io.StringIO) -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        app_logger.exception("it failed")
    (line,) = parsed(captured)
    assert line["message"] == "it failed"
    assert line["connection"] is None
    assert line["exception"].startswith("Traceback") and "ValueError: boom\nsecond line" in line["exception"]
    assert line["time"].endswith("+00:00")


def test_json_lines_hold_no_character_a_reader_breaks_a_line_at(captured: io.StringIO) -> None:
    """Peer text an application logs as it is stays on one line, and drives no terminal."""
    said = "hi\u2028FORGED\x85next\u2029\x9b2J\u202eevil\u200f caf\u00e9 \\\u2028"
    app_logger.info("user said %s", said)
    text = captured.getvalue()
    assert len(text.splitlines()) == 1  # str.splitlines() breaks at U+0085, U+2028, U+2029 too
    assert not any(character in text for character in "\x85\x9b\u2028\u2029\u202e\u200f")
    assert "caf\u00e9" in text  # printable text stays readable
    (line,) = parsed(captured)
    assert line["message"] == f"user said {said}"  # the same JSON string


def run_python(code: str) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=TIMEOUT)


def test_configure_text_lines() -> None:
    result = run_python(
        "import logging, syncws.logconfig as c\n"
        "assert c.configure('warning', 'text')\n"
        "logging.getLogger('x').info('not shown')\n"
        "logging.getLogger('x').warning('shown')\n"
    )
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    date, time, pid, connection, level, rest = line.split(" ", 5)
    assert (pid, connection, level, rest) == (str(int(pid)), "-", "WARNING", "x: shown")


def test_configure_leaves_an_applications_configuration_alone() -> None:
    result = run_python(
        "import logging, syncws.logconfig as c\n"
        "logging.basicConfig(format='APP %(message)s', level=logging.INFO)\n"
        "assert not c.configure('debug', 'json')\n"
        "logging.getLogger('x').info('mine')\n"
        "logging.getLogger('x').debug('not shown')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "APP mine\n"


def test_configure_refuses_unknown_names() -> None:
    from syncws.logconfig import configure

    with pytest.raises(ValueError, match="log level must be one of debug, info"):
        configure("verbose")
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        configure("info", "xml")
