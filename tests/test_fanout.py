"""Tests for ``syncws.fanout``: LocalFanout in one process, RedisFanout over a real redis-server.

A syncws server in this process runs a room handler (``/room`` joins
``room``; every text message is published to it); clients are syncws clients
on 127.0.0.1. Two :class:`RedisFanout` instances stand for two processes: they
share only the Redis server. Redis runs as a child process on a free port and
is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import syncws
from syncws.fanout import Fanout, FanoutStats, Gap, LocalFanout, PublishError, RedisFanout, _pack
from services import HOST, ChatServer, Gunicorn, Redis, wait_message

TIMEOUT = 10.0

needs_redis = pytest.mark.needs("redis-server")


def room_server(fanout: Fanout) -> syncws.WebSocketServer:
    def handler(websocket: syncws.WebSocketServerProtocol) -> None:
        room = websocket.path.strip("/")
        fanout.subscribe(room, websocket)
        try:
            for message in websocket:
                fanout.publish(room, message)
        finally:
            fanout.unsubscribe_all(websocket)

    return syncws.serve(handler, HOST, 0, compression=None)


def join(server: syncws.WebSocketServer, room: str, name: str, **kwargs: Any) -> syncws.WebSocketClientProtocol:
    """Connect and wait until our own hello comes back: we're in the room."""
    # An unbounded queue: the client's reader thread never pauses, so a
    # test that stops early still closes promptly.
    websocket = syncws.connect(f"ws://{HOST}:{server.port}/{room}", compression=None, max_queue=None, **kwargs)
    websocket.send(f"hello {name}")
    wait_message(websocket, f"hello {name}")
    return websocket


def receive(websocket: syncws.WebSocketClientProtocol, count: int) -> List[Any]:
    deadline = time.monotonic() + TIMEOUT
    messages = []
    while len(messages) < count:
        message = websocket.recv(max(0.0, deadline - time.monotonic()))
        if isinstance(message, str) and message.startswith("hello "):
            continue
        messages.append(message)
    return messages


def check_per_sender(messages: List[Any], senders: int, count: int) -> None:
    """``"<sender> <n>"`` messages: each sender's, exactly once and in order."""
    by_sender: dict = {}
    for message in messages:
        sender, number = message.split()
        by_sender.setdefault(sender, []).append(int(number))
    assert by_sender == {str(s): [n for n in range(count) if n % senders == s] for s in range(senders)}


