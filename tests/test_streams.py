"""Tests for ``syncws.streams``: RedisStreamFanout over a real redis-server.

A syncws server in this process runs a room handler: ``/<room>?since=<id>``
joins ``room`` (recovering what followed ``<id>``), and every text message
is published to it. Members are sent JSON: ``{"id", "text"}`` for a
message, ``{"recovered": false}`` for a gap, ``{"id", "joined"|"left"}``
for presence. Two :class:`RedisStreamFanout` instances stand for two
processes: they share only the Redis server, which runs as a child process
on a free port, with ``appendonly yes``, and is stopped by its PID.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, cast

import pytest

import syncws
from syncws import metrics
from syncws.fanout import Gap
from syncws.streams import Event, Message, PresenceEvent, RedisStreamFanout
from services import HOST, REPO, Redis, free_port

pytestmark = pytest.mark.needs("redis-server")

TIMEOUT = 10.0


def as_json(event: Event) -> str:
    if isinstance(event, Message):
        return json.dumps({"id": event.id, "text": event.data})
    if isinstance(event, Gap):
        return json.dumps({"recovered": False})
    return json.dumps({"id": event.id, "joined" if event.joined else "left": event.info})


class Node:
    """One "process": a RedisStreamFanout and a syncws server using it."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.gaps: List[Gap] = []
        self.gap = threading.Event()
        self.subscribed: List[bool] = []

        def on_gap(gap: Gap) -> None:
            self.gaps.append(gap)
            self.gap.set()

        options: Dict[str, Any] = dict(encode=as_json, on_gap=on_gap, timeout=5, ping_interval=0.5, ping_timeout=1)
        options.update(kwargs)
        self.fanout = RedisStreamFanout(url, **options)

        def handler(websocket: syncws.WebSocketServerProtocol) -> None:
            path, _, query = websocket.path.partition("?")
            params = urllib.parse.parse_qs(query, keep_blank_values=True)
            since = params["since"][0] if "since" in params else None
            room = path.strip("/")
            self.subscribed.append(self.fanout.subscribe(room, websocket, since=since, info=params.get("name", [""])[0]))
            try:
                for message in websocket:
                    self.fanout.publish(room, message)
            finally:
                self.fanout.unsubscribe_all(websocket)

        self.server = syncws.serve(handler, HOST, 0, compression=None)

    def connect(self, room: str, **query: str) -> syncws.WebSocketClientProtocol:
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        return syncws.connect(f"ws://{HOST}:{self.server.port}/{room}{suffix}", compression=None, max_queue=None)

    def close(self) -> None:
        self.server.close()
        self.server.wait_closed(TIMEOUT)
        self.fanout.close()


def events(websocket: syncws.WebSocketClientProtocol, count: int, timeout: float = TIMEOUT) -> List[Dict[str, Any]]:
    deadline = time.monotonic() + timeout
    return [json.loads(websocket.recv(max(0.0, deadline - time.monotonic()))) for _ in range(count)]


def texts(websocket: syncws.WebSocketClientProtocol, count: int, timeout: float = TIMEOUT) -> List[Dict[str, Any]]:
    """The next ``count`` messages and gaps, past presence events and members' hellos."""
    deadline = time.monotonic() + timeout
    found: List[Dict[str, Any]] = []
    while len(found) < count:
        event = json.loads(websocket.recv(max(0.0, deadline - time.monotonic())))
        if "recovered" in event or ("text" in event and not event["text"].startswith("hello ")):
            found.append(event)
    return found


def silent(websocket: syncws.WebSocketClientProtocol, wait: float = 0.3) -> bool:
    try:
        websocket.recv(wait)
    except TimeoutError:
        return True
    return False


def joined(node: Node, room: str, name: str) -> syncws.WebSocketClientProtocol:
    """A member whose own message came back: it is live in the room."""
    websocket = node.connect(room)
    websocket.send(f"hello {name}")
    while json.loads(websocket.recv(TIMEOUT)).get("text") != f"hello {name}":
        pass
    return websocket


