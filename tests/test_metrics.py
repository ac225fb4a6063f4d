"""Tests for syncws.metrics: a server's counts, over real sockets, and their text.

Servers run in this process on 127.0.0.1; clients tell the tests what they
sent and received (their own stats), which the server's counts must match
exactly once its side of every connection has ended.
"""

from __future__ import annotations

import dataclasses
import http
import http.client
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Tuple

import pytest

import syncws
from conftest import servers_kept_alive, wait_for
from syncws import metrics
from syncws.fanout import FanoutStats, LocalFanout
from syncws.metrics import ServerMetrics

HOST = "127.0.0.1"
TIMEOUT = 10


def echo(websocket: syncws.WebSocketServerProtocol) -> None:
    for message in websocket:
        if message == "close 4000":
            websocket.close(4000, "asked")
            return
        websocket.send(message)


@pytest.fixture
def server() -> Iterator[syncws.WebSocketServer]:
    # No keepalive: a ping or a pong in flight as a client aborts would
    # count on one side only.
    with syncws.serve(
        echo, HOST, 0, origins=["https://good.example", None], max_connections=3, ping_interval=None
    ) as running:
        yield running


def uri(server: syncws.WebSocketServer, path: str = "/") -> str:
    return f"ws://{HOST}:{server.port}{path}"


def settled(server: syncws.WebSocketServer, closed: int) -> ServerMetrics:
    """The server's metrics once ``closed`` connections ended on its side."""
    assert wait_for(lambda: sum(server.metrics().connections_closed.values()) >= closed, TIMEOUT)
    return server.metrics()


def test_a_new_server_counts_nothing(server: syncws.WebSocketServer) -> None:
    assert server.metrics() == ServerMetrics()


def test_connections_messages_and_bytes_match_the_clients(server: syncws.WebSocketServer) -> None:
    clients = [syncws.connect(uri(server), compression=None, ping_interval=None) for _ in range(3)]
    try:
        # connect() returns on the 101; the server counts the connection
        # just after writing it.
        assert wait_for(lambda: server.metrics().connections_open == 3)
        assert server.metrics().connections_opened == 3
        for index, client in enumerate(clients):
            for n in range(index + 1):
                client.send(f"message {n}" * (index + 1))
                client.recv(TIMEOUT)
        # Open connections count as they go.
        live = server.metrics()
        assert (live.messages_received, live.messages_sent) == (6, 6)
        assert live.bytes_received == sum(c.stats.bytes_out for c in clients)
        clients[0].close()
        clients[1].send("close 4000")
        with pytest.raises(syncws.ConnectionClosed):
            clients[1].recv(TIMEOUT)
        # Gone, without a close frame. abort(), not transport.abort(): behind
        # the connection's back, the close() below could still make a close
        # frame (before the reader saw the end of the stream), count it in
        # the client's bytes_out, and fail to send it (8 bytes "missing" on
        # the server's side, under load).
        clients[2].abort()
        done = settled(server, 3)
    finally:
        for client in clients:
            client.close()
    assert done.connections_open == 0
    assert done.connections_opened == 3
    assert done.connections_closed == {1000: 1, 4000: 1, 1006: 1}
    assert done.messages_received == sum(c.stats.messages_out for c in clients)  # "close 4000" included
    assert done.messages_sent == sum(c.stats.messages_in for c in clients)
    # Every byte each way, frame headers and close frames included.
    client_stats = [client.stats for client in clients]
    assert done.bytes_received == sum(stats.bytes_out for stats in client_stats), (done, client_stats)
    assert done.bytes_sent == sum(stats.bytes_in for stats in client_stats), (done, client_stats)


def test_a_connection_the_server_fails_counts_with_its_code() -> None:
    with syncws.serve(echo, HOST, 0, max_size=100) as server:
        with syncws.connect(uri(server), compression=None) as client:
            client.send("x" * 101)
            with pytest.raises(syncws.ConnectionClosed) as closed:
                client.recv(TIMEOUT)
        assert closed.value.code == 1009
        # The server doesn't wait for the client's close frame: its own code counts.
        assert settled(server, 1).connections_closed == {1009: 1}


def test_a_close_the_server_couldnt_answer_counts_as_1006() -> None:
    """A client closes with 1000, then stops reading: the server's reply can't be written.

    It counted as 1000, a clean close, though the client never got the reply.
    """
    sending = threading.Event()

    def flood(websocket: syncws.WebSocketServerProtocol) -> None:
        sending.set()
        try:
            websocket.send(b"\x00" * 64 * 2**20)  # more than every buffer between us holds
        except (syncws.ConnectionClosed, TimeoutError):
            pass

    with syncws.serve(flood, HOST, 0, ping_interval=None, close_timeout=0.5, write_timeout=2) as server:
        with socket.socket() as peer:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer.settimeout(TIMEOUT)
            peer.connect((HOST, server.port))
            peer.sendall(
                b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += peer.recv(1)
            assert head.startswith(b"HTTP/1.1 101"), head
            assert sending.wait(TIMEOUT)
            assert peer.recv(1, socket.MSG_PEEK)  # the message is under way: its send holds the writer
            mask = b"abcd"
            payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(b"\x03\xe8"))
            peer.sendall(b"\x88\x82" + mask + payload)  # close 1000, then no more reading
            assert settled(server, 1).connections_closed == {1006: 1}


