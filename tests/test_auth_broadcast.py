"""Tests for syncws.auth (basic_auth) and syncws.broadcast (broadcast),
against a real server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import pytest
import websockets.sync.client

import syncws

HOST = "127.0.0.1"
KEY = base64.b64encode(b"0123456789abcdef").decode()


# -- helpers -------------------------------------------------------------------


def echo(ws):
    for message in ws:
        ws.send(message)


@pytest.fixture
def make_server():
    """serve() with teardown: every server made is closed and waited for."""
    servers = []

    def make(handler=echo, **kwargs):
        server = syncws.serve(handler, HOST, 0, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
    for server in servers:
        server.wait_closed(timeout=10)


def upgrade_request(extra=()):
    lines = [
        "GET / HTTP/1.1",
        f"Host: {HOST}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock):
    """Read an HTTP head; return (status, {lower name: value}, rest)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("iso-8859-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def raw_request(port, extra=()):
    """Send an upgrade request; return (status, headers, body) of a refusal."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(upgrade_request(extra))
        status, headers, rest = read_head(sock)
        if status == 101:
            return status, headers, b""
        body = rest
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, headers, body


def basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# -- basic_auth ----------------------------------------------------------------------


def whoami(ws):
    ws.send(ws.request_headers.get("Authorization") or "nobody")


@pytest.mark.timeout(10)
def test_basic_auth_no_credentials_is_401_with_challenge(make_server):
    server = make_server(whoami, process_request=syncws.basic_auth(("alice", "secret")))
    status, headers, body = raw_request(server.port)
    assert status == 401
    assert headers["www-authenticate"].startswith('Basic realm="syncws"')
    assert headers["content-length"] == str(len(body))
    assert b"credentials" in body.lower()
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(f"ws://{HOST}:{server.port}/")
    assert excinfo.value.status_code == 401


@pytest.mark.timeout(10)
def test_basic_auth_wrong_password_is_401(make_server):
    server = make_server(whoami, process_request=syncws.basic_auth(("alice", "secret")))
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(f"ws://alice:wrong@{HOST}:{server.port}/")
    assert excinfo.value.status_code == 401
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(f"ws://mallory:secret@{HOST}:{server.port}/")
    assert excinfo.value.status_code == 401
    for value in (basic("alice", "wrong"), basic("alice", "secretX"), "Bearer abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"alicesecret").decode()):
        status, headers, _ = raw_request(server.port, [("Authorization", value)])
        assert status == 401, value
        assert "www-authenticate" in headers


@pytest.mark.timeout(10)
def test_basic_auth_right_credentials_upgrade(make_server):
    server = make_server(whoami, process_request=syncws.basic_auth(("alice", "secret")))
    with syncws.connect(f"ws://alice:secret@{HOST}:{server.port}/") as ws:
        assert ws.recv(timeout=5) == basic("alice", "secret")
    status, _, _ = raw_request(server.port, [("Authorization", basic("alice", "secret"))])
    assert status == 101
    # An independent client puts the user info in the same header.
    with websockets.sync.client.connect(f"ws://alice:secret@{HOST}:{server.port}/", open_timeout=5) as ws:
        assert ws.recv(timeout=5) == basic("alice", "secret")


@pytest.mark.timeout(10)
def test_basic_auth_several_credentials_and_realm(make_server):
    auth = syncws.basic_auth([("alice", "secret"), ("bob", "hunter2")], realm="chat room")
    server = make_server(whoami, process_request=auth)
    for user, password in (("alice", "secret"), ("bob", "hunter2")):
        with syncws.connect(f"ws://{user}:{password}@{HOST}:{server.port}/") as ws:
            assert ws.recv(timeout=5) == basic(user, password)
    with pytest.raises(syncws.InvalidStatusCode):
        syncws.connect(f"ws://bob:secret@{HOST}:{server.port}/")
    status, headers, _ = raw_request(server.port)
    assert status == 401
    assert headers["www-authenticate"].startswith('Basic realm="chat room"')


@pytest.mark.timeout(10)
def test_basic_auth_check_credentials_callable(make_server):
    calls = []
    lock = threading.Lock()

    def check(username, password):
        with lock:
            calls.append((username, password))
        return password == username[::-1]

    server = make_server(whoami, process_request=syncws.basic_auth(check_credentials=check))
    with syncws.connect(f"ws://abc:cba@{HOST}:{server.port}/") as ws:
        assert ws.recv(timeout=5) == basic("abc", "cba")
    with pytest.raises(syncws.InvalidStatusCode) as excinfo:
        syncws.connect(f"ws://abc:abc@{HOST}:{server.port}/")
    assert excinfo.value.status_code == 401
    assert calls == [("abc", "cba"), ("abc", "abc")]


def test_basic_auth_needs_exactly_one_source():
    with pytest.raises(TypeError):
        syncws.basic_auth()
    with pytest.raises(TypeError):
        syncws.basic_auth(("a", "b"), check_credentials=lambda u, p: True)


# -- broadcast ----------------------------------------------------------------------------


def wait_for_handlers(entered, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    for _ in range(count):
        assert entered.acquire(timeout=max(0.0, deadline - time.monotonic()))


def hold(entered):
    def handler(ws):
        entered.release()
        for _ in ws:  # keep the connection open until the client leaves
            pass

    return handler


def stalled_client(port):
    """A client that completes the handshake, then never reads: a raw socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect((HOST, port))
    sock.sendall(upgrade_request())
    assert read_head(sock)[0] == 101
    return sock


@pytest.mark.timeout(20)
def test_broadcast_reaches_every_client(make_server):
    entered = threading.Semaphore(0)
    server = make_server(hold(entered))
    clients = [syncws.connect(f"ws://{HOST}:{server.port}/") for _ in range(20)]
    try:
        wait_for_handlers(entered, 20)
        connections = server.connections
        assert len(connections) == 20
        assert syncws.broadcast(connections, "msg") == {}
        assert syncws.broadcast(connections, b"\x00bytes") == {}
        for ws in clients:
            assert ws.recv(timeout=5) == "msg"
            assert ws.recv(timeout=5) == b"\x00bytes"

        # A closed connection is skipped, not reported.
        clients[0].close()
        closed = [c for c in connections if c.remote_address == clients[0].local_address]
        assert len(closed) == 1
        closed[0].wait_closed(timeout=5)
        assert syncws.broadcast(connections, "again") == {}
        for ws in clients[1:]:
            assert ws.recv(timeout=5) == "again"
    finally:
        for ws in clients:
            ws.close()


@pytest.mark.timeout(30)
def test_broadcast_a_client_that_stops_reading_does_not_stall_others(make_server):
    entered = threading.Semaphore(0)
    server = make_server(hold(entered), compression=None)
    port = server.port

    stalled = stalled_client(port)

    healthy = [syncws.connect(f"ws://{HOST}:{port}/", max_size=None, compression=None) for _ in range(3)]
    messages = [bytes([n]) * 2**20 for n in range(8)]
    received = {i: [] for i in range(len(healthy))}
    errors = []

    def collect(i, ws):
        try:
            for _ in messages:
                received[i].append(ws.recv(timeout=20))
        except Exception as exc:  # reported by the assertions below
            errors.append(repr(exc))

    try:
        wait_for_handlers(entered, 4)
        connections = server.connections
        assert len(connections) == 4
        slow = [c for c in connections if c.remote_address == stalled.getsockname()]
        assert len(slow) == 1

        collectors = [threading.Thread(target=collect, args=(i, ws), daemon=True) for i, ws in enumerate(healthy)]
        for thread in collectors:
            thread.start()

        failures = {}
        durations = []
        done = threading.Event()

        def run_broadcasts():
            for message in messages:
                start = time.monotonic()
                for connection, exc in syncws.broadcast(connections, message, timeout=1).items():
                    # The first failure says why; a later call may race with
                    # the aborted connection's reader thread and see it lost.
                    failures.setdefault(connection, exc)
                durations.append(time.monotonic() - start)
            done.set()

        broadcaster = threading.Thread(target=run_broadcasts, daemon=True)
        start = time.monotonic()
        broadcaster.start()
        # One slow client may cost about `timeout` once; nothing more.
        assert done.wait(8), f"broadcast still running after {time.monotonic() - start:.1f} s; calls took {durations}"
        assert max(durations) < 3, durations

        assert list(failures) == slow, failures
        assert isinstance(failures[slow[0]], TimeoutError)
        assert not slow[0].open

        for thread in collectors:
            thread.join(10)
        assert errors == []
        for i in received:
            assert len(received[i]) == len(messages)
            assert all(got == want for got, want in zip(received[i], messages))
    finally:
        stalled.close()
        for ws in healthy:
            ws.close()


@pytest.mark.timeout(30)
def test_broadcast_timeout_bounds_a_message_bigger_than_the_socket_buffers(make_server):
    # A stalled client first in line, and a message bigger than any socket
    # buffer (Linux caps them at a few MiB): the send can start at once but
    # can't finish, and broadcast's timeout, not the connection's 60 s
    # write_timeout, must bound it.
    entered = threading.Semaphore(0)
    server = make_server(hold(entered), compression=None)
    stalled = stalled_client(server.port)
    healthy = syncws.connect(f"ws://{HOST}:{server.port}/", max_size=None, compression=None)
    message = b"\xab" * 2**24
    try:
        wait_for_handlers(entered, 2)
        connections = server.connections
        slow = [c for c in connections if c.remote_address == stalled.getsockname()]
        others = [c for c in connections if c not in slow]
        assert len(slow) == 1 and len(others) == 1

        result = {}
        got = {}
        done = threading.Event()

        def run():
            start = time.monotonic()
            result["failures"] = syncws.broadcast(slow + others, message, timeout=1)
            result["elapsed"] = time.monotonic() - start
            done.set()

        def receive():
            try:
                got["message"] = healthy.recv(timeout=20)
            except Exception as exc:  # reported by the assertion below
                got["error"] = exc

        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        threading.Thread(target=run, daemon=True).start()
        assert done.wait(5), "broadcast(timeout=1) still running after 5 s"
        assert list(result["failures"]) == slow
        assert isinstance(result["failures"][slow[0]], TimeoutError)
        receiver.join(10)
        assert "error" not in got, got
        assert got.get("message") == message
    finally:
        stalled.close()
        healthy.close()


@pytest.mark.timeout(60)
def test_broadcast_many_stalled_clients_delay_neither_the_others_nor_the_call(make_server):
    # 32 clients that stop reading and 3 that read, and a message that no
    # socket takes at once: every send is a slow one. Each runs in a thread
    # of its own, so the readers get the message at once, however many
    # stalled sends are ahead of them, and the call ends after one timeout.
    entered = threading.Semaphore(0)
    server = make_server(hold(entered), compression=None)
    stalled = [stalled_client(server.port) for _ in range(32)]
    healthy = [syncws.connect(f"ws://{HOST}:{server.port}/", max_size=None, compression=None) for _ in range(3)]
    message = b"\xcd" * 2**22  # more than a stalled client's socket buffers take (about 3 MiB)
    arrivals = []

    def receive(ws):
        if ws.recv(timeout=20) == message:
            arrivals.append(time.monotonic())

    try:
        wait_for_handlers(entered, 35)
        by_address = {c.remote_address: c for c in server.connections}
        slow = [by_address[sock.getsockname()] for sock in stalled]
        others = [c for c in by_address.values() if c not in slow]
        receivers = [threading.Thread(target=receive, args=(ws,), daemon=True) for ws in healthy]
        for thread in receivers:
            thread.start()
        start = time.monotonic()
        failures = syncws.broadcast(slow + others, message, timeout=3)  # the readers last in line
        elapsed = time.monotonic() - start
        assert set(failures) == set(slow) and all(isinstance(e, TimeoutError) for e in failures.values())
        for thread in receivers:
            thread.join(10)
        assert len(arrivals) == 3
        # Before, 16 worker threads took the slow sends in turn: the readers
        # waited for two rounds of stalled sends (6 s), the call for three.
        assert max(arrivals) - start < 3, [a - start for a in arrivals]
        assert elapsed < 6, elapsed
    finally:
        for sock in stalled:
            sock.close()
        for ws in healthy:
            ws.close()
