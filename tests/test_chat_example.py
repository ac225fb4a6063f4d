"""``examples/chat/server.py`` in one process (no Redis): rooms, the page, errors.

The example runs as users run it, in a subprocess on 127.0.0.1 and a free
port; tests/test_deployment.py runs it across processes with Redis and nginx.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

import syncws
from services import HOST, ChatServer, wait_message

TIMEOUT = 10.0


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[ChatServer]:
    server = ChatServer(tmp_path, None, "chat")
    try:
        server.wait_serving()
        yield server
    finally:
        server.stop()


def get(chat: ChatServer, path: str) -> "tuple[int, str, bytes]":
    try:
        with urllib.request.urlopen(f"http://{HOST}:{chat.port}{path}", timeout=TIMEOUT) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_rooms_in_one_process(chat: ChatServer) -> None:
    uri = f"ws://{HOST}:{chat.port}/chat/"
    with syncws.connect(uri + "a") as alice, syncws.connect(uri + "a") as bob, syncws.connect(uri + "b") as carol:
        for websocket, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            websocket.send(f"hello {name}")
            wait_message(websocket, f"hello {name}", TIMEOUT)
        alice.send("hi room a")
        wait_message(alice, "hi room a", TIMEOUT)  # the sender too
        wait_message(bob, "hi room a", TIMEOUT)
        alice.send(b"binary is ignored")
        carol.send("hi room b")
        assert carol.recv(TIMEOUT) == "hi room b"  # nothing from room a came first
        status, _, body = get(chat, "/stats")
        assert status == 200 and json.loads(body)["members"] == 3


def test_page_stats_and_errors(chat: ChatServer) -> None:
    status, content_type, body = get(chat, "/")
    assert status == 200 and content_type.startswith("text/html") and b"/chat/" in body
    status, content_type, body = get(chat, "/stats")
    assert status == 200 and content_type == "application/json"
    assert set(json.loads(body)) >= {"published", "received", "delivered", "failures", "gaps", "pid", "members"}
    status, _, body = get(chat, "/nowhere")
    assert status == 404 and b"/chat/<room>" in body
    with syncws.connect(f"ws://{HOST}:{chat.port}/chat/") as websocket:
        with pytest.raises(syncws.ConnectionClosed) as info:
            websocket.recv(TIMEOUT)
    assert info.value.code == 1008 and "room names" in info.value.reason