def test_refused_handshakes_by_status(server: syncws.WebSocketServer) -> None:
    with pytest.raises(syncws.InvalidStatusCode):
        syncws.connect(uri(server), origin="https://evil.example")
    with pytest.raises(urllib.error.HTTPError):  # not a WebSocket request: 426
        urllib.request.urlopen(f"http://{HOST}:{server.port}/", timeout=TIMEOUT)
    with socket.create_connection((HOST, server.port), timeout=TIMEOUT) as raw:
        raw.sendall(b"GARBAGE\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    clients = [syncws.connect(uri(server)) for _ in range(3)]
    try:
        # max_connections counts a connection once its handler starts,
        # just after the client got its 101 (and after the metrics count
        # it as open): only then is the fourth refused before its 101.
        assert wait_for(lambda: len(server.connections) == 3, TIMEOUT)
        with pytest.raises(syncws.InvalidStatusCode):
            syncws.connect(uri(server))  # max_connections=3: 503
    finally:
        for client in clients:
            client.close()
    assert server.metrics().handshakes_refused == {400: 1, 403: 1, 426: 1, 503: 1}
    assert server.metrics().connections_opened == 3


def test_counters_only_grow_while_connections_come_and_go() -> None:
    # Not the fixture's server: its max_connections=3 counts a connection
    # until the server's side of it has ended, a moment after the client's
    # close() returns, and under load the next connections got 503.
    with syncws.serve(echo, HOST, 0, ping_interval=None) as server:
        stop = threading.Event()
        seen: List[ServerMetrics] = []

        def scrape() -> None:
            while not stop.is_set():
                seen.append(server.metrics())

        scraper = threading.Thread(target=scrape)
        scraper.start()
        try:
            for _ in range(30):
                with syncws.connect(uri(server)) as client:
                    client.send("x" * 100)
                    client.recv(TIMEOUT)
        finally:
            stop.set()
            scraper.join(TIMEOUT)
        seen.append(settled(server, 30))
    for before, after in zip(seen, seen[1:]):
        assert after.connections_opened >= before.connections_opened
        assert sum(after.connections_closed.values()) >= sum(before.connections_closed.values())
        assert after.messages_received >= before.messages_received
        assert after.bytes_sent >= before.bytes_sent
    assert seen[-1].messages_received == seen[-1].messages_sent == 30


def test_clients_count_nowhere(server: syncws.WebSocketServer) -> None:
    with servers_kept_alive():
        before = metrics.collect()
        with syncws.connect(uri(server)) as client:
            assert client.counters is None
        after = settled(server, 1)
        total = metrics.collect()
    # collect() adds this server's one connection, not the client's.
    assert total.connections_opened - before.connections_opened == after.connections_opened == 1


def test_a_refusal_counts_under_its_number_on_every_python() -> None:
    # str(HTTPStatus.FORBIDDEN) is "HTTPStatus.FORBIDDEN" before Python 3.11.
    counters = metrics.ConnectionCounters()
    counters.refused(http.HTTPStatus.FORBIDDEN)
    refused = counters.snapshot().handshakes_refused
    assert [(type(status), status) for status in refused] == [(int, 403)]
    assert 'syncws_handshakes_refused_total{status="403"} 1' in metrics.render(counters.snapshot(), [])


def test_add_snapshots() -> None:
    first = ServerMetrics(1, 2, {1000: 1}, {403: 2}, 3, 4, 5, 6)
    second = ServerMetrics(1, 1, {1000: 1, 1006: 1}, {}, 1, 1, 1, 1)
    assert first + second == ServerMetrics(2, 3, {1000: 2, 1006: 1}, {403: 2}, 4, 5, 6, 7)
    assert ServerMetrics.from_dict(first.as_dict()) == first


# -- the text format ----------------------------------------------------------------


SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})? (\d+(?:\.\d+)?(?:e[+-]?\d+)?)$')


def parse(text: str) -> Tuple[Dict[str, str], Dict[str, float]]:
    """(types by family, values by sample) of an exposition; fails on any line it can't read."""
    types: Dict[str, str] = {}
    values: Dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"{name} twice"
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, line
        assert match.group(1) in types, f"{line}: no TYPE before"
        values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return types, values


