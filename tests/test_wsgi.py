"""syncws.wsgi over real WSGI servers: gunicorn (gthread, sync), werkzeug, a browser.

Every server is a child process started here on a free port of 127.0.0.1 and
stopped by its PID; its log is checked for errors when it stops.
"""

from __future__ import annotations

import base64
import http
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, List

import pytest

import syncws
from services import Chromium, free_port, gunicorn_command
from syncws import framing
from syncws.exceptions import InvalidStatusCode
from syncws.wsgi import HandedOver, ServerNotSupported, accept, websocket_app

gunicorn = pytest.importorskip("gunicorn")
flask = pytest.importorskip("flask")
django = pytest.importorskip("django")
websockets_sync = pytest.importorskip("websockets.sync.client")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "wsgi")
DOCS_PAGE = os.path.join(ROOT, "docs", "wsgi.rst")
APPS = os.path.join(ROOT, "tests", "wsgi_apps")
MiB = 1 << 20


class ServerProcess:
    """A WSGI server in a child process, its log in a temporary file."""

    def __init__(self, name: str, argv: List[str], port: int, cwd: str = EXAMPLES, **env: str) -> None:
        self.name = name
        self.port = port
        self.log = tempfile.NamedTemporaryFile(prefix=f"syncws-{name}-", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, EXAMPLES, APPS]), PYTHONUNBUFFERED="1", **env)
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_listening(30)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._give_up("exited")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                self.process_wait(0.05)
        self._give_up(f"isn't listening after {timeout} s")

    def _give_up(self, why: str) -> None:
        """Stop the server and remove its log (the caller gets no ServerProcess to do it), then raise."""
        self.stop()
        log = self.read_log()
        os.unlink(self.log.name)
        raise RuntimeError(f"{self.name} {why}: {log}")

    def process_wait(self, seconds: float) -> None:
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def read_log(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as log:
            return log.read()

    def worker_pids(self) -> List[int]:
        """gunicorn's workers: the master's children."""
        pid = self.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(p) for p in children.read().split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return int(self.process.returncode)

    def errors(self) -> List[str]:
        bad = ("Traceback", "[ERROR]", "Error on request", "Exception")
        return [line for line in self.read_log().splitlines() if any(b in line for b in bad)]

    def close(self) -> None:
        self.stop()
        errors = self.errors()
        os.unlink(self.log.name)
        assert not errors, f"{self.name} logged errors: {errors}"


def gunicorn_server(app: str, *args: str, name: str = "gunicorn", **env: str) -> ServerProcess:
    port = free_port()
    return ServerProcess(name, gunicorn_command(app, "--chdir", EXAMPLES, *args, port=port), port, **env)


def werkzeug_server(app: str) -> ServerProcess:
    port = free_port()
    module, name = app.split(":")
    code = (
        "import sys; from werkzeug.serving import run_simple; "
        f"from {module} import {name} as app; "
        "run_simple('127.0.0.1', int(sys.argv[1]), app, threaded=True)"
    )
    return ServerProcess("werkzeug", [sys.executable, "-c", code, str(port)], port)


def running(server: ServerProcess) -> Iterator[ServerProcess]:
    """A module fixture's life: the server for the tests, then its log checked."""
    yield server
    server.close()


@pytest.fixture(scope="module")
def flask_gunicorn() -> Iterator[ServerProcess]:
    yield from running(gunicorn_server("flask_test_app:app", "-k", "gthread", "--threads", "130",
                                       name="gunicorn-flask"))


@pytest.fixture(scope="module")
def django_gunicorn() -> Iterator[ServerProcess]:
    yield from running(gunicorn_server("django_test_app:application", "-k", "gthread", "--threads", "130",
                                       name="gunicorn-django"))


@pytest.fixture(scope="module")
def bare_gunicorn_mounted() -> Iterator[ServerProcess]:
    """WebSocketMiddleware, mounted at /app (gunicorn's SCRIPT_NAME)."""
    yield from running(gunicorn_server("bare_app:app", "-k", "gthread", "--threads", "8", name="gunicorn-bare",
                                       SCRIPT_NAME="/app"))


@pytest.fixture(scope="module")
def flask_werkzeug() -> Iterator[ServerProcess]:
    yield from running(werkzeug_server("flask_test_app:app"))


@pytest.fixture(scope="module")
def flask_run() -> Iterator[ServerProcess]:
    """``flask run``: werkzeug's development server through Flask's CLI."""
    port = free_port()
    argv = [sys.executable, "-m", "flask", "--app", "flask_test_app", "run", "--port", str(port)]
    yield from running(ServerProcess("flask-run", argv, port))


@pytest.fixture(params=["flask_gunicorn", "django_gunicorn", "flask_werkzeug", "flask_run"])
def any_server(request: Any) -> ServerProcess:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def get(url: str, **kwargs: Any) -> Any:
    return urllib.request.urlopen(urllib.request.Request(url, **kwargs), timeout=10)


# -- echo over every server, two clients ----------------------------------------------

def test_echo_text_and_binary_syncws(any_server: ServerProcess) -> None:
    payload = os.urandom(MiB)
    with syncws.connect(f"{any_server.ws}/ws/echo", max_size=2 * MiB) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(payload)
        assert ws.recv(timeout=10) == payload
        assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
        ws.close()
    assert ws.close_code == 1000


def test_echo_text_and_binary_websockets(any_server: ServerProcess) -> None:
    payload = os.urandom(MiB)
    with websockets_sync.connect(f"{any_server.ws}/ws/echo", max_size=2 * MiB, open_timeout=10) as ws:
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(payload)
        assert ws.recv(timeout=10) == payload
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")


def test_page_is_served(any_server: ServerProcess) -> None:
    body = get(f"{any_server.url}/").read().decode()
    assert "new WebSocket(" in body and "/ws/echo" in body


def test_plain_get_on_websocket_route_gets_426(any_server: ServerProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        get(f"{any_server.url}/ws/echo")
    assert info.value.code == 426
    assert b"Failed to open a WebSocket connection" in info.value.read()


def test_bad_handshake_gets_400(any_server: ServerProcess) -> None:
    # http.client, since urllib forces "Connection: close".
    connection = http.client.HTTPConnection("127.0.0.1", any_server.port, timeout=10)
    connection.request("GET", "/ws/echo", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "not base64 of 16 bytes",
    })
    response = connection.getresponse()
    assert response.status == 400
    assert b"Sec-WebSocket-Key" in response.read()
    connection.close()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (b"Host: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello", b"has no body"),
        (b"Host: 127.0.0.1\r\nOrigin: https://evil.test\r\nOrigin: https://app.test\r\n\r\n", b"more than one origin"),
        (b"\r\n", b"missing Host header"),
    ],
    ids=["body", "two-origins", "no-host"],
)
def test_strict_handshake_refusals_as_serve_gives_them(any_server: ServerProcess, extra: bytes, fragment: bytes) -> None:
    with socket.create_connection(("127.0.0.1", any_server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /ws/echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra
        )
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 400
        assert fragment in response.read()


def raw_handshake(port: int, path: str, extra: bytes = b"") -> socket.socket:
    """Send a handshake (and maybe bytes right behind it); return the socket after the 101."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    sock.sendall(request + extra)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    return sock


def masked(opcode: int, payload: bytes) -> bytes:
    return framing.serialize_frame(framing.Frame(True, framing.Opcode(opcode), payload), mask=True)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_frames_sent_with_the_handshake_and_nothing_after_the_close(any_server: ServerProcess) -> None:
    # A client that doesn't wait for the 101: the server read some of its
    # frames together with the request head, and must lose none of them.
    big = os.urandom(200_000)  # more than one read of the server and of syncws
    sock = raw_handshake(any_server.port, "/ws/echo", masked(0x1, b"early") + masked(0x2, big))
    with sock:
        assert sock.recv(7) == b"\x81\x05early"
        header = b""
        while len(header) < 10:
            header += sock.recv(10 - len(header))
        assert header == b"\x82\x7f" + len(big).to_bytes(8, "big")
        echoed = b""
        while len(echoed) < len(big):
            echoed += sock.recv(len(big) - len(echoed))
        assert echoed == big
        sock.sendall(masked(0x8, b"\x03\xe8bye"))
        # The close frame echoed, then the server closes TCP: no HTTP bytes.
        assert read_all(sock) == b"\x88\x05\x03\xe8bye"


# -- one path for every decision ----------------------------------------------------

# (fixture, the application's mount point): every WSGI integration.
PATH_SERVERS = [("flask_gunicorn", ""), ("flask_werkzeug", ""), ("django_gunicorn", ""),
                ("bare_gunicorn_mounted", "/app")]


@pytest.mark.parametrize("fixture, mount", PATH_SERVERS)
def test_a_path_check_in_process_request_sees_what_the_router_routes(fixture: str, mount: str,
                                                                       request: Any) -> None:
    # process_request used to get the request-target as received: the
    # check for a "private" segment let /%70rivate/feed through (101), and
    # the router ran the private handler.
    server: ServerProcess = request.getfixturevalue(fixture)
    for target in ("/private/feed", "/%70rivate/feed", "/priv%61te/feed?x=1"):
        with pytest.raises(InvalidStatusCode) as info:
            syncws.connect(f"{server.ws}{mount}{target}")
        assert info.value.status_code == 401, target


@pytest.mark.parametrize("fixture, mount", PATH_SERVERS)
def test_hooks_and_handler_see_one_decoded_path(fixture: str, mount: str, request: Any) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    target = f"{mount}/public/caf%C3%A9?room=%70"
    with syncws.connect(f"{server.ws}{target}") as ws:
        seen = json.loads(ws.recv(timeout=10))
        seen_by_extra_headers = urllib.parse.unquote(ws.response_headers["X-Hook-Path"])
    assert seen == {"path": f"{mount}/public/café?room=%70", "request_target": target}
    assert seen_by_extra_headers == seen["path"]


@pytest.mark.parametrize("fixture", ["flask_gunicorn", "flask_werkzeug", "django_gunicorn"])
def test_a_control_character_in_the_path_gets_400(fixture: str, request: Any) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    for target in ("/public/a%00b", "/public/a%0D%0Ab", "/public/%C2%85"):
        with pytest.raises(InvalidStatusCode) as info:
            syncws.connect(f"{server.ws}{target}")
        assert info.value.status_code == 400, target


@pytest.mark.parametrize("fixture, expected", [
    ("flask_gunicorn", 400),                # PATH_INFO holds the byte: not UTF-8
    ("flask_werkzeug", "/public/\ufffd"),   # werkzeug's server decoded it so
    ("django_gunicorn", "/public/%FF"),     # Django re-encodes what isn't UTF-8
])
def test_a_path_that_isnt_utf8_is_the_routers_or_refused(fixture: str, expected: Any, request: Any) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    if expected == 400:
        with pytest.raises(InvalidStatusCode) as info:
            syncws.connect(f"{server.ws}/public/%FF")
        assert info.value.status_code == 400
        return
    with syncws.connect(f"{server.ws}/public/%FF") as ws:
        assert json.loads(ws.recv(timeout=10))["path"] == expected


# -- refusals close the connection; the handshake is strict -----------------------------

def exchange(port: int, request: bytes, *, until_head: bool = False) -> bytes:
    """Send ``request``; return what the server sends until it closes (or stops for 10 s).

    With ``until_head``, until the end of the response's head only.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        try:
            while not (until_head and b"\r\n\r\n" in data):
                chunk = sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
            return data
        except socket.timeout:
            return data + b"<still open>"


def upgrade(path: str, *, version: str = "1.1", host: Optional[str] = "127.0.0.1", extra: str = "") -> bytes:
    head = f"GET {path} HTTP/{version}\r\n" + (f"Host: {host}\r\n" if host is not None else "") + (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
    ) + extra + "\r\n"
    return head.encode()


REFUSED_UPGRADES = {
    "bad key": upgrade("/ws/echo", extra="Sec-WebSocket-Key: bad\r\n"),  # repeated, as a comma
    "HTTP/1.0": upgrade("/ws/echo", version="1.0"),
    "no Host": upgrade("/ws/echo", host=None),
    "two Host": upgrade("/ws/echo", extra="Host: evil.example\r\n"),
    "two Origin": upgrade("/ws/echo", extra="Origin: https://evil.test\r\nOrigin: https://app.example.com\r\n"),
    "a body": upgrade("/ws/echo", extra="Content-Length: 8\r\n") + b"\x81\x02hi\x00\x00\x00\x00",
    "chunked": upgrade("/ws/echo", extra="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
}


@pytest.mark.parametrize("refusal", sorted(REFUSED_UPGRADES))
@pytest.mark.parametrize("fixture, mount", PATH_SERVERS)
def test_a_refused_upgrade_is_400_and_closes_the_connection(fixture: str, mount: str, refusal: str,
                                                           request: Any) -> None:
    # gunicorn's gthread worker answered "Connection: keep-alive" and then
    # served the pipelined request; HTTP/1.0, a body and "chunked" got 101.
    server: ServerProcess = request.getfixturevalue(fixture)
    pipelined = f"GET {mount}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    data = exchange(server.port, REFUSED_UPGRADES[refusal].replace(b" /ws/echo ", f" {mount}/ws/echo ".encode())
                    + pipelined)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") or head.startswith(b"HTTP/1.0 400 "), data[:300]
    assert b"\r\nConnection: close\r\n" in head + b"\r\n", head
    [length] = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert rest[int(length):] == b"", data  # nothing more: no answer to the pipelined request, then the end


@pytest.mark.parametrize("fixture, target, status", [
    ("flask_gunicorn", "/ws/whoami", 401),         # the login decorator above flask_websocket
    ("django_gunicorn", "/ws/whoami", 403),        # the same in Django
    ("bare_gunicorn_mounted", "/app/nowhere", 200),  # not a WebSocket path: the application's page
    ("flask_gunicorn", "/nowhere", 404),           # the router's
])
def test_an_upgrade_the_application_refuses_closes_the_connection(fixture: str, target: str, status: int,
                                                                   request: Any) -> None:
    # Answered by the application before syncws saw the request, these kept
    # gunicorn's connection alive, and it served the pipelined request.
    server: ServerProcess = request.getfixturevalue(fixture)
    mount = target[:4] if target.startswith("/app/") else ""
    data = exchange(server.port, upgrade(target) + f"GET {mount}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), data[:300]
    assert b"\r\nConnection: close\r\n" in head + b"\r\n", head
    [length] = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert rest[int(length):] == b"", data


@pytest.fixture(scope="module")
def accept_gunicorn() -> Iterator[ServerProcess]:
    yield from running(gunicorn_server("accept_app:app", "-k", "gthread", "--threads", "8", name="gunicorn-accept"))


@pytest.fixture(scope="module")
def accept_werkzeug() -> Iterator[ServerProcess]:
    yield from running(werkzeug_server("accept_app:app"))


@pytest.mark.parametrize("fixture", ["accept_gunicorn", "accept_werkzeug"])
def test_accept_called_twice_raises_and_writes_no_second_101(fixture: str, request: Any) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    with syncws.connect(f"{server.ws}/twice") as ws:
        assert ws.recv(timeout=10).startswith("the second accept() raised: accept() was called again")
        ws.send("still open")
        assert ws.recv(timeout=10) == "still open"
    assert ws.close_code == 1000  # 1002 before: the second 101 arrived as a frame


@pytest.mark.parametrize("fixture", ["accept_gunicorn", "accept_werkzeug"])
def test_a_response_returned_after_accept_never_reaches_the_websocket(fixture: str, request: Any) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    with syncws.connect(f"{server.ws}/then-a-response") as ws:
        for message in ("one", "two"):
            ws.send(message)
            assert ws.recv(timeout=10) == message
    assert ws.close_code == 1000  # 1002 before: "HTTP/1.1 200 OK" arrived as a frame


@pytest.mark.timeout(60)
def test_a_response_after_accept_raises_under_flask_route() -> None:
    # flask_route's wrapper tells the mistake: the server logs a RuntimeError
    # that says what to return, and the WebSocket goes on untouched.
    server = gunicorn_server("flask_test_app:app", "-k", "gthread", "--threads", "8", name="gunicorn-mistake")
    try:
        with syncws.connect(f"{server.ws}/ws/then-a-response") as ws:
            for message in ("one", "two"):
                ws.send(message)
                assert ws.recv(timeout=10) == message
        assert ws.close_code == 1000
    finally:
        server.stop()
        log = server.read_log()
        os.unlink(server.log.name)
    assert "RuntimeError: the application answered '200 OK' to a request that accept() upgraded" in log, log


def test_flask_debug_logs_nothing_for_a_websocket() -> None:
    # Under werkzeug's debugger, every WebSocket logged "Debugging
    # middleware caught exception" and a traceback (HandedOver's body raised).
    port = free_port()
    argv = [sys.executable, "-m", "flask", "--app", "flask_test_app", "--debug", "run", "--no-reload",
            "--port", str(port)]
    server = ServerProcess("flask-debug", argv, port)
    try:
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"
        with pytest.raises(InvalidStatusCode):
            syncws.connect(f"{server.ws}/ws/echo", origin="http://a, http://b")
    finally:
        log = server.read_log()
        server.close()
    assert "Debug mode: on" in log and "Debugging middleware" not in log, log


# -- capacity -------------------------------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("fixture", ["flask_gunicorn", "django_gunicorn", "flask_werkzeug"])
def test_100_websockets_while_http_is_answered(fixture: str, request: Any) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    connections = [syncws.connect(f"{server.ws}/ws/echo", compression=None) for _ in range(100)]
    try:
        for i, ws in enumerate(connections):
            ws.send(f"message {i}")
        for _ in range(5):
            assert b"/ws/echo" in get(f"{server.url}/").read()
        for i, ws in enumerate(connections):
            assert ws.recv(timeout=10) == f"message {i}"
    finally:
        for ws in connections:
            ws.close()
    assert all(ws.close_code == 1000 for ws in connections)


# -- Flask: session and login, options of accept() ---------------------------------------

@pytest.mark.parametrize("fixture, status", [("flask_gunicorn", 401), ("django_gunicorn", 403)])
def test_login_protected_route_refuses_anonymous_upgrade(fixture: str, status: int, request: Any) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    with pytest.raises(InvalidStatusCode) as info:
        syncws.connect(f"{server.ws}/ws/whoami")
    assert info.value.status_code == status


@pytest.mark.parametrize("fixture", ["flask_gunicorn", "django_gunicorn"])
def test_session_is_visible_in_the_handler(fixture: str, request: Any) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    response = get(f"{server.url}/login", data=b"user=alice", method="POST")
    cookie = response.headers["Set-Cookie"].split(";")[0]
    with syncws.connect(f"{server.ws}/ws/whoami", extra_headers={"Cookie": cookie}) as ws:
        assert ws.recv(timeout=10) == "hello alice"
        ws.send("hi")
        assert ws.recv(timeout=10) == "alice: hi"


@pytest.mark.timeout(60)
def test_djangos_login_required_redirects_where_a_refusal_is_wanted() -> None:
    # What docs/wsgi.rst says: login_required answers an anonymous upgrade
    # with 302 to LOGIN_URL; a client that follows it gets that page's
    # answer (404 here), a browser just fails. Refuse with 403 instead.
    server = gunicorn_server("django_auth_app:application", "-k", "gthread", "--threads", "4", name="gunicorn-auth")
    try:
        data = exchange(server.port, upgrade("/ws/stock"), until_head=True)
        assert data.startswith(b"HTTP/1.1 302 "), data[:300]
        assert b"\r\nLocation: /accounts/login/?next=/ws/stock\r\n" in data, data[:500]
        with pytest.raises(InvalidStatusCode) as followed:
            syncws.connect(f"{server.ws}/ws/stock")
        assert followed.value.status_code == 404
        with pytest.raises(InvalidStatusCode) as refused:
            syncws.connect(f"{server.ws}/ws/refusing")
        assert refused.value.status_code == 403
    finally:
        server.close()


def test_origins_and_subprotocols(flask_gunicorn: ServerProcess) -> None:
    with syncws.connect(f"{flask_gunicorn.ws}/ws/chat/lobby", origin="http://good.example",
                        subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.recv(timeout=10) == "lobby chat.v2"
    with syncws.connect(f"{flask_gunicorn.ws}/ws/chat/den", subprotocols=["other"]) as ws:
        assert ws.subprotocol is None
        assert ws.recv(timeout=10) == "den None"
    with pytest.raises(InvalidStatusCode) as info:
        syncws.connect(f"{flask_gunicorn.ws}/ws/chat/lobby", origin="http://evil.example")
    assert info.value.status_code == 403


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_USER_TIMEOUT is Linux's")
@pytest.mark.parametrize("fixture", ["flask_gunicorn", "flask_werkzeug"])
def test_the_socket_is_tuned_as_the_servers_are(fixture: str, request: Any) -> None:
    # TCP_NODELAY (a frame goes out at once), and TCP keepalive with a user
    # timeout derived from ping_interval=7, ping_timeout=3, as syncws.serve()
    # sets them (see tests/test_sockopts.py).
    server = request.getfixturevalue(fixture)
    with syncws.connect(f"{server.ws}/ws/sockopts") as ws:
        options = json.loads(ws.recv(timeout=10))
    assert options == {"nodelay": 1, "keepalive": 1, "user_timeout": 3000}


def test_compression_negotiated_or_not(flask_gunicorn: ServerProcess) -> None:
    with syncws.connect(f"{flask_gunicorn.ws}/ws/echo") as ws:
        ws.send("a" * 10000)
        assert ws.recv(timeout=10) == "a" * 10000
        assert ws.extensions
    with syncws.connect(f"{flask_gunicorn.ws}/ws/plain") as ws:
        assert not ws.extensions
        assert "Sec-WebSocket-Extensions" not in ws.response_headers


def test_max_size_closes_with_1009(flask_gunicorn: ServerProcess) -> None:
    with syncws.connect(f"{flask_gunicorn.ws}/ws/limited", compression=None) as ws:
        ws.send(b"x" * 1024)
        assert ws.recv(timeout=10) == b"x" * 1024
        ws.send(b"x" * 1025)
        ws.wait_closed(10)
    assert ws.close_code == 1009


def test_handler_that_raises_closes_with_1011(flask_werkzeug: ServerProcess, flask_gunicorn: ServerProcess) -> None:
    for server in (flask_werkzeug, flask_gunicorn):
        with syncws.connect(f"{server.ws}/ws/fail") as ws:
            ws.send("go")
            ws.wait_closed(10)
        assert ws.close_code == 1011
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.send("still serving")
            assert ws.recv(timeout=10) == "still serving"


# -- the sync worker and the middleware ---------------------------------------------------

@pytest.mark.timeout(90)
def test_middleware_on_gunicorn_sync_worker() -> None:
    server = gunicorn_server("bare_app:app", "-k", "sync", "--timeout", "2", name="gunicorn-sync")
    try:
        assert get(f"{server.url}/").read() == b"hello from a bare WSGI app\n"
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.send("one")
            assert ws.recv(timeout=10) == "one"
            # Longer than --timeout: the hook keeps the worker's heartbeat.
            [worker] = server.worker_pids()
            # The arbiter kills a worker silent for 2 s: stay idle for 5.
            with pytest.raises(TimeoutError):
                ws.recv(timeout=5)
            ws.send("two")
            assert ws.recv(timeout=10) == "two"
            assert server.worker_pids() == [worker]
        assert get(f"{server.url}/").read() == b"hello from a bare WSGI app\n"
    finally:
        server.close()


@pytest.mark.timeout(90)
def test_worker_timeout_closes_with_1011() -> None:
    # Without syncws's hook, nothing keeps a sync worker's heartbeat while
    # its handler waits: after --timeout the arbiter aborts the worker,
    # whose SIGABRT handler raises SystemExit inside websocket.recv(). The
    # client used to get 1000 (OK) for it.
    port = free_port()
    argv = gunicorn_command("bare_app:app", "--chdir", EXAMPLES, "-k", "sync", "--timeout", "1", port=port, config=False)
    server = ServerProcess("gunicorn-timeout", argv, port)
    try:
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.wait_closed(30)
        assert ws.close_code == 1011
    finally:
        server.stop()
        log = server.read_log()
        os.unlink(server.log.name)
    assert "WORKER TIMEOUT" in log and "the handler was stopped by SystemExit" in log, log


@pytest.mark.parametrize("path, error", [("/ws/exit", "SystemExit"), ("/ws/interrupt", "KeyboardInterrupt")])
def test_handler_stopped_by_a_base_exception_closes_with_1011(path: str, error: str) -> None:
    server = werkzeug_server("bare_app:app")
    try:
        with syncws.connect(f"{server.ws}{path}") as ws:
            ws.send("go")
            ws.wait_closed(10)
        assert ws.close_code == 1011  # 1000 before
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.send("still serving")
            assert ws.recv(timeout=10) == "still serving"
    finally:
        server.stop()
        log = server.read_log()
        os.unlink(server.log.name)
    assert f"the handler was stopped by {error}" in log, log


# -- shutdown and leaks -------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_ctrl_c_on_flask_run_closes_websockets_with_1001() -> None:
    # werkzeug's server threads are daemons: the process used to exit with
    # the WebSockets open, and clients saw 1006 (no close frame).
    port = free_port()
    argv = [sys.executable, "-m", "flask", "--app", "flask_test_app", "run", "--port", str(port)]
    server = ServerProcess("flask-run-ctrl-c", argv, port)
    try:
        connections = [syncws.connect(f"{server.ws}/ws/echo") for _ in range(2)]
        for ws in connections:
            ws.send("ping")
            assert ws.recv(timeout=10) == "ping"
        server.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        for ws in connections:
            ws.wait_closed(15)
            assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
        assert server.process.wait(15) == 0
    finally:
        server.close()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("app", ["flask_app:app", "django_app:application"])
def test_sigterm_closes_websockets_with_1001(app: str) -> None:
    server = gunicorn_server(app, "-k", "gthread", "--threads", "8",
                             "--graceful-timeout", "20", name="gunicorn-sigterm")
    try:
        connections = [syncws.connect(f"{server.ws}/ws/echo") for _ in range(3)]
        for ws in connections:
            ws.send("ping")
            assert ws.recv(timeout=10) == "ping"
        start = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for ws in connections:
            ws.wait_closed(15)
            assert ws.close_code == 1001
            assert ws.close_reason == "server shutting down"
        assert server.process.wait(15) == 0
        assert time.monotonic() - start < 10  # well within the graceful timeout
    finally:
        server.close()


# A signal lands while the main thread is inside close_all() (as a sync
# worker's only thread may be, or inside accept()): a handler that calls
# close_all() again must not wait for anything the interrupted code holds.
SIGNAL_DURING_CLOSE_ALL = """
import signal, sys, time
import syncws.wsgi
handled = 0
def on_alarm(signum, frame):
    global handled
    handled += 1
    syncws.wsgi.close_all()
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
calls = 0
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    syncws.wsgi.close_all()
    calls += 1
signal.setitimer(signal.ITIMER_REAL, 0)
print("done", calls, handled)
"""


def test_close_all_from_a_signal_handler_interrupting_close_all() -> None:
    # Deadlocked before (the handler waited for the lock the main thread
    # held), within milliseconds: the nested handlers then piled up.
    result = subprocess.run([sys.executable, "-c", SIGNAL_DURING_CLOSE_ALL], capture_output=True, text=True,
                            timeout=30, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-2000:]
    done, calls, handled = result.stdout.split()
    assert done == "done" and int(calls) > 1000 and int(handled) > 100, result.stdout


PROJECT_GUNICORN_CONF = """
bind = '127.0.0.1:{port}'
worker_class = 'gthread'
threads = 4
{imports}
def post_worker_init(worker):
    {call}worker.log.info('the project post_worker_init ran')
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("composed_by", ["syncws.gunicorn_conf", "the project"])
def test_gunicorn_hook_composes_with_the_projects_gunicorn_conf_py(composed_by: str, tmp_path: Any) -> None:
    # -c python:syncws.gunicorn_conf used to replace ./gunicorn.conf.py: its
    # bind was lost (gunicorn listened on 8000) and its hooks never ran. The
    # other way: the project's file calls syncws's hook itself (docs/wsgi.rst).
    port = free_port()
    by_syncws = composed_by == "syncws.gunicorn_conf"
    (tmp_path / "gunicorn.conf.py").write_text(PROJECT_GUNICORN_CONF.format(
        port=port,
        imports="" if by_syncws else "from syncws.wsgi import gunicorn_post_worker_init",
        call="" if by_syncws else "gunicorn_post_worker_init(worker)\n    ",
    ))
    argv = gunicorn_command("flask_app:app", "--chdir", EXAMPLES, config=by_syncws)
    server = ServerProcess("gunicorn-composed", argv, port, cwd=str(tmp_path))
    try:
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"
            server.process.send_signal(signal.SIGTERM)
            ws.wait_closed(15)
        assert ws.close_code == 1001  # syncws's hook ran
    finally:
        log = server.read_log()
        server.close()
    assert "the project post_worker_init ran" in log and "Using worker: gthread" in log, log
    if by_syncws:
        assert f"also using the settings and hooks of {tmp_path / 'gunicorn.conf.py'}" in log, log


def worker_resources(pid: int) -> Dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fixture", ["flask_gunicorn", "django_gunicorn"])
def test_no_thread_or_fd_left_after_500_connections(fixture: str, request: pytest.FixtureRequest) -> None:
    server: ServerProcess = request.getfixturevalue(fixture)
    [worker] = server.worker_pids()
    # Warm up: the pool's threads and the timer thread exist from here on.
    for _ in range(20):
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.send("warm")
            ws.recv(timeout=10)
    before = worker_resources(worker)
    for i in range(500):
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.send(f"{i}")
            assert ws.recv(timeout=10) == f"{i}"
    deadline = time.monotonic() + 10
    after = worker_resources(worker)
    while after != before and time.monotonic() < deadline:
        # gunicorn closes a socket on its main thread after the handler ends.
        threading.Event().wait(0.1)
        after = worker_resources(worker)
    assert after["fds"] <= before["fds"], (before, after)
    assert after["threads"] <= before["threads"], (before, after)


# -- servers that can't hand their socket over ---------------------------------------------

def test_unsupported_server_gets_a_clear_error() -> None:
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/ws", "SERVER_SOFTWARE": "waitress",
        "HTTP_HOST": "example.com", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    with pytest.raises(ServerNotSupported, match="waitress.*gunicorn"):
        accept(environ)
    environ["SERVER_SOFTWARE"] = "WSGIServer/0.2 CPython/3.11"
    with pytest.raises(ServerNotSupported, match="runserver"):
        accept(environ)


# -- the negotiation, without a socket --------------------------------------------------

UPGRADE_ENVIRON = {
    "REQUEST_METHOD": "GET", "PATH_INFO": "/ws", "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "example.com", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_SEC_WEBSOCKET_VERSION": "13",
}


@pytest.fixture
def made_connections(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """The WebSocketServerProtocol instances made while the test runs."""
    made: List[Any] = []
    init = syncws.WebSocketServerProtocol.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(syncws.WebSocketServerProtocol, "__init__", counting_init)
    return made


@pytest.fixture
def policies(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """The ServerPolicy of every negotiation while the test runs."""
    seen: List[Any] = []
    negotiate = syncws.opening.accept

    def spy(request: Any, policy: Any, hooks: Any, **kwargs: Any) -> Any:
        seen.append(policy)
        return negotiate(request, policy, hooks, **kwargs)

    monkeypatch.setattr(syncws.opening, "accept", spy)
    return seen


def test_a_refused_upgrade_makes_no_connection(made_connections: List[Any]) -> None:
    environ = dict(UPGRADE_ENVIRON, HTTP_ORIGIN="https://evil.example")
    with pytest.raises(syncws.AbortHandshake) as refused:
        accept(environ, origins=["https://good.example"], process_request=lambda path, headers: None)
    assert refused.value.status == 403
    with pytest.raises(syncws.AbortHandshake) as answered:
        accept(UPGRADE_ENVIRON, process_request=lambda path, headers: (200, [], b"hello\n"))
    assert (answered.value.status, answered.value.body) == (200, b"hello\n")
    assert made_connections == []


def test_an_accepted_upgrade_makes_its_connection_after_negotiating(made_connections: List[Any]) -> None:
    # waitress gives no socket: accept() fails after the negotiation, with
    # the connection it made for the 101.
    environ = dict(
        UPGRADE_ENVIRON, SERVER_SOFTWARE="waitress", HTTP_SEC_WEBSOCKET_PROTOCOL="chat",
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"ann:secret").decode(),
    )
    with pytest.raises(ServerNotSupported):
        accept(environ, subprotocols=["chat"], process_request=syncws.basic_auth(credentials=("ann", "secret")))
    [connection] = made_connections
    assert (connection.path, connection.subprotocol, connection.origin) == ("/ws", "chat", None)
    assert connection.username == "ann"
    assert connection.request_headers["Host"] == "example.com"


def test_a_subclass_with_its_own_hooks_negotiates_on_its_connection(made_connections: List[Any]) -> None:
    class Private(syncws.WebSocketServerProtocol):
        def get_response_status(self, set_header: Any) -> int:
            set_header("X-Path", self.path)
            return http.HTTPStatus.NOT_FOUND

    with pytest.raises(syncws.AbortHandshake) as refused:
        accept(UPGRADE_ENVIRON, create_protocol=Private)
    assert refused.value.status == 404
    assert ("X-Path", "/ws") in list(refused.value.headers)
    assert [type(connection) for connection in made_connections] == [Private]


def test_an_endpoint_builds_its_policy_once(policies: List[Any]) -> None:
    app = websocket_app(lambda websocket: None, subprotocols=["chat"])
    for _ in range(2):
        answers: List[str] = []
        body = app(dict(UPGRADE_ENVIRON, HTTP_UPGRADE="h2c"), lambda status, headers: answers.append(status))
        assert answers and answers[0].startswith("426"), (answers, body)
    first, second = policies
    assert first is second
    assert first.subprotocols == ["chat"]


MANAGE_PY = """
import sys
import django_test_app  # the project: settings, views, urls
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["waitress-serve", "python -m waitress", "manage.py runserver"])
def test_servers_without_hand_over_are_refused_at_start(command: str, tmp_path: Any) -> None:
    # They used to start, serve plain HTTP, and answer 500 to the first
    # WebSocket only.
    port = free_port()
    if command == "manage.py runserver":
        (tmp_path / "manage.py").write_text(MANAGE_PY)
        argv = [sys.executable, str(tmp_path / "manage.py"), "runserver", "--noreload", f"127.0.0.1:{port}"]
        expected = "from Django's runserver"
    else:
        pytest.importorskip("waitress")
        if command == "waitress-serve":
            program = [str(shutil.which("waitress-serve"))]
        else:
            program = [sys.executable, "-m", "waitress"]
        argv = [*program, f"--listen=127.0.0.1:{port}", "flask_test_app:app"]
        expected = "from waitress"
    result = subprocess.run(argv, cwd=EXAMPLES, capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, EXAMPLES, APPS])))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "ServerNotSupported" in output and expected in output and "gunicorn" in output, output


