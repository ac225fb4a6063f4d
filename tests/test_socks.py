"""connect() through SOCKS proxies (syncws.proxy, python-socks).

Real SOCKS servers started here on 127.0.0.1: microsocks (SOCKS5, with and
without username/password; it logs the destination it was asked for, so the
tests see who resolved the name) and Dante (SOCKS4). Neither speaks SOCKS4a,
so a SOCKS4a server of a few lines stands in for it. Without microsocks or
Dante, their tests are skipped, saying so (under CI=true, they fail).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List

import pytest

import syncws
from syncws.proxy import proxy_for, proxy_target
from syncws.uri import parse_uri

from conftest import CERT_FILE, KEY_FILE, wait_for
from services import find_program
from test_proxy import TunnelProxy

pytestmark = pytest.mark.timeout(30)

pytest.importorskip("python_socks", reason="python-socks isn't installed: pip install -e '.[test]'")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def run_server(argv: List[str], port: int, log: Path) -> Iterator[None]:
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: listening(port) or process.poll() is not None, timeout=10)
        assert process.poll() is None, log.read_text()
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Microsocks:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def destinations(self) -> List[str]:
        """The ``host:port`` each client asked for, from microsocks' log."""
        return [line.rsplit("connected to ", 1)[1].strip() for line in self.log.read_text().splitlines() if "connected to " in line]


@pytest.fixture
def microsocks(tmp_path: Path) -> Iterator[Microsocks]:
    port = free_port()
    with run_server([find_program("microsocks"), "-i", "127.0.0.1", "-p", str(port)], port, tmp_path / "ms.log"):
        yield Microsocks(port, tmp_path / "ms.log")


@pytest.fixture
def microsocks_auth(tmp_path: Path) -> Iterator[Microsocks]:
    port = free_port()
    argv = [find_program("microsocks"), "-i", "127.0.0.1", "-p", str(port), "-u", "alice", "-P", "s3cr:t@"]
    with run_server(argv, port, tmp_path / "ms-auth.log"):
        yield Microsocks(port, tmp_path / "ms-auth.log")


@pytest.fixture
def dante(tmp_path: Path) -> Iterator[int]:
    program = find_program("danted", "sockd")
    port = free_port()
    privileges = "user.privileged: root\nuser.unprivileged: nobody\n" if os.geteuid() == 0 else ""
    config = tmp_path / "danted.conf"
    config.write_text(
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: 127.0.0.1\n"
        "clientmethod: none\nsocksmethod: none\n"
        f"{privileges}"
        "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
        "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }\n"
    )
    with run_server([program, "-f", str(config), "-N", "1"], port, tmp_path / "danted.log"):
        yield port


class Socks4aServer(TunnelProxy):
    """SOCKS4a (CONNECT only): records the host name each client sent.

    The accepting side is the HTTP CONNECT test proxy's; only the request
    differs.
    """

    def __init__(self) -> None:
        self.requested: List[str] = []
        super().__init__()
        self.port = self.listener.getsockname()[1]

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            data = b""
            while data.count(b"\0") < 2:  # user id, then host name, each NUL-ended
                chunk = client.recv(4096)
                if not chunk:
                    return
                data += chunk
            version, command, port = struct.unpack("!BBH", data[:4])
            address = data[4:8]
            _user, host, _ = data[8:].split(b"\0", 2)
            assert (version, command) == (4, 1) and address[:3] == b"\0\0\0" and address[3] != 0
            self.requested.append(host.decode())
            upstream = socket.create_connection((host.decode(), port), timeout=10)
            client.sendall(b"\0\x5a" + b"\0" * 6)
            with upstream:
                relay(client, upstream)


def relay(a: socket.socket, b: socket.socket) -> None:
    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=pump, args=(b, a), daemon=True)
    thread.start()
    pump(a, b)
    thread.join(10)


def echo(ws: object) -> None:
    for message in ws:  # type: ignore[attr-defined]
        ws.send(message)  # type: ignore[attr-defined]


@pytest.fixture
def server() -> Iterator[syncws.WebSocketServer]:
    with syncws.serve(echo, "127.0.0.1", 0) as server:
        yield server


def round_trip(uri: str, **kwargs: object) -> None:
    with syncws.connect(uri, open_timeout=10, **kwargs) as ws:  # type: ignore[arg-type]
        ws.send("through the proxy")
        assert ws.recv(timeout=5) == "through the proxy"


def test_socks5h_the_proxy_resolves(server: syncws.WebSocketServer, microsocks: Microsocks) -> None:
    round_trip(f"ws://localhost:{server.port}/", proxy=f"socks5h://127.0.0.1:{microsocks.port}")
    assert microsocks.destinations() == [f"localhost:{server.port}"]


def test_socks5_this_machine_resolves(server: syncws.WebSocketServer, microsocks: Microsocks) -> None:
    round_trip(f"ws://localhost:{server.port}/", proxy=f"socks5://127.0.0.1:{microsocks.port}")
    assert microsocks.destinations() == [f"127.0.0.1:{server.port}"]