def test_render_follows_the_text_format() -> None:
    snapshot = ServerMetrics(2, 9, {1000: 5, 1006: 2}, {403: 1}, 10, 11, 1200, 1300)
    types, values = parse(metrics.render(snapshot, fanouts=[]))
    assert types == {
        "syncws_connections_open": "gauge",
        "syncws_connections_opened_total": "counter",
        "syncws_connections_closed_total": "counter",
        "syncws_handshakes_refused_total": "counter",
        "syncws_received_messages_total": "counter",
        "syncws_sent_messages_total": "counter",
        "syncws_received_bytes_total": "counter",
        "syncws_sent_bytes_total": "counter",
    }
    assert values == {
        "syncws_connections_open": 2,
        "syncws_connections_opened_total": 9,
        'syncws_connections_closed_total{code="1000"}': 5,
        'syncws_connections_closed_total{code="1006"}': 2,
        'syncws_handshakes_refused_total{status="403"}': 1,
        "syncws_received_messages_total": 10,
        "syncws_sent_messages_total": 11,
        "syncws_received_bytes_total": 1200,
        "syncws_sent_bytes_total": 1300,
    }


def test_render_includes_every_fanout_of_the_process(server: syncws.WebSocketServer) -> None:
    fanout = LocalFanout()
    try:
        with syncws.connect(uri(server)) as client:
            client.send("hello")
            client.recv(TIMEOUT)
        text = metrics.render()
        types, values = parse(text)
        # This process's fan-outs (other tests' may still be alive): one
        # family per field of FanoutStats, counters named *_total.
        assert types["syncws_fanout_published_total"] == "counter"
        assert "# HELP syncws_fanout_published_total Fan-out: messages this process published." in text
        assert values["syncws_connections_opened_total"] >= 1
    finally:
        fanout.close()


@dataclasses.dataclass
class MoreStats(FanoutStats):
    """A fan-out's stats with a field of its own.

    Attributes:
        recovered: messages sent again.
    """

    recovered: int = dataclasses.field(default=0, metadata={"kind": "counter"})


def test_a_subclass_of_fanout_stats_keeps_the_help_of_every_field() -> None:
    text = metrics.render(ServerMetrics(), fanouts=[MoreStats(published=3, recovered=2)])
    types, values = parse(text)
    assert values["syncws_fanout_published_total"] == 3 and values["syncws_fanout_recovered_total"] == 2
    assert "# HELP syncws_fanout_published_total Fan-out: messages this process published." in text
    assert "# HELP syncws_fanout_recovered_total Fan-out: messages sent again." in text


def test_labels_are_escaped() -> None:
    families = metrics.families(ServerMetrics(), labels={"worker": 'a"b\\c\nd'})
    text = metrics.exposition(families)
    assert 'syncws_connections_open{worker="a\\"b\\\\c\\nd"} 0' in text


def test_samples_of_several_sources_share_one_family() -> None:
    text = metrics.exposition(
        metrics.families(ServerMetrics(connections_open=1), labels={"worker": "0"})
        + metrics.families(ServerMetrics(connections_open=2), labels={"worker": "1"})
    )
    types, values = parse(text)
    assert values['syncws_connections_open{worker="0"}'] == 1
    assert values['syncws_connections_open{worker="1"}'] == 2
    assert text.count("# TYPE syncws_connections_open gauge") == 1


def test_a_group_member_writes_its_file_one_publish_at_a_time(tmp_path: Any, monkeypatch: Any) -> None:
    # A worker's metrics thread and a scrape (a connection thread) publish at
    # once: both wrote the same temporary file, and the second rename found
    # it gone (FileNotFoundError, which render() took for the group's
    # directory gone: the other workers' samples went missing).
    group = metrics.GroupMetrics(str(tmp_path), 0)
    writing, most = 0, 0
    count_lock = threading.Lock()
    entered, overlapped = threading.Event(), threading.Event()
    real_dump = json.dump

    def dump(data: Any, file: Any) -> None:
        nonlocal writing, most
        with count_lock:
            writing += 1
            most = max(most, writing)
        if writing > 1:
            overlapped.set()
        entered.set()
        overlapped.wait(1.0)  # time for the other publish to come in, if it can
        real_dump(data, file)
        with count_lock:
            writing -= 1

    errors: List[BaseException] = []

    def publish() -> None:
        try:
            group.publish()
        except BaseException as exc:
            errors.append(exc)

    monkeypatch.setattr(json, "dump", dump)
    first, second = threading.Thread(target=publish), threading.Thread(target=publish)
    first.start()
    assert entered.wait(TIMEOUT)
    second.start()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    assert (most, errors) == (1, [])
    assert json.loads((tmp_path / "0.json").read_text())["families"]