@pytest.mark.parametrize("kind", ["waitress", "runserver"])
def test_servers_started_from_code_answer_500_and_log_why(kind: str) -> None:
    # Started from code, these servers can't be recognized when the
    # application is imported: the first WebSocket finds out.
    port = free_port()
    if kind == "waitress":
        pytest.importorskip("waitress")
        code = "import sys, waitress, flask_test_app; waitress.serve(flask_test_app.app, listen=sys.argv[1])"
        expected = "from waitress"
    else:
        code = (
            "import sys, django_app; from django.core.management import call_command; "
            "call_command('runserver', sys.argv[1], use_reloader=False)"
        )
        expected = "Django's runserver"
    # DJANGO_DEBUG: Django logs request errors to the console only in debug.
    server = ServerProcess(kind, [sys.executable, "-c", code, f"127.0.0.1:{port}"], port, DJANGO_DEBUG="1")
    try:
        with pytest.raises(InvalidStatusCode) as info:
            syncws.connect(f"{server.ws}/ws/echo")
        assert info.value.status_code == 500
        assert b"/ws/echo" in get(f"{server.url}/").read()  # plain HTTP still served
    finally:
        server.stop()
        log = server.read_log()
        os.unlink(server.log.name)
    assert "ServerNotSupported" in log and expected in log and "gunicorn" in log, log


