"""The deployment recipe, run for real: nginx, three chat processes, Redis.

``examples/chat/server.py`` runs three times with ``--redis``, behind nginx
configured by ``examples/chat/nginx.conf`` (the file docs/deployment.rst
shows), with a ``redis-server`` of its own; all on 127.0.0.1 and free ports,
stopped by PID at the end. Clients connect through nginx, as browsers would.

Messages are ``"<client> <n>"``: the receiver can tell who sent each one and
in which order, so the tests check delivery exactly once, per-sender order,
and that no message crosses rooms.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

import syncws
from services import HOST, NGINX_CONF, ChatServer, Nginx, Redis, start_chat_servers, wait_message

pytestmark = pytest.mark.needs("redis-server", "nginx")

pytest.importorskip("redis", reason="redis-py is not installed (pip install 'syncws[redis]')")

TIMEOUT = 15.0  # for any one wait


class Deployment:
    def __init__(self, directory: Path) -> None:
        self.redis = Redis(directory)
        self.redis.start()
        self.chats: List[ChatServer] = []
        self.nginx = None
        try:
            self.chats = start_chat_servers(directory, self.redis.url, 3)
            self.nginx = Nginx(directory, [chat.port for chat in self.chats])
            self.nginx.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for chat in self.chats:
            chat.stop()
        self.redis.stop()

    def uri(self, room: str) -> str:
        assert self.nginx is not None
        return f"ws://{HOST}:{self.nginx.port}/chat/{room}"

    def stats(self, chat: ChatServer) -> Dict[str, int]:
        with urllib.request.urlopen(f"http://{HOST}:{chat.port}/stats", timeout=TIMEOUT) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    running = Deployment(tmp_path_factory.mktemp("deployment"))
    try:
        yield running
    finally:
        running.stop()


def join(deployment: Deployment, room: str, name: str) -> syncws.WebSocketClientProtocol:
    """Connect through nginx, then wait until the room is live for us.

    The server subscribes before it reads our first message, so our own
    hello coming back means we are in the room everywhere.
    """
    websocket = syncws.connect(deployment.uri(room), timeout=TIMEOUT, compression=None)
    websocket.send(f"hello {name}")
    wait_message(websocket, f"hello {name}", TIMEOUT)
    return websocket


def collect(websocket: syncws.WebSocketClientProtocol, expected: int, deadline: float) -> List[Tuple[str, int]]:
    """The next ``expected`` non-hello messages, as (sender, number) pairs."""
    received = []
    while len(received) < expected:
        message = websocket.recv(max(0.0, deadline - time.monotonic()))
        assert isinstance(message, str)
        if message.startswith("hello "):
            continue  # from members who joined after us
        sender, number = message.split()
        received.append((sender, int(number)))
    return received


def check_room(received: List[Tuple[str, int]], senders: List[str], count: int) -> None:
    """Exactly once, in each sender's order, from this room's senders only."""
    by_sender: Dict[str, List[int]] = {}
    for sender, number in received:
        by_sender.setdefault(sender, []).append(number)
    assert sorted(by_sender) == sorted(senders)
    for numbers in by_sender.values():
        assert numbers == list(range(count))


def test_nginx_config_keeps_idle_websockets() -> None:
    """The proxy timeouts outlast syncws's keepalive (20 s ping_interval)."""
    text = NGINX_CONF.read_text()
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        value = text.split(directive, 1)[1].split(";", 1)[0].strip()
        assert value.endswith("s") and int(value[:-1]) > 2 * 20
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_http_version 1.1;" in text


def test_page_through_nginx(deployment: Deployment) -> None:
    assert deployment.nginx is not None
    with urllib.request.urlopen(f"http://{HOST}:{deployment.nginx.port}/", timeout=TIMEOUT) as response:
        assert response.status == 200
        assert b"new WebSocket" in response.read()


@pytest.mark.timeout(180)
def test_300_clients_10_rooms_exactly_once_in_order(deployment: Deployment) -> None:
    rooms = [f"room{r}" for r in range(10)]
    members: Dict[str, List[Tuple[str, syncws.WebSocketClientProtocol]]] = {room: [] for room in rooms}
    per_client = 5
    try:
        for i in range(300):
            room = rooms[i % 10]
            name = f"c{i}"
            members[room].append((name, join(deployment, room, name)))
        # nginx spread them over the three processes.
        counts = [deployment.stats(chat)["members"] for chat in deployment.chats]
        assert sum(counts) == 300 and all(count > 0 for count in counts), counts

        start = time.monotonic()
        for number in range(per_client):
            for room in rooms:
                for name, websocket in members[room]:
                    websocket.send(f"{name} {number}")
        # 45,000 deliveries: 4 s on 3.9 at a load of 12 (2 cores), but
        # more than 30 s at a load of 20.
        deadline = time.monotonic() + 90
        for room in rooms:
            senders = [name for name, _ in members[room]]
            for _, websocket in members[room]:
                check_room(collect(websocket, len(senders) * per_client, deadline), senders, per_client)
        elapsed = time.monotonic() - start
        # Nothing more: no duplicates trailing behind.
        for room in rooms:
            for _, websocket in members[room][:3]:
                with pytest.raises(TimeoutError):
                    websocket.recv(0.2)
        print(f"{300 * 30 * per_client} deliveries in {elapsed:.1f} s")
    finally:
        for room in rooms:
            for _, websocket in members[room]:
                websocket.close()