def assert_silent(websocket: syncws.WebSocketClientProtocol, wait: float = 0.2) -> None:
    """Nothing but hellos (from later joiners) arrives within ``wait``."""
    deadline = time.monotonic() + wait
    while True:
        try:
            message = websocket.recv(max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return
        assert isinstance(message, str) and message.startswith("hello "), message


def stalled_client(server: syncws.WebSocketServer, room: str) -> Tuple[syncws.WebSocketClientProtocol, socket.socket]:
    """A member that stops reading: a tiny receive buffer and queue."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((HOST, server.port))
    websocket = syncws.connect(f"ws://{HOST}:{server.port}/{room}", sock=sock, compression=None, max_queue=1)
    return websocket, sock


def abort(websocket: syncws.WebSocketClientProtocol, sock: socket.socket) -> None:
    """Cut a stalled client off, and read until its paused reader thread has ended.

    Called in ``finally``, also once the test closed it: a reader thread left
    paused by a failed test would fail the later thread-leak checks.
    """
    with contextlib.suppress(OSError):  # the test closed the socket already
        sock.shutdown(socket.SHUT_RDWR)
    with pytest.raises(syncws.ConnectionClosed):
        while True:
            websocket.recv(TIMEOUT)


# -- LocalFanout ------------------------------------------------------------------


@pytest.fixture
def local() -> Iterator[Tuple[LocalFanout, syncws.WebSocketServer]]:
    fanout = LocalFanout()
    server = room_server(fanout)
    try:
        yield fanout, server
    finally:
        server.close()
        server.wait_closed(TIMEOUT)
        fanout.close()


def test_local_delivers_to_the_room_only_once_in_order(local: Tuple[LocalFanout, syncws.WebSocketServer]) -> None:
    fanout, server = local
    a = [join(server, "a", f"a{i}") for i in range(3)]
    b = join(server, "b", "b0")
    assert fanout.channels() == {"a", "b"}
    assert len(fanout.members("a")) == 3
    for number in range(100):
        a[number % 3].send(f"a{number % 3} {number}")
    a[0].send(b"\x00binary")
    for websocket in a:
        messages = receive(websocket, 101)
        binary = messages.index(b"\x00binary")
        assert "a0 99" in messages[:binary]  # a0 sent it after its texts
        check_per_sender([m[1:] for m in messages if isinstance(m, str)], 3, 100)
        assert_silent(websocket)
    assert_silent(b)
    assert fanout.stats.published == 101 + 4  # and the hellos


def test_local_unsubscribe(local: Tuple[LocalFanout, syncws.WebSocketServer]) -> None:
    fanout, server = local
    a = join(server, "a", "a")
    b = join(server, "a", "b")
    (server_side_a,) = [c for c in server.connections if c.remote_address == a.local_address]
    fanout.unsubscribe("a", server_side_a)
    fanout.unsubscribe("a", server_side_a)  # not a member: nothing
    fanout.unsubscribe("nowhere", server_side_a)
    b.send("after")
    assert receive(b, 1) == ["after"]
    assert_silent(a)
    b.close()
    a.close()
    deadline = time.monotonic() + TIMEOUT
    while fanout.channels() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fanout.channels() == set()  # handlers called unsubscribe_all


class Recorder:
    """Stands for a connection (no socket): notes what the fan-out sends it."""

    remote_address = (HOST, 0)

    def __init__(self) -> None:
        self.sent: "queue.Queue[Tuple[Any, Any]]" = queue.Queue()

    def send_nowait(self, message: Any, timeout: Any = None, *, text: Any = None) -> bool:
        self.sent.put((message, text))
        return True


def test_a_message_is_encoded_once_for_every_member() -> None:
    fanout = LocalFanout()
    members = [Recorder() for _ in range(3)]
    try:
        for member in members:
            fanout.subscribe("c", member)  # type: ignore[arg-type]
        fanout.publish("c", "héllo")
        fanout.publish("c", b"\xff")
        texts, binaries = zip(*[(member.sent.get(timeout=TIMEOUT), member.sent.get(timeout=TIMEOUT)) for member in members])
        assert [(m, text) for m, text in texts] == [("héllo".encode(), True)] * 3
        assert len({id(m) for m, _ in texts}) == 1  # one encoding, shared by the members
        assert [(m, text) for m, text in binaries] == [(b"\xff", False)] * 3
    finally:
        fanout.close()


class WouldBlock(Recorder):
    """A connection whose first send would block: meanwhile, two more messages arrive."""

    def __init__(self, fanout: LocalFanout) -> None:
        super().__init__()
        self.fanout = fanout
        self.closing: "queue.Queue[Tuple[int, str]]" = queue.Queue()

    def send_nowait(self, message: Any, timeout: Any = None, *, text: Any = None) -> bool:
        self.fanout.publish("c", "2")
        self.fanout.publish("c", "3")
        return False

    def send(self, message: Any, timeout: Any = None, *, text: Any = None) -> None:
        self.sent.put((message, text))

    def start_closing(self, code: int, reason: str) -> None:
        self.closing.put((code, reason))


def test_local_max_pending_counts_the_message_being_sent() -> None:
    """The message a send is under way for still waits: it counts against ``max_pending``.

    It was taken out of the mailbox for the send and put back when the send
    would block, so a member could hold ``max_pending`` + 1 messages (seen
    as 5 MiB waiting with ``max_pending_bytes`` at 4 MiB).
    """
    failures: "queue.Queue[Exception]" = queue.Queue()
    fanout = LocalFanout(max_pending=2, on_failure=lambda connection, exc: failures.put(exc))
    member = WouldBlock(fanout)
    try:
        fanout.subscribe("c", member)  # type: ignore[arg-type]
        fanout.publish("c", "1")
        exc = failures.get(timeout=TIMEOUT)
        assert isinstance(exc, OverflowError) and "2 messages" in str(exc) and "max_pending=2" in str(exc)
        assert member.closing.get(timeout=TIMEOUT) == (1008, "too slow to keep up")
        assert fanout.members("c") == set() and fanout.pending() == 0
        stats = fanout.stats
        assert (stats.failures, stats.too_slow, stats.discarded, stats.delivered) == (1, 1, 2, 0)
    finally:
        fanout.close()


def test_local_bad_arguments() -> None:
    fanout = LocalFanout()
    with pytest.raises(TypeError, match="channel must be a str, got int"):
        fanout.subscribe(1, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message must be str or bytes-like, got dict"):
        fanout.publish("a", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        LocalFanout(max_pending=0)
    with pytest.raises(ValueError, match="max_pending_bytes must be at least 1, got 0"):
        LocalFanout(max_pending_bytes=0)
    # NaN made every send to a member that stopped reading wait forever; a
    # negative timeout aborted each connection at its first blocked send.
    for timeout in (float("nan"), -1):
        with pytest.raises(ValueError, match=r"timeout must be >= 0 seconds or None, got"):
            LocalFanout(timeout=timeout)
    assert LocalFanout(timeout=float("inf")).timeout is None  # no limit, as for serve()
    fanout.close()
    fanout.close()
    with pytest.raises(RuntimeError, match="closed"):
        fanout.subscribe("a", None)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "limits, limit_hit",
    [
        (dict(max_pending=50, max_pending_bytes=2**30), "max_pending=50"),
        (dict(), "max_pending_bytes=4194304"),
    ],
)
def test_local_stalled_member_does_not_delay_the_others_and_is_dropped_when_full(
    limits: Any, limit_hit: str
) -> None:
    failures: List[Tuple[Any, Exception]] = []
    failed = threading.Event()

    def on_failure(connection: Any, exc: Exception) -> None:
        failures.append((connection, exc))
        failed.set()

    fanout = LocalFanout(timeout=1, on_failure=on_failure, **limits)
    server = room_server(fanout)
    stalled_clients = []
    try:
        readers = [join(server, "r", f"r{i}") for i in range(3)]
        stalled_clients.append(stalled_client(server, "r"))
        ((stalled, sock),) = stalled_clients
        stalled.send("hello stalled")
        wait_message(readers[0], "hello stalled")
        big = b"x" * 65536
        # ~8 MiB at the pace of the readers: the stalled member's buffers
        # fill, then its mailbox overflows, while the readers keep up.
        for _ in range(120):
            fanout.publish("r", big)
            for reader in readers:
                assert receive(reader, 1) == [big]
        assert failed.wait(TIMEOUT)
        ((connection, exc),) = failures
        assert isinstance(exc, OverflowError) and f"would pass {limit_hit}" in str(exc)
        assert fanout.stats.failures == 1
        members = fanout.members("r")  # dropped from the room, the readers stay
        assert connection not in members and len(members) == 3
        # Its send under way times out (1 s) and aborts the connection,
        # before the 1008 "too slow to keep up" can be written.
        with pytest.raises(syncws.ConnectionClosed) as info:
            while True:
                stalled.recv(TIMEOUT)
        assert info.value.code in (1006, 1008)
        sock.close()
    finally:
        for websocket, stalled_sock in stalled_clients:
            abort(websocket, stalled_sock)
        server.close()
        server.wait_closed(TIMEOUT)
        fanout.close()


@pytest.mark.timeout(30)
def test_local_mailbox_bytes_bound_what_waits_for_a_stalled_member() -> None:
    """1 MiB messages to a member that doesn't read: at most 4 MiB wait for it, not 64."""
    failed = threading.Event()
    fanout = LocalFanout(timeout=30, max_pending_bytes=4 * 2**20, on_failure=lambda connection, exc: failed.set())
    server = room_server(fanout)
    stalled_clients = []
    try:
        stalled_clients.append(stalled_client(server, "r"))
        ((stalled, sock),) = stalled_clients
        deadline = time.monotonic() + TIMEOUT
        while not fanout.members("r"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        message = b"m" * 2**20
        for number in range(64):
            fanout.publish("r", message)
            if failed.is_set():
                break
            waiting = fanout.pending()
            assert waiting * len(message) <= 4 * 2**20, f"{waiting} MiB waiting after {number + 1} published"
        assert failed.is_set(), "64 MiB published, and the stalled member is still there"
        assert fanout.pending() == 0 and fanout.stats.failures == 1
        # Reading at last, it gets what its buffers held, then the 1008;
        # or the server gave up on the close frame and aborted.
        with pytest.raises(syncws.ConnectionClosed) as info:
            while True:
                stalled.recv(TIMEOUT)
        assert info.value.code in (1006, 1008)
        sock.close()
    finally:
        for websocket, stalled_sock in stalled_clients:
            abort(websocket, stalled_sock)
        server.close()
        server.wait_closed(TIMEOUT)
        fanout.close()


@pytest.mark.timeout(30)
def test_local_send_timeout_aborts_and_reports() -> None:
    failed = threading.Event()
    fanout = LocalFanout(timeout=0.5, max_pending_bytes=2**30, on_failure=lambda connection, exc: failed.set())
    server = room_server(fanout)
    stalled_clients = []
    try:
        reader = join(server, "r", "reader")
        stalled_clients.append(stalled_client(server, "r"))
        ((stalled, _),) = stalled_clients
        stalled.send("hello stalled")
        wait_message(reader, "hello stalled")
        for _ in range(100):
            fanout.publish("r", b"y" * 65536)
        assert len(receive(reader, 100)) == 100
        assert failed.wait(TIMEOUT)
        assert fanout.stats.failures == 1
    finally:
        for websocket, sock in stalled_clients:
            abort(websocket, sock)
        server.close()
        server.wait_closed(TIMEOUT)
        fanout.close()


@pytest.mark.timeout(60)
def test_stats_count_deliveries_drops_and_lag() -> None:
    # Room for 256 messages of 64 KiB and the one being sent: the reader,
    # however far behind, keeps up; the stalled member doesn't.
    fanout = LocalFanout(timeout=30, max_pending_bytes=(256 + 1) * 65536)
    server = room_server(fanout)
    reader = join(server, "r", "reader")
    stalled, sock = stalled_client(server, "r")
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(fanout.members("r")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        big = b"b" * 65536
        for _ in range(128):  # 8 MiB: the stalled member's socket is full, its mailbox isn't
            fanout.publish("r", big)
        assert receive(reader, 128) == [big] * 128
        # The reader may be served before the stalled member's dispatcher
        # has filled its socket (seen on 3.13t): then it goes to a sender.
        while fanout.stats.slow_members != 1:
            assert time.monotonic() < deadline + TIMEOUT, fanout.stats
            time.sleep(0.01)
        stats = fanout.stats
        assert (stats.published, stats.received) == (129, 129)  # and the hello
        assert stats.delivered >= 129 and stats.delivery_seconds > 0
        assert (stats.members, stats.channels, stats.slow_members, stats.connected) == (2, 1, 1, 1)
        assert stats.pending > 0 and stats.pending_bytes == stats.pending * len(big)
        assert stats.oldest_pending > 0
        assert (stats.failures, stats.too_slow, stats.discarded) == (0, 0, 0)
        for _ in range(256):  # 16 MiB more: the stalled member's mailbox overflows
            fanout.publish("r", big)
        assert receive(reader, 256) == [big] * 256
        # The reader can have the last message before its dispatcher's
        # send() has returned and taken it out of the mailbox.
        while fanout.stats.pending:
            assert time.monotonic() < deadline + 2 * TIMEOUT, fanout.stats
            time.sleep(0.01)
        stats = fanout.stats
        assert (stats.failures, stats.too_slow, stats.members, stats.slow_members) == (1, 1, 1, 0)
        assert stats.discarded >= 16 * 2**20 // len(big) - 1  # what waited when it was dropped
        assert stats.delivered >= 129 + 256
        kinds = {field.name: field.metadata["kind"] for field in dataclasses.fields(FanoutStats)}
        assert kinds["delivered"] == "counter" and kinds["pending"] == "gauge"
    finally:
        # Also when an assertion failed: its paused reader thread would
        # otherwise outlive the test, and fail the thread-leak checks.
        abort(stalled, sock)
        server.close()
        server.wait_closed(TIMEOUT)
        fanout.close()


# -- RedisFanout ------------------------------------------------------------------


def test_redis_extra_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'syncws\[redis\]'"):
        RedisFanout("redis://127.0.0.1:1/0")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    pytest.importorskip("redis", reason="redis-py is not installed (pip install 'syncws[redis]')")
    server = Redis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Node:
    """One "process": a RedisFanout and a syncws server using it."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.gaps: List[Gap] = []
        self.gap = threading.Event()

        def on_gap(gap: Gap) -> None:
            self.gaps.append(gap)
            self.gap.set()

        self.fanout = RedisFanout(url, on_gap=on_gap, **kwargs)
        self.server = room_server(self.fanout)

    def close(self) -> None:
        self.server.close()
        self.server.wait_closed(TIMEOUT)
        self.fanout.close()


@pytest.fixture
def nodes(redis_server: Redis) -> Iterator[List[Node]]:
    running = [Node(redis_server.url, timeout=2, ping_interval=0.5, ping_timeout=0.5) for _ in range(2)]
    try:
        yield running
    finally:
        for node in running:
            node.close()


@needs_redis
def test_redis_across_processes_exactly_once_in_order(nodes: List[Node]) -> None:
    one, two = nodes
    members = [join(one.server, "a", "a0"), join(two.server, "a", "a1"), join(two.server, "a", "a2")]
    other = join(one.server, "b", "b0")
    for number in range(200):
        members[number % 3].send(f"{number % 3} {number}")
    for websocket in members:
        check_per_sender(receive(websocket, 200), 3, 200)
        assert_silent(websocket)
    assert_silent(other)
    assert one.gaps == two.gaps == []


@needs_redis
def test_redis_sequence_gap_is_reported(nodes: List[Node], redis_server: Redis) -> None:
    import redis

    one, two = nodes
    member = join(two.server, "a", "m")
    client = redis.Redis.from_url(redis_server.url)
    try:
        publisher = "some-publisher"
        client.publish("syncws:a", _pack(publisher, 1, "first"))
        client.publish("syncws:a", _pack(publisher, 5, "fifth"))  # 2, 3, 4 lost
        client.publish("syncws:a", _pack(publisher, 5, "fifth again"))  # a repeat: dropped
        client.publish("syncws:a", b"not an envelope")  # ignored
        client.publish("syncws:a", b"other 1 t\n\xff")  # text that isn't UTF-8: ignored, not sent on
        client.publish("syncws:a", _pack(publisher, 6, "sixth"))
    finally:
        client.close()
    assert receive(member, 3) == ["first", "fifth", "sixth"]
    assert two.gap.wait(TIMEOUT)
    assert two.gaps == [Gap(("a",), lost=3, publisher=publisher)]
    assert (two.fanout.stats.gaps, two.fanout.stats.lost) == (1, 3)


@needs_redis
@pytest.mark.timeout(60)
def test_redis_bookkeeping_is_bounded_over_5000_channels(redis_server: Redis) -> None:
    """Numbers are kept for the last channels published to, and subscribed ones."""
    publisher = RedisFanout(redis_server.url, max_sequences=1000)
    # Room for all 5000 messages and the hello still being sent: published
    # faster than a loaded machine sends them (seen on 3.13t), they'd pass
    # the default max_pending=1024, and the member be dropped as too slow.
    listener = Node(redis_server.url, max_pending=5000 + 1)
    try:
        member = join(listener.server, "kept", "m")
        for number in range(5000):
            publisher.publish(f"channel {number}", "x")
            publisher.publish("kept", f"{number}")
        assert len(publisher._sequences) <= 1000
        # "kept" stayed among the recent ones: one publisher, numbered on.
        assert [m for m in receive(member, 5000)] == [str(n) for n in range(5000)]
        assert list(listener.fanout._last_seen) == ["kept"]
        assert len(listener.fanout._last_seen["kept"]) == 2  # the member's hello, and ours
        member.close()
        deadline = time.monotonic() + TIMEOUT
        while listener.fanout._last_seen:  # forgotten with the subscription
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert listener.gaps == []
    finally:
        listener.close()
        publisher.close()


@needs_redis
@pytest.mark.timeout(60)
@pytest.mark.parametrize("publish_timeout", [0.3, 0])
def test_redis_publishes_waiting_their_turn_are_sent_while_redis_answers(
    redis_server: Redis, publish_timeout: float
) -> None:
    """Twenty handlers publish at once; Redis answers each PUBLISH, 50 ms later.

    A publish waiting for the others gave up after ``publish_timeout``
    ("another publish waited for Redis all this time"), though Redis
    answered every one: under load, 300 chat clients sending at once lost
    messages that way. Only a Redis that doesn't answer fails a publish:
    with ``publish_timeout=0`` too, which gives up at the first failure,
    not while another PUBLISH waits for its answer.
    """
    publisher = RedisFanout(redis_server.url, publish_timeout=publish_timeout)
    listener = Node(redis_server.url)
    try:
        member = join(listener.server, "a", "m")
        answer = publisher._publisher_client.publish

        def slowly(*args: Any) -> Any:
            time.sleep(0.05)  # a busy Redis, or a loaded machine
            return answer(*args)

        publisher._publisher_client.publish = slowly
        errors: List[PublishError] = []

        def publish(number: int) -> None:
            try:
                publisher.publish("a", str(number))
            except PublishError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=publish, args=(number,)) for number in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and publisher.stats.publish_errors == 0
        assert sorted(receive(member, 20), key=int) == [str(n) for n in range(20)]
        assert listener.gaps == []
    finally:
        listener.close()
        publisher.close()


@needs_redis
def test_redis_a_forgotten_channel_starts_a_new_sequence(redis_server: Redis) -> None:
    """Renumbered from 1 under a new publisher id: no repeat, no gap, bounded."""
    publisher = RedisFanout(redis_server.url, max_sequences=1)
    listener = Node(redis_server.url)
    try:
        member = join(listener.server, "a", "m")
        for number in range(600):  # each one forgets "a": a new publisher id every time
            publisher.publish("a", f"a{number}")
            publisher.publish("b", f"b{number}")
        assert receive(member, 600) == [f"a{n}" for n in range(600)]
        assert listener.gaps == []
        assert len(listener.fanout._last_seen["a"]) == syncws.fanout.PUBLISHERS_KEPT
    finally:
        listener.close()
        publisher.close()


@needs_redis
@pytest.mark.timeout(30)
def test_redis_restart_reconnects_and_reports_the_outage(nodes: List[Node], redis_server: Redis) -> None:
    one, two = nodes
    sender = join(one.server, "a", "sender")
    receiver = join(two.server, "a", "receiver")
    sender.send("before")  # so that two knows where one's numbers are
    assert receive(receiver, 1) == ["before"]
    redis_server.kill()
    one.fanout.publish_timeout = 0.5
    started = time.monotonic()
    with pytest.raises(PublishError, match="cannot publish to 'a' on .* within 0.5 s"):
        one.fanout.publish("a", "lost")
    assert 0.5 <= time.monotonic() - started < 0.5 + TIMEOUT / 2  # retried, then gave up
    assert one.fanout.stats.publish_errors == 1
    redis_server.start()
    assert one.gap.wait(TIMEOUT) and two.gap.wait(TIMEOUT)
    (gap,) = two.gaps
    assert gap.channels == ("a",) and gap.duration is not None and 0 < gap.duration < TIMEOUT
    assert gap.lost is None
    assert two.fanout.stats.reconnects == 1
    for number in range(10):
        sender.send(f"after {number}")
    assert receive(receiver, 10) == [f"after {n}" for n in range(10)]
    assert_silent(receiver)
    # The failed publish spent its sequence number: counted lost too.
    assert two.gaps[1:] == [Gap(("a",), lost=1, publisher=one.fanout.publisher_id)]


@needs_redis
@pytest.mark.timeout(30)
def test_redis_silent_cut_is_detected_by_pings(
    nodes: List[Node], redis_server: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen Redis (SIGSTOP) sends no error: only the missing pongs tell."""
    one, two = nodes
    receiver = join(two.server, "a", "receiver")
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        # ping_interval + ping_timeout = 1 s without an answer: lost.
        deadline = time.monotonic() + TIMEOUT
        while not any("no answer from" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the frozen Redis went unnoticed"
            time.sleep(0.05)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert two.gap.wait(TIMEOUT)
    assert two.gaps[0].duration is not None
    one.fanout.publish("a", "back")
    assert receive(receiver, 1) == ["back"]


@needs_redis
@pytest.mark.timeout(60)
def test_redis_subscribe_returns_at_once_while_redis_is_down_and_joins_when_back(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    redis_server = Redis(tmp_path)  # not started: nothing listens on its port
    fanout = RedisFanout(redis_server.url, timeout=10)  # subscribe() waited this long
    subscribed: "queue.Queue[Tuple[bool, float]]" = queue.Queue()

    def handler(websocket: syncws.WebSocketServerProtocol) -> None:
        started = time.monotonic()
        subscribed.put((fanout.subscribe("a", websocket), time.monotonic() - started))
        try:
            for _ in websocket:
                pass
        finally:
            fanout.unsubscribe_all(websocket)

    server = syncws.serve(handler, HOST, 0, compression=None)
    publisher = None
    try:
        member = syncws.connect(f"ws://{HOST}:{server.port}/", compression=None)
        confirmed, waited = subscribed.get(timeout=TIMEOUT)
        assert not confirmed and waited < 1.0, waited
        assert fanout.stats.connected == 0
        # Down long enough for reconnection attempts to back off to their
        # longest delay (max_reconnect_delay, 0.5 s).
        time.sleep(4)
        redis_server.start()
        back = time.monotonic()
        publisher = RedisFanout(redis_server.url)
        while True:  # the membership takes effect once Redis is back
            publisher.publish("a", "hi")
            try:
                if member.recv(0.05) == "hi":
                    break
            except TimeoutError:
                assert time.monotonic() - back < TIMEOUT
        resumed = time.monotonic() - back
        assert resumed < 1.5, f"delivery resumed {resumed:.2f} s after Redis was back"
        later = syncws.connect(f"ws://{HOST}:{server.port}/", compression=None)
        confirmed, waited = subscribed.get(timeout=TIMEOUT)
        assert confirmed
        later.close()
        member.close()
    finally:
        server.close()
        server.wait_closed(TIMEOUT)
        fanout.close()
        if publisher is not None:
            publisher.close()
        redis_server.stop()


@needs_redis
@pytest.mark.timeout(30)
def test_redis_publish_rides_out_a_restart(nodes: List[Node], redis_server: Redis) -> None:
    """publish() retries while Redis is down, and waits for the subscribers to be back."""
    one, two = nodes
    receiver = join(two.server, "a", "receiver")
    one.fanout.publish("a", "before")
    assert receive(receiver, 1) == ["before"]
    redis_server.kill()
    published = threading.Event()

    def publish() -> None:
        one.fanout.publish("a", "during")  # waits for Redis: 5 s at most
        published.set()

    thread = threading.Thread(target=publish)
    thread.start()
    assert not published.wait(1.0)
    redis_server.start()
    assert published.wait(TIMEOUT)
    thread.join()
    for number in range(10):
        one.fanout.publish("a", f"after {number}")
    # "during" waited for two's subscription to be back, then went.
    assert receive(receiver, 11) == ["during"] + [f"after {n}" for n in range(10)]
    assert two.fanout.stats.lost == 0 and one.fanout.stats.publish_errors == 0


@needs_redis
@pytest.mark.timeout(150)
def test_redis_publish_after_an_outage_does_not_wait_for_a_process_that_left(
    redis_server: Redis, tmp_path: Path
) -> None:
    """Two chat processes subscribe to a room; one of them stops while Redis is down.

    The first publish after the restart waited for both subscriptions, so
    for its whole publish_timeout. It now waits for the process that comes
    back, and no longer than twice max_reconnect_delay for the one that left.
    """
    chats = [ChatServer(tmp_path, redis_server.url, f"chat{i}", extra=["--redis-ping", "0.5"]) for i in range(2)]
    # A publisher in this process (no member here). Its grace for the
    # subscriptions, 2 x 2 s, leaves a loaded machine's chat process time
    # to subscribe again; the bound below is a third of publish_timeout.
    publisher = RedisFanout(redis_server.url, publish_timeout=60, max_reconnect_delay=2.0)
    members: List[syncws.WebSocketClientProtocol] = []
    try:
        for number, chat in enumerate(chats):
            chat.wait_serving()
            websocket = syncws.connect(f"ws://{HOST}:{chat.port}/chat/left", compression=None, max_queue=None)
            websocket.send(f"hello {number}")
            wait_message(websocket, f"hello {number}")
            members.append(websocket)
        publisher.publish("left", "before")  # Redis's reply: two subscriptions
        for websocket in members:
            wait_message(websocket, "before")
        redis_server.kill()
        chats[1].stop()  # leaves while Redis is down
        published = threading.Event()

        def publish() -> None:
            publisher.publish("left", "during")
            published.set()

        thread = threading.Thread(target=publish)
        thread.start()
        assert not published.wait(0.5)  # retrying: Redis is down
        redis_server.start()
        back = time.monotonic()
        assert published.wait(publisher.publish_timeout)
        waited = time.monotonic() - back
        thread.join()
        # It waited for the process that came back, which got it...
        wait_message(members[0], "during", TIMEOUT)
        # ... not for the one that left.
        assert waited < publisher.publish_timeout / 3, f"published {waited:.1f} s after Redis was back"
        assert publisher.stats.publish_errors == 0
    finally:
        for websocket in members:
            websocket.close()
        for chat in chats:
            chat.stop()
        publisher.close()


@needs_redis
@pytest.mark.timeout(30)
def test_redis_each_outage_is_reported_with_its_own_duration(nodes: List[Node], redis_server: Redis) -> None:
    one, two = nodes
    receiver = join(two.server, "a", "receiver")
    outages = []
    for _ in range(2):
        two.gap.clear()
        redis_server.kill()
        redis_server.start()
        assert two.gap.wait(TIMEOUT)
        outages.append((time.monotonic(), two.gaps[-1]))
    (first_seen, first), (_, second) = outages
    assert first.duration is not None and second.duration is not None
    # Measured from the second loss, not from the first one.
    assert second.duration < time.monotonic() - first_seen
    assert two.fanout.stats.reconnects == 2
    one.fanout.publish("a", "back")
    assert receive(receiver, 1) == ["back"]


@needs_redis
def test_redis_password_stays_out_of_warnings_and_publish_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    caplog.set_level(logging.DEBUG, logger="syncws")
    server = Redis(tmp_path)  # not started: nothing listens on its port
    lost = f"redis subscription to redis://:[redacted]@{HOST}:{server.port}/0 lost: "
    warned = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if lost in record.getMessage():
                warned.set()

    watch = Watch()
    logging.getLogger("syncws").addHandler(watch)
    fanout = RedisFanout(f"redis://:s3cret@{HOST}:{server.port}/0", timeout=0.5, publish_timeout=0)
    try:
        with pytest.raises(PublishError) as excinfo:
            fanout.publish("room", "hi")
        assert not fanout.subscribe("room", object())  # type: ignore[arg-type]  # starts the subscriber
        assert warned.wait(TIMEOUT), caplog.text
    finally:
        fanout.close()
        logging.getLogger("syncws").removeHandler(watch)
    assert f"on redis://:[redacted]@{HOST}:{server.port}/0: " in str(excinfo.value)
    assert "s3cret" not in str(excinfo.value) and "s3cret" not in caplog.text


# -- head-of-line blocking ---------------------------------------------------------


class Listener:
    """A member that reads all the time, noting when each message arrived."""

    def __init__(self, websocket: syncws.WebSocketClientProtocol) -> None:
        self.websocket = websocket
        self.arrivals: List[Tuple[Any, float]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for message in self.websocket:
                self.arrivals.append((message, time.monotonic()))
        except syncws.ConnectionClosed:
            pass

    def wait_for(self, count: int, predicate: Any, timeout: float = TIMEOUT) -> List[Tuple[Any, float]]:
        deadline = time.monotonic() + timeout
        while True:
            matching = [(m, t) for m, t in list(self.arrivals) if predicate(m)]
            if len(matching) >= count or time.monotonic() > deadline:
                return matching
            time.sleep(0.01)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["local", "redis"])
def test_stalled_members_do_not_delay_the_others(backend: str, request: pytest.FixtureRequest) -> None:
    """100 members, 50 stop reading: the 50 others get each message at once."""
    kwargs: Any = dict(timeout=60, max_pending_bytes=256 * 2**20)
    fanout: Fanout
    if backend == "local":
        fanout = LocalFanout(**kwargs)
    else:
        redis_server = request.getfixturevalue("redis_server")
        fanout = RedisFanout(redis_server.url, **kwargs)
    server = room_server(fanout)
    stalled: List[Tuple[syncws.WebSocketClientProtocol, socket.socket]] = []
    try:
        listeners = [Listener(join(server, "r", f"r{i}")) for i in range(50)]
        for _ in range(50):
            stalled.append(stalled_client(server, "r"))
        deadline = time.monotonic() + TIMEOUT
        while len(fanout.members("r")) < 100:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # More than a stalled member's socket buffers hold (about 3 MiB):
        # every stalled member then has a send that can't finish.
        big = b"x" * (512 * 1024)
        for _ in range(8):
            fanout.publish("r", big)
        for listener in listeners:
            assert len(listener.wait_for(8, lambda m: m == big, 3 * TIMEOUT)) == 8
        latencies = []
        for number in range(20):
            fanout.publish("r", f"tick {number} {time.monotonic()}")
            time.sleep(0.02)
        for listener in listeners:
            ticks = listener.wait_for(20, lambda m: isinstance(m, str) and m.startswith("tick "), 3 * TIMEOUT)
            assert [int(m.split()[1]) for m, _ in ticks] == list(range(20))
            latencies += [arrival - float(m.split()[2]) for m, arrival in ticks]
        latencies.sort()
        print(f"latency over {len(latencies)} deliveries: median {latencies[len(latencies) // 2] * 1000:.1f} ms, "
              f"99th {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
        # Measured: a few ms (bench/fanout.py, docs/performance.rst). The
        # bound leaves room for a machine loaded by other work, and stays
        # far below the 60 s each stalled member's send may wait, which is
        # what the others waited for when stalled members held the senders.
        assert latencies[-1] < 5.0
        assert fanout.stats.failures == 0
    finally:
        for websocket, sock in stalled:
            abort(websocket, sock)
        server.close()
        server.wait_closed(TIMEOUT)
        fanout.close()


# -- a Redis restart under the chat example ------------------------------------------


@needs_redis
@pytest.mark.timeout(120)
def test_chat_rides_out_a_redis_restart(redis_server: Redis, tmp_path: Path) -> None:
    """Two chat processes, six clients chatting, Redis killed and started again.

    What docs/deployment.rst says: no client is dropped, no message is
    refused, each sender's messages arrive in order and once, and a message
    lost (one Redis had taken when it died) is counted, exactly, in the
    stats of every process that missed it.
    """
    chats = [ChatServer(tmp_path, redis_server.url, f"chat{i}", extra=["--redis-ping", "0.5"]) for i in range(2)]
    clients: List[syncws.WebSocketClientProtocol] = []
    try:
        for chat in chats:
            chat.wait_serving()
        for number in range(6):
            chat = chats[number % 2]
            websocket = syncws.connect(f"ws://{HOST}:{chat.port}/chat/restart", compression=None, max_queue=None)
            websocket.send(f"hello c{number}")
            wait_message(websocket, f"hello c{number}")
            clients.append(websocket)
        listeners = [Listener(websocket) for websocket in clients]
        stop = threading.Event()
        sent = [0] * len(clients)

        def chat_away(number: int) -> None:
            while not stop.wait(0.01):
                clients[number].send(f"c{number} {sent[number]}")
                sent[number] += 1

        senders = [threading.Thread(target=chat_away, args=(n,)) for n in range(len(clients))]
        for thread in senders:
            thread.start()
        time.sleep(0.5)
        redis_server.kill()
        time.sleep(1.0)
        redis_server.start()  # the same port, and no subscriptions
        time.sleep(2.5)
        stop.set()
        for thread in senders:
            thread.join()
        last = {f"c{n}": sent[n] - 1 for n in range(len(clients))}

        def seen_last(listener: Listener) -> bool:
            heard = {m.split()[0]: int(m.split()[1]) for m, _ in list(listener.arrivals) if m.startswith("c")}
            return heard == last

        deadline = time.monotonic() + TIMEOUT
        while not all(seen_last(listener) for listener in listeners):
            assert time.monotonic() < deadline, "the last messages didn't all arrive"
            time.sleep(0.05)
        lost = {}
        for chat in chats:
            with urllib.request.urlopen(f"http://{HOST}:{chat.port}/stats", timeout=TIMEOUT) as response:
                stats = json.loads(response.read())
            assert stats["gaps"] >= 1 and stats["publish_errors"] == 0, stats
            lost[chat.port] = stats["lost"]
        missed_total = 0
        for number, listener in enumerate(listeners):
            messages = [m for m, _ in listener.arrivals]
            assert not [m for m in messages if m.startswith("[not sent")]
            by_sender: Dict[str, List[int]] = {}
            for message in messages:
                if message.startswith("c"):
                    sender, count = message.split()
                    by_sender.setdefault(sender, []).append(int(count))
            missed = 0
            for sender, counts in by_sender.items():
                assert counts == sorted(set(counts)), f"{sender}'s messages repeated or out of order"
                missed += last[sender] + 1 - len(counts)
            assert missed == lost[chats[number % 2].port], (number, missed, lost)
            missed_total += missed
        for websocket in clients:
            assert websocket.open
        print(f"{sum(sent)} messages sent, Redis down for 1 s among them; "
              f"{missed_total} deliveries missed of {sum(sent) * len(clients)}, all counted")
        for chat in chats:
            assert "restored after" in chat.log()
    finally:
        for websocket in clients:
            websocket.close()
        for chat in chats:
            chat.stop()


# -- forks ----------------------------------------------------------------------------


@needs_redis
@pytest.mark.timeout(60)
def test_redis_fanout_made_before_a_fork_works_in_the_child(redis_server: Redis) -> None:
    """Forked while another thread holds the fan-out's lock, with a live subscriber."""
    parent = Node(redis_server.url)
    release = threading.Event()
    holding = threading.Event()

    def hold_the_lock() -> None:
        with parent.fanout._lock:
            holding.set()
            release.wait(TIMEOUT)

    member = join(parent.server, "a", "parent")  # the subscriber thread runs, "a" is live
    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert holding.wait(TIMEOUT)
        pid = os.fork()
        if pid == 0:  # the child: a server of its own, the parent's fan-out
            code = 1
            try:
                server = room_server(parent.fanout)
                child = join(server, "a", "child")  # subscribe() and publish() work
                child.send("from the child")
                wait_message(child, "from the child")
                assert parent.fanout.members("a") == {next(iter(server.connections))}
                child.close()
                server.close()
                code = 0
            finally:
                os._exit(code)
        release.set()
        wait_message(member, "from the child")  # the child's publisher id is its own
        deadline = time.monotonic() + TIMEOUT
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the child is stuck")
            time.sleep(0.02)
        assert os.waitstatus_to_exitcode(status) == 0
        member.send("still here")  # the parent goes on as before
        wait_message(member, "still here")
        assert parent.gaps == []
    finally:
        release.set()
        holder.join()
        parent.close()


@needs_redis
@pytest.mark.timeout(90)
def test_gunicorn_preload_workers_share_a_fanout_made_before_the_fork(redis_server: Redis, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn is not installed (pip install gunicorn)")
    server = Gunicorn(
        tmp_path, "fanout_app:app", "--preload", "--workers", "2", "-k", "gthread", "--threads", "8",
        env={"SYNCWS_TEST_REDIS": redis_server.url},
    )
    clients = {}  # worker pid -> a client it serves
    try:
        # The arbiter forks one worker after the other, and the port is open
        # before the second is: until it is, the first gets every connection.
        deadline = time.monotonic() + TIMEOUT
        while server.log().count("Booting worker with pid") < 2:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.02)
        while len(clients) < 2:
            assert time.monotonic() < deadline, f"every connection went to the same worker: {server.log()}"
            websocket = syncws.connect(f"ws://{HOST}:{server.port}/ws", compression=None, max_queue=None)
            pid = int(websocket.recv(TIMEOUT).split()[1])
            if pid in clients:
                websocket.close()  # served by a worker we have: its thread is free again
            else:
                clients[pid] = websocket
        first, second = clients.values()
        for number in range(20):  # both workers publish, interleaved
            first.send(f"first {number}")
            second.send(f"second {number}")
        expected = {f"{name} {n}" for name in ("first", "second") for n in range(20)}
        for websocket in (first, second):
            received = [websocket.recv(TIMEOUT) for _ in range(40)]
            assert set(received) == expected
            for name in ("first", "second"):
                assert [m for m in received if m.startswith(name)] == [f"{name} {n}" for n in range(20)]
        assert server.log().count("forked from") == 2, server.log()
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for websocket in (first, second):
            with pytest.raises(syncws.ConnectionClosed) as info:
                websocket.recv(TIMEOUT)
            assert info.value.code == 1001
        assert server.process.wait(TIMEOUT) == 0
        # As for any gunicorn app (tests/test_wsgi.py): well within the graceful timeout.
        assert time.monotonic() - started < 10, f"SIGTERM took {time.monotonic() - started:.1f} s: {server.log()}"
    finally:
        for websocket in clients.values():
            websocket.close()
        server.stop()


# -- the benchmark docs/performance.rst shows -------------------------------------------


@pytest.mark.timeout(120)
def test_the_fanout_benchmark_runs() -> None:
    """``python bench/fanout.py``, small: every message reaches every reader."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "fanout.py"
    result = subprocess.run(
        [sys.executable, str(bench), "--members", "6", "--stalled", "3", "--fill", "8", "--messages", "10",
         "--backend", "local", "--size", "100", "--accented"],
        capture_output=True, text=True, timeout=100,
    )
    assert result.returncode == 0, result.stderr
    assert "LocalFanout  6 reading, 0 stalled: 60/60 delivered" in result.stdout, result.stdout
    assert "LocalFanout  3 reading, 3 stalled: 30/30 delivered" in result.stdout, result.stdout
    assert "members with a sender of their own 3" in result.stdout, result.stdout
    assert "µs a delivery" in result.stdout, result.stdout