def test_tls_and_async_sockets_get_a_clear_error() -> None:
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/ws", "SERVER_SOFTWARE": "gunicorn/27",
        "HTTP_HOST": "example.com", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    with socket.socket() as raw:
        context = ssl.create_default_context()
        with context.wrap_socket(raw, server_hostname="example.com", do_handshake_on_connect=False) as tls:
            with pytest.raises(ServerNotSupported, match="TLS.*nginx"):
                accept(dict(environ, **{"gunicorn.socket": tls}))
    with pytest.raises(ServerNotSupported, match="gevent.*gthread"):
        accept(dict(environ, **{"gunicorn.socket": object()}))


def test_not_an_upgrade_is_answered_before_looking_for_a_socket() -> None:
    statuses: List[str] = []
    app = websocket_app(lambda ws: None)
    body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/ws", "SERVER_SOFTWARE": "waitress", "HTTP_HOST": "example.com"},
               lambda status, headers: statuses.append(status))
    assert statuses == ["426 Upgrade Required"]
    assert b"missing Connection header" in b"".join(body)


def test_options_are_checked_when_the_endpoint_is_defined() -> None:
    with pytest.raises(TypeError, match="max_sise"):
        websocket_app(lambda ws: None, max_sise=10)
    with pytest.raises(ValueError):
        websocket_app(lambda ws: None, compression="brotli")