@pytest.mark.parametrize(
    "scheme, target",
    [("socks5h", "localhost"), ("socks4a", "localhost"), ("http", "localhost"), ("socks5", "127.0.0.1"), ("socks4", "127.0.0.1")],
)
def test_proxy_target_is_the_address_when_the_proxy_leaves_the_name_to_us(scheme: str, target: str) -> None:
    # connect() checks this address against the redirect rules (see
    # test_redirects.py), and the proxy connects to it and no other.
    assert proxy_target(f"{scheme}://127.0.0.1:1080", "localhost", 80) == target
    assert proxy_target(f"{scheme}://127.0.0.1:1080", "127.0.0.1", 80) == "127.0.0.1"


def test_socks5_username_password(server: syncws.WebSocketServer, microsocks_auth: Microsocks) -> None:
    # Percent-encoded credentials: "s3cr:t@" holds both URL delimiters.
    round_trip(f"ws://localhost:{server.port}/", proxy=f"socks5h://alice:s3cr%3At%40@127.0.0.1:{microsocks_auth.port}")
    with pytest.raises(syncws.ProxyError, match=f"127.0.0.1:{microsocks_auth.port}"):
        syncws.connect(f"ws://localhost:{server.port}/", proxy=f"socks5h://alice:wrong@127.0.0.1:{microsocks_auth.port}")
    with pytest.raises(syncws.ProxyError):
        syncws.connect(f"ws://localhost:{server.port}/", proxy=f"socks5h://127.0.0.1:{microsocks_auth.port}")
    assert microsocks_auth.destinations() == [f"localhost:{server.port}"]


def test_socks4_with_dante(server: syncws.WebSocketServer, dante: int) -> None:
    round_trip(f"ws://localhost:{server.port}/", proxy=f"socks4://127.0.0.1:{dante}")


def test_socks4a_the_proxy_resolves(server: syncws.WebSocketServer) -> None:
    proxy = Socks4aServer()
    try:
        round_trip(f"ws://localhost:{server.port}/", proxy=f"socks4a://127.0.0.1:{proxy.port}")
    finally:
        proxy.close()
    assert proxy.requested == ["localhost"]


def test_wss_through_socks5h(microsocks: Microsocks) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT_FILE, KEY_FILE)
    with syncws.serve(echo, "127.0.0.1", 0, ssl=context) as server:
        round_trip(
            f"wss://localhost:{server.port}/",
            proxy=f"socks5h://127.0.0.1:{microsocks.port}",
            ssl=ssl.create_default_context(cafile=CERT_FILE),
        )
    assert microsocks.destinations() == [f"localhost:{server.port}"]


def test_proxy_refuses_unreachable_destination(microsocks: Microsocks) -> None:
    port = free_port()  # nobody listens there
    with pytest.raises(syncws.ProxyError, match=f"couldn't connect to localhost:{port}"):
        syncws.connect(f"ws://localhost:{port}/", proxy=f"socks5h://127.0.0.1:{microsocks.port}")


def test_environment(monkeypatch: pytest.MonkeyPatch, server: syncws.WebSocketServer, microsocks: Microsocks) -> None:
    for name in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy", "socks_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    # socks_proxy without a scheme is SOCKS5h, and wins over http_proxy.
    monkeypatch.setenv("socks_proxy", f"127.0.0.1:{microsocks.port}")
    monkeypatch.setenv("http_proxy", "http://http-proxy.invalid:3128")
    assert proxy_for(parse_uri("ws://example.com/"), True) == f"socks5h://127.0.0.1:{microsocks.port}"
    round_trip(f"ws://localhost:{server.port}/")
    assert microsocks.destinations() == [f"localhost:{server.port}"]
    # all_proxy is the last resort; ws_proxy / wss_proxy come first.
    monkeypatch.delenv("socks_proxy")
    monkeypatch.delenv("http_proxy")
    monkeypatch.setenv("all_proxy", f"socks5://127.0.0.1:{microsocks.port}")
    assert proxy_for(parse_uri("wss://example.com/"), True) == f"socks5://127.0.0.1:{microsocks.port}"
    monkeypatch.setenv("wss_proxy", "http://wss-proxy.invalid:3128")
    assert proxy_for(parse_uri("wss://example.com/"), True) == "http://wss-proxy.invalid:3128"
    # no_proxy still bypasses.
    monkeypatch.setenv("no_proxy", "localhost")
    round_trip(f"ws://localhost:{server.port}/")
    assert len(microsocks.destinations()) == 1


def test_missing_python_socks_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail.
    for name in [m for m in sys.modules if m == "python_socks" or m.startswith("python_socks.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "python_socks", None)
    with pytest.raises(ImportError, match=r"pip install 'syncws\[socks\]'"):
        syncws.connect("ws://localhost:9/", proxy="socks5h://127.0.0.1:1080")


def test_bad_socks_url() -> None:
    with pytest.raises(ValueError, match="has no host"):
        syncws.connect("ws://localhost:9/", proxy="socks5h://:1080")