def outcomes(node: Node, count: int) -> List[bool]:
    """What the node's first ``count`` subscribe() calls returned, once they have."""
    wait_until(lambda: len(node.subscribed) >= count, "subscribe() hasn't returned")
    return node.subscribed[:count]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    pytest.importorskip("redis", reason="redis-py is not installed (pip install 'syncws[redis]')")
    # Killed by some tests, which count on every write it acknowledged
    # being in its file: with "everysec", one made during an fsync isn't yet.
    server = Redis(tmp_path, persist=True, appendfsync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def two_nodes(url: str, **options: Any) -> Iterator[List[Node]]:
    """Two nodes ("processes") on one Redis, closed after the test."""
    running = [Node(url, **options) for _ in range(2)]
    try:
        yield running
    finally:
        for node in running:
            node.close()


@pytest.fixture
def nodes(redis_server: Redis) -> Iterator[List[Node]]:
    yield from two_nodes(redis_server.url, history=1000)


def redis_client(server: Redis) -> Any:
    import redis

    return redis.Redis.from_url(server.url)


# -- delivery -------------------------------------------------------------------------


def test_every_member_in_every_process_gets_each_message_once_in_the_streams_order(nodes: List[Node]) -> None:
    one, two = nodes
    members = [joined(one, "a", "a0"), joined(two, "a", "a1"), joined(two, "a", "a2")]
    other = joined(one, "b", "b0")
    published = [one.fanout.publish("a", "first")]
    senders = [threading.Thread(target=lambda m=m, n=n: [m.send(f"{n} {i}") for i in range(100)])
               for n, m in enumerate(members)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    seen = []
    for websocket in members:
        # 301 messages through Redis (appendfsync always) to 3 members: 2 s
        # on 3.13t, more than 10 s at a load of 18 (2 cores).
        seen.append(texts(websocket, 301, 3 * TIMEOUT))
        assert silent(websocket)
    assert seen[0] == seen[1] == seen[2]  # the same order everywhere
    ids = [event["id"] for event in seen[0]]
    assert ids[0] == published[0] and len(set(ids)) == 301
    keys = [tuple(int(part) for part in i.split(":")[1].split("-")) for i in ids]
    assert keys == sorted(keys) and len({i.split(":")[0] for i in ids}) == 1
    for sender in range(3):  # and each sender's in the order it sent
        assert [e["text"] for e in seen[0] if e["text"].startswith(f"{sender} ")] == [f"{sender} {i}" for i in range(100)]
    assert silent(other)
    assert one.gaps == two.gaps == [] and one.subscribed[:1] == [True]


def test_a_first_member_of_a_channel_gets_messages_at_once(redis_server: Redis) -> None:
    """The reader is woken for a new stream: it doesn't wait out its XREAD's BLOCK.

    Not woken, the message would come after up to ten minutes: texts()
    gives up long before.
    """
    node = Node(redis_server.url, ping_interval=600)
    publisher = RedisStreamFanout(redis_server.url)
    try:
        joined(node, "warm", "w")  # the reader is blocked in XREAD for up to 600 s
        member = node.connect("new")
        wait_until(lambda: node.fanout.members("new"), "never joined")
        publisher.publish("new", "hi")
        assert texts(member, 1)[0]["text"] == "hi"
    finally:
        node.close()
        publisher.close()


def test_one_connection_per_process_reads_every_stream(redis_server: Redis) -> None:
    """Two processes, 60 members in 20 channels: Redis sees one XREAD connection a process, few in all."""
    one, two = [Node(redis_server.url, max_connections=2) for _ in range(2)]
    client = redis_client(redis_server)
    try:
        # Each member got its own message through its process's reader:
        # every channel is read, in both processes.
        members = [joined(node, f"c{n}", f"m{n}-{k}") for n in range(20) for k, node in enumerate((one, two, one))]
        others = [c for c in client.client_list() if int(c["id"]) != client.client_id()]
        assert len([c for c in others if c["cmd"] == "xread"]) == 2, others
        assert len(others) <= 2 * (1 + 2), others  # a reader and its pool of 2, each
        for member in members:
            member.close()
    finally:
        client.close()
        one.close()
        two.close()


# -- recovery -------------------------------------------------------------------------


def test_a_member_that_reconnects_with_its_last_id_gets_exactly_what_it_missed(nodes: List[Node]) -> None:
    """While a publisher never stops: no gap, no duplicate at the seam of history and live."""
    one, two = nodes
    witness = joined(one, "a", "witness")
    stop = threading.Event()
    count = [0]

    def publish() -> None:
        while not stop.is_set():
            one.fanout.publish("a", f"m{count[0]}")
            count[0] += 1
            time.sleep(0.002)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        member = joined(two, "a", "member")
        got = texts(member, 20)
        member.close()  # gone while messages keep coming
        for _ in range(5):
            time.sleep(0.1)
            member = two.connect("a", since=got[-1]["id"])  # back, through either process
            got += texts(member, 20)
            member.close()
        member = one.connect("a", since=got[-1]["id"])
        got += texts(member, 30)
    finally:
        stop.set()
        publisher.join()
    reference = texts(witness, count[0])
    start = reference.index(got[0])
    assert got == reference[start:start + len(got)]
    assert one.fanout.stats.recoveries + two.fanout.stats.recoveries == 6
    assert one.fanout.stats.recoveries_failed + two.fanout.stats.recoveries_failed == 0
    member.close()


def test_an_id_older_than_the_history_is_reported_first(redis_server: Redis) -> None:
    node = Node(redis_server.url, history=10)
    try:
        ids = [node.fanout.publish("a", f"m{n}") for n in range(30)]
        member = node.connect("a", since=ids[4])
        # The gap, then what the history holds (the last 10), then live ones.
        assert events(member, 11) == [{"recovered": False}] + [
            {"id": ids[n], "text": f"m{n}"} for n in range(20, 30)
        ]
        node.fanout.publish("a", "live")
        assert texts(member, 1)[0]["text"] == "live"
        assert outcomes(node, 1) == [False]
        assert node.fanout.stats.recoveries_failed == 1
        # The oldest id still kept ("live" pushed m20 out): nothing lost after it.
        member = node.connect("a", since=ids[21])
        assert [e["text"] for e in texts(member, 9)] == [f"m{n}" for n in range(22, 30)] + ["live"]
        assert outcomes(node, 2) == [False, True]
    finally:
        node.close()


@pytest.mark.parametrize(
    "since", ["bogus", "", "0123456789ab:1-0", "0123456789ab:99999999999999-0", "x" * 1000, "future", "beyond 64 bits"]
)
def test_ids_that_are_not_this_streams(redis_server: Redis, since: str) -> None:
    """Any other id (malformed, another epoch, the future, a part Redis can't
    hold) is reported, and the history follows; "" is the whole history."""
    node = Node(redis_server.url)
    try:
        ids = [node.fanout.publish("a", f"m{n}") for n in range(3)]
        if since == "future":  # this epoch, an id not given yet
            since = ids[0].split(":")[0] + ":99999999999999-0"
        if since == "beyond 64 bits":  # this epoch, before its ids, a sequence over 2**64 - 1
            since = ids[0].split(":")[0] + f":0-{2**64}"
        member = node.connect("a", since=since)
        head = [] if since == "" else [{"recovered": False}]
        assert events(member, len(head) + 3) == head + [{"id": i, "text": f"m{n}"} for n, i in enumerate(ids)]
        assert outcomes(node, 1) == [since == ""]
    finally:
        node.close()


def test_a_history_of_large_messages_is_recovered_in_small_pages(redis_server: Redis) -> None:
    """Pages hold what 1 MiB holds of the largest message (3 of 300 KiB; 1 while it is unknown): all comes, in order."""
    node = Node(redis_server.url)
    client = redis_client(redis_server)
    try:
        ids = [node.fanout.publish("a", f"{n}" + "x" * 300_000) for n in range(10)]
        assert int(client.hget("syncws:m:a", "largest")) == 300_001
        for round in range(2):
            member = node.connect("a", since=ids[0])
            assert [(e["id"], e["text"][0]) for e in events(member, 9)] == [(ids[n], str(n)) for n in range(1, 10)]
            assert outcomes(node, round + 1)[round] is True
            member.close()
            client.hdel("syncws:m:a", "largest")  # as a stream an older syncws wrote
    finally:
        client.close()
        node.close()


def test_a_room_name_is_logged_escaped(redis_server: Redis, caplog: pytest.LogCaptureFixture) -> None:
    """A room a peer named (a line separator, a bidi override) can't forge or reorder a log line."""
    room = "a\u2028FORGED\u202e"
    node = Node(redis_server.url, timeout=0.5)
    try:
        ids = [node.fanout.publish(room, f"m{n}") for n in range(3)]
        node.connect(urllib.parse.quote(room))  # the reader reads the room's stream
        assert outcomes(node, 1) == [True]
        redis_server.kill()
        node.connect(urllib.parse.quote(room), since=ids[0])  # its history can't be read now
        assert outcomes(node, 2) == [True, False]
    finally:
        node.close()
    logged = [record.getMessage() for record in caplog.records if record.name == "syncws.streams"]
    assert any("history" in line for line in logged), logged
    assert not any("\u2028" in line or "\u202e" in line for line in logged), logged


def test_a_stream_made_again_is_another_epoch(redis_server: Redis) -> None:
    node = Node(redis_server.url)
    client = redis_client(redis_server)
    try:
        member = joined(node, "a", "m")
        before = node.fanout.publish("a", "before")
        assert texts(member, 1)[0]["id"] == before
        client.delete("syncws:s:a", "syncws:m:a")  # as an expiry, a FLUSHDB or a lost Redis would
        after = node.fanout.publish("a", "after")
        assert after.split(":")[0] != before.split(":")[0]
        # Live members are told, in order, then get the new epoch's messages.
        assert texts(member, 2) == [{"recovered": False}, {"id": after, "text": "after"}]
        assert node.gap.wait(TIMEOUT) and node.gaps == [Gap(("a",), since=before)]
        late = node.connect("a", since=before)
        assert texts(late, 2) == [{"recovered": False}, {"id": after, "text": "after"}]
    finally:
        client.close()
        node.close()


def test_an_id_ahead_of_this_process_reader_is_not_sent_twice(nodes: List[Node]) -> None:
    """A client saw messages through a process whose reader is ahead of this one's."""
    one, two = nodes
    witness = joined(two, "a", "witness")  # two reads "a"
    release = threading.Event()
    deliver = two.fanout._deliver_entries

    def slow(*args: Any) -> None:
        release.wait(TIMEOUT)
        deliver(*args)

    two.fanout._deliver_entries = slow  # type: ignore[method-assign]
    ids = [one.fanout.publish("a", f"m{n}") for n in range(5)]
    member = two.connect("a", since=ids[2])  # two's reader hasn't delivered ids[0..4] yet
    time.sleep(0.3)
    release.set()
    one.fanout.publish("a", "m5")
    assert [e["text"] for e in texts(member, 3)] == ["m3", "m4", "m5"]
    assert silent(member)
    assert outcomes(two, 2)[-1] is True
    witness.close()


# -- Redis restarts ---------------------------------------------------------------------


@pytest.fixture
def patient_nodes(redis_server: Redis) -> Iterator[List[Node]]:
    """Two nodes that outlast a Redis restart however slow the machine.

    A publish waits for Redis up to 60 s (a restart shorter than that loses
    nothing: past it, the test fails, it doesn't hang), and the reader's
    pings are the default ones: a slow answer under load (0.5 s pings gave
    the reader 1.5 s) isn't a second outage.
    """
    yield from two_nodes(redis_server.url, publish_timeout=60, ping_interval=5, ping_timeout=5)


@pytest.mark.timeout(150)
def test_a_persisting_redis_restart_loses_nothing_and_repeats_nothing(
    patient_nodes: List[Node], redis_server: Redis
) -> None:
    one, two = patient_nodes
    members = [joined(one, "a", "m1"), joined(two, "a", "m2")]
    stop = threading.Event()
    published: List[str] = []

    def publish(node: Node, tag: str) -> None:
        number = 0
        while not stop.is_set():
            node.fanout.publish("a", f"{tag}{number}")  # waits for Redis: 60 s at most
            published.append(f"{tag}{number}")
            number += 1
            time.sleep(0.005)

    publishers = [threading.Thread(target=publish, args=(node, tag)) for node, tag in ((one, "x"), (two, "y"))]
    for thread in publishers:
        thread.start()
    wait_until(lambda: len(published) >= 20, "nothing published")
    redis_server.kill()  # SIGKILL: what it acknowledged is in its append-only file
    # Both readers see it gone; the publishers wait for it meanwhile.
    wait_until(lambda: not one.fanout.stats.connected and not two.fanout.stats.connected, "the outage unseen")
    redis_server.start()
    wait_until(lambda: one.fanout.stats.connected and two.fanout.stats.connected, "not reconnected", 60)
    count = len(published)
    wait_until(lambda: len(published) >= count + 20, "nothing published after the restart", 60)
    stop.set()
    for thread in publishers:
        thread.join()
    assert one.fanout.stats.publish_errors == two.fanout.stats.publish_errors == 0
    received = [[e["text"] for e in texts(member, len(published))] for member in members]
    assert received[0] == received[1]
    assert sorted(received[0]) == sorted(published)  # each once
    for tag in "xy":
        mine = [t for t in received[0] if t.startswith(tag)]
        assert mine == [f"{tag}{n}" for n in range(len(mine))]
    assert all(silent(member) for member in members)
    assert one.gaps == two.gaps == []
    assert one.fanout.stats.reconnects == two.fanout.stats.reconnects == 1


@pytest.mark.timeout(60)
def test_a_member_that_joins_while_redis_is_too_slow_for_the_reader_misses_nothing(
    nodes: List[Node], redis_server: Redis
) -> None:
    """Redis stalls past the reader's timeout; a member joins, then a message is published: it arrives.

    The reader, back, reads the new channel from where the member joined,
    not from the stream's end at the moment the reader is back (the message
    is there by then: it reached Redis first).
    """
    one, two = nodes
    joined(one, "a", "first")  # one's reader runs
    two.fanout.publish("b", "before")  # two's connection to Redis is open
    redis_server.freeze()
    try:
        wait_until(lambda: not one.fanout.stats.connected, "the reader didn't time out")
        member = one.connect("b")
        wait_until(lambda: one.fanout.stats.channels == 2, "the member didn't join")
        publisher = threading.Thread(target=two.fanout.publish, args=("b", "during"))
        publisher.start()
        time.sleep(0.5)  # for its command to reach Redis before the reader's
    finally:
        redis_server.thaw()
    publisher.join()
    assert texts(member, 1)[0]["text"] == "during"
    assert outcomes(one, 2) == [True, False]  # subscribed without Redis: takes effect when it is back
    assert silent(member)
    assert two.fanout.stats.publish_errors == 0


@pytest.mark.timeout(60)
def test_a_member_whose_subscribe_cannot_reach_redis_misses_nothing_published_meanwhile(nodes: List[Node]) -> None:
    """subscribe()'s look at the stream's end fails, slowly, while another process publishes: it arrives.

    This process is cut off from Redis (its reader hasn't noticed yet): the
    look waits out its timeout, and the message published meanwhile is in
    the stream before the reader places the channel.
    """
    import redis

    one, two = nodes
    joined(one, "a", "first")  # one's reader runs

    def cut_off(*args: Any) -> Any:
        two.fanout.publish("b", "during")
        time.sleep(0.5)  # the rest of the command's timeout
        raise redis.ConnectionError("cut off")

    one.fanout._client.xrevrange = cut_off
    member = one.connect("b")
    assert outcomes(one, 2) == [True, False]  # subscribed without Redis: takes effect when it is back
    del one.fanout._client.xrevrange
    assert texts(member, 1)[0]["text"] == "during"
    assert silent(member)


def test_a_redis_that_lost_everything_is_reported(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    redis_server = Redis(tmp_path)  # no persistence
    redis_server.start()
    node = Node(redis_server.url)
    try:
        member = joined(node, "a", "m")
        before = node.fanout.publish("a", "before")
        assert texts(member, 1)[0]["id"] == before
        redis_server.kill()
        redis_server.start()
        after = node.fanout.publish("a", "after")
        assert texts(member, 2) == [{"recovered": False}, {"id": after, "text": "after"}]
        assert node.gaps == [Gap(("a",), since=before)] and node.fanout.stats.gaps == 1
    finally:
        node.close()
        redis_server.stop()


def test_entries_trimmed_before_the_reader_got_them_are_counted(nodes: List[Node], redis_server: Redis) -> None:
    one, _ = nodes
    member = joined(one, "a", "m")
    last = one.fanout.publish("a", "x")
    epoch = last.split(":")[0]
    client = redis_client(redis_server)
    try:
        offset = int(client.hget("syncws:m:a", "offset"))
        client.xadd("syncws:s:a", {"e": epoch, "o": offset + 5, "t": "t", "d": "after", "p": "-"})
    finally:
        client.close()
    assert texts(member, 3)[1:] == [{"recovered": False}, {"id": texts_id(one, "a"), "text": "after"}]
    assert one.gaps == [Gap(("a",), lost=4, since=last)]
    assert one.fanout.stats.lost == 4


def texts_id(node: Node, channel: str) -> str:
    """The id of the newest entry of ``channel``."""
    client = node.fanout._client
    ((entry_id, fields),) = client.xrevrange(f"syncws:s:{channel}", "+", "-", 1)
    return f"{fields[b'e'].decode()}:{entry_id.decode()}"


class ReplyEater(socketserver.ThreadingTCPServer):
    """A TCP proxy to Redis that, once armed, drops one reply and the connection with it."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        self.target = port
        self.armed = threading.Event()
        self.ate = threading.Event()
        super().__init__((HOST, 0), self.Relay)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    class Relay(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            server = cast(ReplyEater, self.server)
            with socket.create_connection((HOST, server.target)) as upstream:
                threading.Thread(target=server.pipe, args=(self.request, upstream, False), daemon=True).start()
                server.pipe(upstream, self.request, True)

    def pipe(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if replies and self.armed.is_set():
                    self.armed.clear()
                    self.ate.set()
                    break  # the command was applied; its answer never arrives
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def test_a_publish_whose_answer_was_lost_is_not_added_twice(redis_server: Redis) -> None:
    proxy = ReplyEater(redis_server.port)
    fanout = RedisStreamFanout(f"redis://{HOST}:{proxy.port}/0", timeout=2)
    client = redis_client(redis_server)
    try:
        fanout.publish("a", "warm-up")  # the script is loaded
        proxy.armed.set()
        message_id = fanout.publish("a", "once")
        assert proxy.ate.is_set()
        entries = client.xrange("syncws:s:a")
        assert [fields[b"d"] for _, fields in entries] == [b"warm-up", b"once"]
        assert message_id.split(":")[1] == entries[1][0].decode()
        assert fanout.stats.published == 2 and fanout.stats.publish_errors == 0
    finally:
        client.close()
        fanout.close()
        proxy.close()


def test_publish_gives_up_after_publish_timeout(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    fanout = RedisStreamFanout(f"redis://:s3cret@{HOST}:{free_port()}/0", publish_timeout=0.5, timeout=1)
    try:
        started = time.monotonic()
        with pytest.raises(syncws.PublishError, match=r"cannot publish to 'a' on redis://:\[redacted\]@.* within 0.5 s") as info:
            fanout.publish("a", "lost")
        assert 0.5 <= time.monotonic() - started < 5
        assert "s3cret" not in str(info.value) and fanout.stats.publish_errors == 1
    finally:
        fanout.close()


# -- presence ---------------------------------------------------------------------


CRASHING_PROCESS = """
import os, sys
from syncws.streams import RedisStreamFanout
fanout = RedisStreamFanout(sys.argv[1], presence=True, presence_ttl=1.0)
fanout.subscribe("a", object(), info="ghost")
os._exit(0)  # no leave: as a process that was killed
"""


def test_presence_counts_members_of_every_process(redis_server: Redis) -> None:
    one, two = [Node(redis_server.url, presence=True, presence_ttl=2.0) for _ in range(2)]
    try:
        alice = one.connect("a", name="alice")
        assert texts_or_presence(alice, "joined") == "alice"
        bob = two.connect("a", name="bob")
        assert texts_or_presence(alice, "joined") == "bob"  # alice sees bob join, through Redis
        assert sorted(one.fanout.presence("a").values()) == ["alice", "bob"]
        assert two.fanout.presence("a") == one.fanout.presence("a")
        assert one.fanout.presence("b") == {}
        bob.close()
        assert texts_or_presence(alice, "left") == "bob"
        assert list(two.fanout.presence("a").values()) == ["alice"]
        # A process that dies says nothing: its members expire.
        subprocess.run([sys.executable, "-c", CRASHING_PROCESS, redis_server.url], check=True, timeout=TIMEOUT,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert sorted(one.fanout.presence("a").values()) == ["alice", "ghost"]
        wait_until(lambda: list(one.fanout.presence("a").values()) == ["alice"], "the ghost stayed", 5)
        # Renewed while alive: alice outlives several presence_ttl.
        time.sleep(2.5)
        assert list(one.fanout.presence("a").values()) == ["alice"]
        alice.close()
    finally:
        one.close()
        two.close()
    fanout = RedisStreamFanout(redis_server.url)
    with pytest.raises(RuntimeError, match="presence=True"):
        fanout.presence("a")
    fanout.close()


def texts_or_presence(websocket: syncws.WebSocketClientProtocol, kind: str) -> str:
    """The name in the next presence event of ``kind``."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        event = json.loads(websocket.recv(max(0.0, deadline - time.monotonic())))
        if kind in event:
            return str(event[kind])


# -- counters, arguments, forks ----------------------------------------------------------


def test_stats_reach_the_metrics(nodes: List[Node]) -> None:
    one, _ = nodes
    first = one.fanout.publish("a", "m")
    members = [one.connect("a", since=first), one.connect("a", since="nonsense")]  # recovered (nothing after), not
    outcomes(one, 2)
    stats = one.fanout.stats
    assert (stats.recoveries, stats.recoveries_failed, stats.published) == (1, 1, 1)
    text = metrics.render()
    assert "# TYPE syncws_fanout_recoveries_failed_total counter" in text
    assert "# HELP syncws_fanout_recovered_total Fan-out: messages sent from the history" in text
    for member in members:
        member.close()


def test_bad_arguments(redis_server: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="history must be at least 1, got 0"):
        RedisStreamFanout(redis_server.url, history=0)
    with pytest.raises(ValueError, match="max_connections"):
        RedisStreamFanout(redis_server.url, max_connections=0)
    # NaN passed every "at least" check: presence_ttl=nan spun the presence
    # thread at full CPU, max_age=nan failed each publish with a ValueError.
    for name in ("max_age", "presence_ttl", "ping_interval", "ping_timeout", "reconnect_delay",
                 "max_reconnect_delay", "publish_timeout", "timeout"):
        for value in (float("nan"), -1.0):
            with pytest.raises(ValueError, match=rf"{name} must be"):
                RedisStreamFanout(redis_server.url, **{name: value})
        if name != "timeout":  # None or inf: no limit
            with pytest.raises(ValueError, match=rf"{name} must be a finite number of seconds, got inf"):
                RedisStreamFanout(redis_server.url, **{name: float("inf")})
    fanout = RedisStreamFanout(redis_server.url)
    try:
        with pytest.raises(TypeError, match="since must be a str, got int"):
            fanout.subscribe("a", object(), since=5)  # type: ignore
        with pytest.raises(ValueError, match="can't be encoded in UTF-8"):
            fanout.publish("\ud800", "x")
        with pytest.raises(TypeError, match="message must be str or bytes-like"):
            fanout.publish("a", 5)  # type: ignore
    finally:
        fanout.close()
    with pytest.raises(RuntimeError, match="closed"):
        fanout.subscribe("a", object())  # type: ignore
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"RedisStreamFanout needs redis-py: pip install 'syncws\[redis\]'"):
        RedisStreamFanout(redis_server.url)


def redis_py_has(option: str) -> bool:
    """Whether the installed redis-py takes ``option`` (older ones refuse the URL)."""
    try:
        import redis
    except ImportError:
        return False
    return option in inspect.signature(redis.Redis.__init__).parameters


NEWER_SHAPES = pytest.mark.skipif(
    not redis_py_has("legacy_responses"),
    reason="this redis-py has no legacy_responses option: its older replies are the only shape it gives",
)


@pytest.mark.parametrize("query", [
    "protocol=3",
    pytest.param("legacy_responses=false", marks=NEWER_SHAPES),
    pytest.param("protocol=3&legacy_responses=false", marks=NEWER_SHAPES),
])
def test_every_reply_shape_redis_py_gives(redis_server: Redis, query: str) -> None:
    """A URL may ask redis-py for RESP3 or its newer reply shapes: XREAD's differ."""
    node = Node(f"{redis_server.url}?{query}", presence=True)
    try:
        first = joined(node, "a", "first")
        ids = [node.fanout.publish("a", f"m{n}") for n in range(3)]
        assert [e["id"] for e in texts(first, 3)] == ids
        back = node.connect("a", since=ids[0], name="back")
        assert texts(back, 2) == [{"id": ids[n], "text": f"m{n}"} for n in (1, 2)]
        assert sorted(node.fanout.presence("a").values()) == ["", "back"]
        assert node.gaps == [] and outcomes(node, 2) == [True, True]
    finally:
        node.close()


@pytest.mark.timeout(30)
def test_a_fanout_made_before_a_fork_works_in_the_child(nodes: List[Node]) -> None:
    one, _ = nodes
    member = joined(one, "a", "parent")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            one.fanout.publish("a", "from the child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert texts(member, 1)[0]["text"] == "from the child"


# -- the benchmark docs/performance.rst shows -------------------------------------------


@pytest.mark.timeout(120)
def test_the_streams_benchmark_runs() -> None:
    """``python bench/streams.py``, small: every delivery is checked there."""
    pytest.importorskip("redis")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "streams.py"), "--messages", "200", "--members", "3", "--threads", "2",
         "--channels", "2", "--history", "100", "--appendfsync", "always"],
        capture_output=True, text=True, timeout=100, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 0, result.stderr
    for backend in ("RedisFanout", "RedisStreamFanout"):
        for threads in ("1 publishing thread ", "2 publishing threads"):
            assert f"{backend:18} {threads}: " in result.stdout, result.stdout
    assert result.stdout.count("(200 messages of 100 bytes, every one checked)") == 4, result.stdout
    assert "KiB per channel in Redis" in result.stdout and "to a client back with an old id" in result.stdout