WSGI_APP = '''
import syncws.metrics
from syncws.wsgi import WebSocketMiddleware


def metrics(environ, start_response):
    start_response("200 OK", [("Content-Type", syncws.metrics.CONTENT_TYPE)])
    return [syncws.metrics.render().encode()]


def echo(websocket):
    for message in websocket:
        websocket.send(message)


app = WebSocketMiddleware(metrics, {"/ws/echo": echo})
'''


@pytest.mark.timeout(60)
def test_a_wsgi_application_exposes_its_connections(tmp_path: Any) -> None:
    pytest.importorskip("gunicorn")
    from services import Gunicorn

    (tmp_path / "metricsapp.py").write_text(WSGI_APP)
    gunicorn = Gunicorn(tmp_path, "metricsapp:app", "-k", "gthread", "--threads", "4", env={"PYTHONPATH": str(tmp_path)})
    try:
        scrape = f"http://{HOST}:{gunicorn.port}/metrics"
        with syncws.connect(f"ws://{HOST}:{gunicorn.port}/ws/echo", timeout=TIMEOUT, compression=None) as client:
            for n in range(3):
                client.send(f"message {n}")
                client.recv(TIMEOUT)
            with urllib.request.urlopen(scrape, timeout=TIMEOUT) as response:
                assert response.headers["Content-Type"] == metrics.CONTENT_TYPE
                _, values = parse(response.read().decode())
            assert values["syncws_connections_open"] == 1
            assert values["syncws_received_messages_total"] == values["syncws_sent_messages_total"] == 3
        assert wait_for(lambda: 'syncws_connections_closed_total{code="1000"} 1' in urllib.request.urlopen(
            scrape, timeout=TIMEOUT).read().decode(), TIMEOUT)
    finally:
        gunicorn.stop()
    assert "Traceback" not in gunicorn.log()


def upgrade_request(port: int, path: str, headers: Dict[str, str]) -> int:
    """The status answering an upgrade request (or a plain GET without ``Upgrade``)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        connection.request("GET", path, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.timeout(60)
def test_wsgi_refusals_count_by_status() -> None:
    # serve() counts every refused handshake; WSGI counted none of them.
    werkzeug_serving = pytest.importorskip("werkzeug.serving")
    from syncws.wsgi import WebSocketMiddleware

    def page(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such page\n"]

    app = WebSocketMiddleware(page, {"/ws": echo}, origins=["https://good.example"])
    server = werkzeug_serving.make_server(HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    key = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    before = metrics.wsgi_counters.snapshot()
    try:
        statuses = [
            upgrade_request(server.port, "/ws", {**key, "Origin": "https://evil.example"}),  # accept(): 403
            upgrade_request(server.port, "/ws", {**key, "Origin": "https://good.example",
                                                 "Sec-WebSocket-Key": "short"}),  # 400
            upgrade_request(server.port, "/ws", {}),  # a plain GET: 426
            upgrade_request(server.port, "/elsewhere", {**key, "Origin": "https://good.example"}),  # the app's 404
            upgrade_request(server.port, "/elsewhere", {}),  # no upgrade: no handshake refused
        ]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)
    assert statuses == [403, 400, 426, 404, 404]
    after = metrics.wsgi_counters.snapshot()
    counted = {status: count - before.handshakes_refused.get(status, 0) for status, count in after.handshakes_refused.items()}
    assert {status: count for status, count in counted.items() if count} == {403: 1, 400: 1, 426: 1, 404: 1}


def test_every_name_follows_prometheus_naming() -> None:
    # https://prometheus.io/docs/practices/naming/: an application prefix;
    # a unit suffix in base units, plural (seconds, bytes); "_total" on
    # counters and only on them. syncws_fanout_oldest_pending had no unit.
    from syncws.streams import StreamFanoutStats

    text = metrics.render(ServerMetrics(1, 1, {1000: 1}, {403: 1}, 1, 1, 1, 1), fanouts=[StreamFanoutStats()])
    types, _ = parse(text)
    helps = dict(line[len("# HELP "):].split(" ", 1) for line in text.splitlines() if line.startswith("# HELP "))
    assert "syncws_fanout_oldest_pending_seconds" in types
    for name, kind in types.items():
        assert re.fullmatch(r"syncws_[a-z]+(_[a-z]+)*", name), name
        assert name.endswith("_total") == (kind == "counter"), name
        stem = name[: -len("_total")] if kind == "counter" else name
        described = helps[name].lower()
        for unit, words in (("seconds", ("second",)), ("bytes", ("byte",))):
            if any(word in described for word in words):
                assert stem.endswith("_" + unit), f"{name}: {helps[name]}"
        assert not re.search(r"_(milli|micro|kilo|mega)?(second|byte|ms|kb|mb)(_|$)", stem), name
        assert helps[name] and "\n" not in helps[name] and "(gauge" not in helps[name], helps[name]
