"""``examples/chat/server.py --history``: the chat on Redis Streams, run as users run it.

Chat processes are subprocesses on 127.0.0.1 and free ports, sharing a
``redis-server`` with ``appendonly yes``; clients are syncws clients, and a
headless Chromium for the page. Each message a client sends is
``"<client> <n>"``, so that a receiver can check what came, from whom, in
which order, and that nothing came twice.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import syncws
from services import CHAT_SERVER, HOST, ChatServer, Chromium, Redis, free_port

pytestmark = pytest.mark.needs("redis-server")

pytest.importorskip("redis", reason="redis-py is not installed (pip install 'syncws[redis]')")

TIMEOUT = 15.0

# How long a message waits for Redis before its sender is told it wasn't sent:
# longer than any restart here takes, however slow the machine (a restart
# shorter than this loses nothing; past it, the test fails, it doesn't hang).
PUBLISH_TIMEOUT = 60.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    # Killed while everyone chats: every write it acknowledged must be in its
    # file (with "everysec", a write made during a background fsync isn't yet).
    server = Redis(tmp_path, persist=True, appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_chat(directory: Path, redis: Redis, name: str, history: int = 1000, port: int = 0) -> ChatServer:
    chat = ChatServer(directory, redis.url, name,
                      extra=["--history", str(history), "--publish-timeout", str(PUBLISH_TIMEOUT), "--port", str(port)])
    try:
        chat.wait_serving()
    except BaseException:
        chat.stop()
        raise
    return chat


@pytest.fixture
def chats(tmp_path: Path, redis_server: Redis) -> Iterator[List[ChatServer]]:
    running: List[ChatServer] = []
    try:
        for index in range(2):
            running.append(start_chat(tmp_path, redis_server, f"chat{index}"))
        yield running
    finally:
        for chat in running:
            chat.stop()


class Client:
    """A chat client: what it was sent, parsed, in order."""

    def __init__(self, chat: ChatServer, room: str, name: str, since: Optional[str] = None) -> None:
        query = f"?name={name}" + ("" if since is None else f"&since={since}")
        self.websocket = syncws.connect(f"ws://{HOST}:{chat.port}/chat/{room}{query}", compression=None, max_queue=None)
        self.name = name
        self.events: List[Dict[str, Any]] = []
        self.texts: List[Dict[str, Any]] = []  # {"id", "text"}, and {"recovered": false}

    def read(self, until: Any, timeout: float = TIMEOUT) -> None:
        """Read events until ``until(self)`` is true."""
        deadline = time.monotonic() + timeout
        while not until(self):
            event = json.loads(self.websocket.recv(max(0.0, deadline - time.monotonic())))
            self.events.append(event)
            if "text" in event or "recovered" in event:
                self.texts.append(event)

    def drain(self, wait: float = 0.3) -> None:
        """Read what comes within ``wait`` of the last event."""
        try:
            while True:
                self.read(lambda client: False, wait)
        except TimeoutError:
            pass

    @property
    def last_id(self) -> str:
        return str([e for e in self.events if "id" in e][-1]["id"])


def present(client: Client) -> bool:
    return any("present" in event for event in client.events)


def stats(chat: ChatServer) -> Dict[str, Any]:
    with urllib.request.urlopen(f"http://{HOST}:{chat.port}/stats", timeout=TIMEOUT) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def wait_connected(chats: List[ChatServer], connected: int, timeout: float = PUBLISH_TIMEOUT) -> None:
    """Wait until every chat's reader has (1) or hasn't (0) a connection to Redis."""
    deadline = time.monotonic() + timeout
    while any(stats(chat)["connected"] != connected for chat in chats):
        assert time.monotonic() < deadline, f"the chats never reported connected={connected}"
        time.sleep(0.02)


# -- the protocol ------------------------------------------------------------------------


def test_ids_recovery_and_presence(tmp_path: Path, redis_server: Redis) -> None:
    chat = start_chat(tmp_path, redis_server, "chat", history=20)
    try:
        ann = Client(chat, "room", "ann")
        ann.read(present)  # who is there, and its own join: in either order
        ann.read(lambda c: any(e.get("joined") == "ann" for e in c.events))
        assert [list(e["present"].values()) for e in ann.events if "present" in e] == [["ann"]]
        for number in range(5):
            ann.websocket.send(f"ann {number}")
        ann.read(lambda c: len(c.texts) == 5)
        assert [e["text"] for e in ann.texts] == [f"ann {n}" for n in range(5)]
        assert all(set(e) == {"id", "text"} for e in ann.texts)
        # Back after the second: the three that followed, then live ones.
        bob = Client(chat, "room", "bob", since=ann.texts[1]["id"])
        bob.read(lambda c: len(c.texts) == 3)
        assert bob.texts == ann.texts[2:]
        bob.read(present)
        assert [sorted(e["present"].values()) for e in bob.events if "present" in e] == [["ann", "bob"]]
        ann.read(lambda c: any(e.get("joined") == "bob" for e in c.events))
        bob.websocket.close()
        ann.read(lambda c: any(e.get("left") == "bob" for e in c.events))
        # Pushed out of the 20 kept: the client is told first, then gets the history.
        # One at a time: a burst of 25 can outrun the server's stream reader by
        # more than the 20 kept, which then reports the trimmed ones lost to ann
        # as well (as it should; seen on free-threaded CPython, where the
        # publishing handler doesn't wait for the reader's turn at the GIL).
        for number in range(5, 30):
            ann.websocket.send(f"ann {number}")
            ann.read(lambda c: len(c.texts) == number + 1)
        carol = Client(chat, "room", "carol", since=ann.texts[0]["id"])
        carol.read(lambda c: len(c.texts) >= 2)
        assert carol.texts[0] == {"recovered": False}
        assert carol.texts[1]["text"].startswith("ann ") and carol.texts[1] in ann.texts
        # "since=" (empty): the whole history, no notice.
        dave = Client(chat, "room", "dave", since="")
        dave.read(lambda c: c.texts and c.texts[-1] == ann.texts[-1])
        assert dave.texts == ann.texts[-len(dave.texts):] and len(dave.texts) >= 10
        counters = stats(chat)
        assert (counters["recoveries"], counters["recoveries_failed"]) == (2, 1)
        for client in (ann, carol, dave):
            client.websocket.close()
    finally:
        chat.stop()


def test_history_needs_redis(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(CHAT_SERVER), "--history", "10"], capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 2 and "--history needs --redis" in result.stderr


# -- 300 clients, 10 rooms, a Redis restart ------------------------------------------------


@pytest.mark.timeout(240)
def test_a_redis_restart_under_300_clients_in_10_rooms_loses_nothing(
    chats: List[ChatServer], redis_server: Redis
) -> None:
    """Two processes, Redis SIGKILLed and started again while everyone chats.

    Every member of a room gets every message of the room once, in the
    same order as every other member; ten clients, one a room, drop out
    meanwhile and come back with their last id: they get exactly what
    they missed. Each step waits for what it needs (the chats seeing Redis
    go and come back, a client having its own message): no step is timed.
    """
    rooms = 10
    clients = [Client(chats[n % 2], f"room{n % rooms}", f"c{n}") for n in range(300)]
    for client in clients:
        client.read(present)  # subscribed: the live messages follow
    sent = [0] * len(clients)
    away: Dict[int, List[Dict[str, Any]]] = {}  # dropper -> what it had before it left

    def chat_round() -> None:
        for number, client in enumerate(clients):
            if number not in away:
                client.websocket.send(f"c{number} {sent[number]}")
                sent[number] += 1

    for _ in range(3):
        chat_round()  # in flight when Redis dies
    redis_server.kill()  # appendfsync always: its file has all it acknowledged
    killed = time.monotonic()
    wait_connected(chats, 0)
    for _ in range(2):
        chat_round()  # said while Redis is away: each publish waits for it
    redis_server.start()
    print(f"Redis down for {time.monotonic() - killed:.1f} s")
    wait_connected(chats, 1)
    chat_round()
    # Ten clients, one a room, leave once they have their own last message,
    # miss a round, and come back through the other process with their last id.
    for number in range(rooms):
        client = clients[number]
        client.read(lambda c, mine=f"c{number} {sent[number] - 1}": any(e["text"] == mine for e in c.texts if "text" in e))
        away[number] = list(client.texts)
        client.websocket.close()
    chat_round()
    for number in range(rooms):
        back = Client(chats[(number + 1) % 2], f"room{number}", f"c{number}", since=away[number][-1]["id"])
        back.texts = away.pop(number)
        clients[number] = back
    for _ in range(3):
        chat_round()
    # Everyone gets everything its room said.
    expected = {room: sum(sent[n] for n in range(room, 300, rooms)) for room in range(rooms)}
    for number, client in enumerate(clients):
        client.read(lambda c: len(c.texts) >= expected[number % rooms], 120)
    for room in range(rooms):
        members = clients[room::rooms]
        reference = [e["text"] for e in members[1].texts]
        assert len(reference) == expected[room] and len(set(reference)) == len(reference)
        for sender in range(room, 300, rooms):
            mine = [t for t in reference if t.split()[0] == f"c{sender}"]
            assert mine == [f"c{sender} {n}" for n in range(sent[sender])], f"c{sender}: {mine}"
        for member in members:
            assert [e.get("text") for e in member.texts] == reference, f"{member.name} differs"
    # And nothing more: a last message, sent once every member has all the
    # others, is the next thing each member gets (a repeat would come first).
    for room in range(rooms):
        clients[room].websocket.send("end")
    for number, client in enumerate(clients):
        client.read(lambda c: len(c.texts) > expected[number % rooms])
        assert client.texts[-1]["text"] == "end" and len(client.texts) == expected[number % rooms] + 1
    for chat in chats:
        counters = stats(chat)
        assert counters["publish_errors"] == 0 and counters["reconnects"] == 1, counters
        assert counters["gaps"] == 0 and counters["recoveries"] == rooms // 2, counters
    print(f"{sum(sent)} messages, {sum(expected[n % rooms] for n in range(300))} deliveries checked")
    for client in clients:
        assert not [e for e in client.events if "error" in e]
        client.websocket.close()


# -- the page ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_page_reconnects_by_itself_and_misses_nothing(tmp_path: Path, redis_server: Redis) -> None:
    port = free_port()
    page_server = start_chat(tmp_path, redis_server, "page", port=port)
    other = start_chat(tmp_path, redis_server, "other")
    browser = None
    try:
        browser = Chromium(f"http://{HOST}:{port}/?room=lobby&name=page")
        browser.wait_for("window.opened === 1")
        sender = Client(other, "lobby", "sender")
        sender.read(present)
        for number in range(5):
            sender.websocket.send(f"m{number}")
        assert browser.wait_for("window.received.length === 5 && window.received") == [f"m{n}" for n in range(5)]
        page_server.stop()  # the page's connection closes (1001)
        for number in range(5, 10):  # said while the page's server is away
            sender.websocket.send(f"m{number}")
        sender.read(lambda c: len(c.texts) == 10)
        page_server = start_chat(tmp_path, redis_server, "page", port=port)
        browser.wait_for("window.opened === 2")
        for number in range(10, 15):
            sender.websocket.send(f"m{number}")
        received = browser.wait_for("window.received.length >= 15 && window.received")
        assert received == [f"m{n}" for n in range(15)]
        assert browser.evaluate("document.getElementById('log').textContent") == "".join(
            f"m{n}\n" for n in range(15)
        )
        sender.websocket.close()
    finally:
        if browser is not None:
            browser.stop()
        page_server.stop()
        other.stop()


def test_a_room_name_is_logged_escaped(tmp_path: Path, redis_server: Redis) -> None:
    """The gap of a room a peer named with U+2028 or a bidi override is logged on one line, in order."""
    chat = ChatServer(tmp_path, redis_server.url, "chat", extra=["--redis-ping", "0.5"])
    try:
        chat.wait_serving()
        room = "a\u2028FORGED\u202e"
        with syncws.connect(f"ws://{HOST}:{chat.port}/chat/{urllib.parse.quote(room)}", timeout=TIMEOUT) as websocket:
            websocket.send("hello")
            assert websocket.recv(TIMEOUT) == "hello"  # subscribed
            redis_server.kill()
            redis_server.start()
            deadline = time.monotonic() + TIMEOUT
            while "may have missed messages" not in chat.log():
                assert time.monotonic() < deadline, chat.log()
                time.sleep(0.1)
    finally:
        chat.stop()
    gap_lines = [line for line in chat.log().splitlines() if "chat:" in line]
    assert gap_lines and not any(c in chat.log() for c in "\u2028\u202e"), chat.log()


def peak_rss_mib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from /proc")
@pytest.mark.timeout(120)
def test_members_recovering_a_history_that_dont_read_hold_a_bounded_page_each(
    tmp_path: Path, redis_server: Redis
) -> None:
    """Eight clients that ask for a history of 100 messages of 256 KiB, and never read it."""
    chat = start_chat(tmp_path, redis_server, "chat", history=100)
    clients = []
    try:
        with syncws.connect(f"ws://{HOST}:{chat.port}/chat/big", compression=None) as websocket:
            for _ in range(100):
                websocket.send("x" * 2**18)
                while '"text"' not in websocket.recv(TIMEOUT):
                    pass
        before = peak_rss_mib(chat.process.pid)
        for _ in range(8):
            sock = socket.create_connection((HOST, chat.port), timeout=TIMEOUT)
            clients.append(sock)
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET /chat/big?since= HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101"), head
            assert sock.recv(1)  # the history is coming: its first page was read; nothing more is
        # Each page of history was all of it (25 MiB, twice: bytes and str) for
        # every client: 400 MiB. A free-threaded CPython's allocator (mimalloc)
        # keeps what each thread freed for a while, so the bound is wider there.
        grown = peak_rss_mib(chat.process.pid) - before
        limit = 200 if sysconfig.get_config_var("Py_GIL_DISABLED") else 64
        assert grown < limit, f"the server grew by {grown} MiB"
    finally:
        for sock in clients:
            sock.close()
        chat.stop()