def test_after_accept_the_servers_socket_writes_nothing_to_the_client() -> None:
    # The server's socket object, as gunicorn holds it: after accept(), what
    # the server writes (HandedOver's head, an error page) fails with a broken
    # pipe, and the client gets the 101 and the WebSocket's frames only.
    client, server_side = socket.socketpair()
    with client, server_side:
        client.settimeout(10)
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": "/ws", "SERVER_SOFTWARE": "gunicorn/27",
            "SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": server_side,
            "HTTP_HOST": "example.com", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
            "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_SEC_WEBSOCKET_VERSION": "13",
        }
        websocket = accept(environ, compression=None, ping_interval=None)
        assert environ["syncws.websocket"] is websocket
        with pytest.raises(BrokenPipeError):
            server_side.sendall(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
        assert list(HandedOver(websocket)(lambda status, headers: None)) == []
        websocket.send("hello")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += client.recv(1)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert client.recv(7) == b"\x81\x05hello"
        client.sendall(masked(0x8, b"\x03\xe8"))
        assert read_all(client) == b"\x88\x02\x03\xe8"  # then the server's FIN
        client.shutdown(socket.SHUT_WR)
        websocket.wait_closed(10)


# -- a real browser ----------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_browser_gets_its_echoes(flask_gunicorn: ServerProcess) -> None:
    browser = Chromium(f"{flask_gunicorn.url}/")
    try:
        # Wait for the page's script, then for its echoes.
        echoes = browser.evaluate(
            "new Promise(resolve => { const check = () => window.echoesDone"
            " ? window.echoesDone.then(resolve) : setTimeout(check, 50); check(); })",
            timeout=60,
        )
        assert echoes == ["hello", "héllo wörld", "¡syncws!", "binary:0,1,2,253,254,255"]
    finally:
        browser.stop()


# -- docs/wsgi.rst's commands, run -----------------------------------------------------

def shell_commands(page: str) -> List[str]:
    """The shell commands of a page's literal blocks, continuation lines joined."""
    with open(page, encoding="utf-8") as text:
        blocks = re.finditer(r"::\n\n((?:[ ]{4}.*\n|\n)+)", text.read())
    commands = [" ".join(textwrap.dedent(block.group(1)).replace("\\\n", " ").split()) for block in blocks]
    return [command for command in commands if command.split()[0] in ("gunicorn", "cd", "flask", "python", "python3")]


def test_the_wsgi_page_shows_these_commands() -> None:
    # A command added to the page must be run by a test below.
    assert shell_commands(DOCS_PAGE) == [
        "cd examples/wsgi && python3 -m unittest test_django_app",
        "cd examples/wsgi && python3 -m unittest test_flask_app",
        "gunicorn -k gthread --threads 64 --workers 2 -c python:syncws.gunicorn_conf --chdir examples/wsgi "
        "flask_app:app",
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", [c for c in shell_commands(DOCS_PAGE) if "unittest" in c])
def test_the_docs_test_commands_pass(command: str) -> None:
    result = subprocess.run(["bash", "-c", command.replace("python3 ", f"{shlex.quote(sys.executable)} ", 1)],
                            cwd=ROOT, capture_output=True, text=True, timeout=100,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^Ran [1-9][0-9]* tests? in .*\n\nOK$", result.stderr.strip(), re.MULTILINE), result.stderr


@pytest.mark.timeout(90)
def test_the_docs_gunicorn_command_serves_the_example() -> None:
    [command] = [c for c in shell_commands(DOCS_PAGE) if c.startswith("gunicorn ")]
    port = free_port()
    *options, app = shlex.split(command)[1:]
    argv = gunicorn_command(app, *options, port=port, config=False)
    server = ServerProcess("gunicorn-docs", argv, port, cwd=ROOT)
    try:
        with syncws.connect(f"{server.ws}/ws/echo") as ws:
            ws.send("as documented")
            assert ws.recv(timeout=10) == "as documented"
        with syncws.connect(f"{server.ws}/ws/ticker") as ws:
            ws.send(json.dumps({"interval": 0.05}))
            ticks = [json.loads(ws.recv(timeout=10))["tick"] for _ in range(2)]
            assert ticks[1] == ticks[0] + 1
        assert len(server.worker_pids()) == 2
    finally:
        server.close()