@pytest.mark.timeout(60)
def test_a_client_that_never_reads_does_not_delay_the_room(deployment: Deployment) -> None:
    chat = deployment.chats[0]
    readers = [join(deployment, "slow", f"r{i}") for i in range(5)]
    # The stalled client connects straight to one process with a tiny
    # receive window, so its server-side send blocks after a few hundred KiB
    # instead of nginx and the kernel buffering megabytes for it.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, chat.port))
    stalled = syncws.connect(f"ws://{HOST}:{chat.port}/chat/slow", sock=sock, timeout=TIMEOUT, max_queue=1, compression=None)
    try:
        stalled.send("hello stalled")
        wait_message(readers[0], "hello stalled", TIMEOUT)
        # 5 MiB per member: more than the stalled client's socket buffers
        # hold (about 3 MiB on Linux), so its sender thread stays blocked on
        # it (until the fan-out's 10 s send timeout aborts it) while the
        # rest waits in its mailbox, or overflows it (4 MiB at most).
        big = "x" * (64 * 1024)
        count = 80
        start = time.monotonic()
        deadline = start + 2 * TIMEOUT
        read_counts = [0] * len(readers)
        progress = threading.Condition()

        def read_all(index: int) -> None:
            while read_counts[index] < count:
                message = readers[index].recv(max(0.0, deadline - time.monotonic()))
                if message.startswith("hello "):
                    continue
                assert message.startswith(f"r0 {read_counts[index]} ")
                with progress:
                    read_counts[index] += 1
                    progress.notify_all()

        # Every reader reads as it comes, each in a thread of its own, and
        # the sender stays at most a window of 1 MiB ahead of the slowest:
        # a reader slowed down by a loaded machine (seen on 3.13t) then
        # never has 4 MiB waiting, and isn't dropped as too slow itself.
        window = 16
        with concurrent.futures.ThreadPoolExecutor(len(readers)) as pool:
            reading = [pool.submit(read_all, index) for index in range(len(readers))]
            for number in range(count):
                with progress:
                    caught_up = progress.wait_for(
                        lambda: min(read_counts) >= number - window, max(0.0, deadline - time.monotonic())
                    )
                if not caught_up:
                    for future in reading:
                        if future.done():
                            future.result()  # a reader's own failure, if it had one
                assert caught_up, (number, read_counts)
                readers[0].send(f"r0 {number} {big}")
            for future in reading:
                future.result(max(0.0, deadline - time.monotonic()) + 1)
        elapsed = time.monotonic() - start
        # The readers had everything while a sender thread of its own still
        # waited for the stalled client (before the 10 s send timeout gave
        # up on it), or after it was dropped as too slow: they didn't wait
        # for it.
        stats = deployment.stats(chat)
        assert stats["slow_members"] + stats["too_slow"] == 1, (stats, elapsed)
        assert stats["failures"] == stats["too_slow"], (stats, elapsed)
    finally:
        for reader in readers:
            reader.close()
        # Abort: a closing handshake would wait for the stalled server side.
        # Reading lets the paused reader thread see the end of the stream.
        sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(syncws.ConnectionClosed):
            while True:
                stalled.recv(TIMEOUT)


@pytest.mark.timeout(90)
def test_redis_restart_delivery_resumes_and_the_gap_is_reported(deployment: Deployment) -> None:
    # One member per process, connected straight to it, plus one via nginx.
    clients = []
    try:
        for index, chat in enumerate(deployment.chats):
            websocket = syncws.connect(f"ws://{HOST}:{chat.port}/chat/restart", timeout=TIMEOUT, compression=None)
            websocket.send(f"hello p{index}")
            wait_message(websocket, f"hello p{index}", TIMEOUT)
            clients.append(websocket)
        gaps_before = [deployment.stats(chat)["gaps"] for chat in deployment.chats]

        deployment.redis.kill()
        killed = time.monotonic()
        deployment.redis.start()  # same port, empty: every subscription is gone

        # Probe until a message from process 0 reaches every process.
        probe = 0
        deadline = killed + TIMEOUT
        pending = set(range(len(clients)))
        while pending:
            assert time.monotonic() < deadline, f"processes {sorted(pending)} still cut off"
            clients[0].send(f"probe {probe}")
            for index in sorted(pending):
                try:
                    while True:
                        message = clients[index].recv(0.2)
                        if message.startswith("probe"):
                            pending.discard(index)
                            break
                except TimeoutError:
                    pass
            probe += 1
        resumed = time.monotonic() - killed
        assert resumed < 10, f"delivery resumed after {resumed:.1f} s"

        # Each process reported its gap: a counter and a log line with its length.
        for chat, before in zip(deployment.chats, gaps_before):
            assert deployment.stats(chat)["gaps"] > before
            assert re.search(r"restored after [0-9.]+ s: what was published meanwhile to 'restart'", chat.log())

        # And delivery is whole again: drain, then exactly once, in order.
        for websocket in clients:
            try:
                while True:
                    websocket.recv(0.3)
            except TimeoutError:
                pass
        for number in range(20):
            clients[1].send(f"p1 {number}")
        deadline = time.monotonic() + TIMEOUT
        for websocket in clients:
            check_room(collect(websocket, 20, deadline), ["p1"], 20)
    finally:
        for websocket in clients:
            websocket.close()
