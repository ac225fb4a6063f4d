"""connect() through an HTTP CONNECT proxy, with a small proxy on 127.0.0.1."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
from typing import Dict, Iterator, List

import pytest

import syncws
from syncws.proxy import proxy_for
from syncws.uri import parse_uri

pytestmark = pytest.mark.timeout(20)


class TunnelProxy:
    """A minimal HTTP CONNECT proxy; ``refuse`` makes it answer 407."""

    def __init__(self, refuse: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: List[bytes] = []
        self.refuse = refuse
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        self.requests.append(head)
        if self.refuse:
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        host, port = head.split()[1].decode().rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        peers = {client: upstream, upstream: client}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 10)
                if not readable:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def echo_server() -> Iterator[syncws.WebSocketServer]:
    def echo(ws: syncws.WebSocketServerProtocol) -> None:
        for message in ws:
            ws.send(message)

    with syncws.serve(echo, "127.0.0.1", 0, compression=None) as server:
        yield server


def test_explicit_proxy_tunnels_the_connection(echo_server: syncws.WebSocketServer) -> None:
    proxy = TunnelProxy()
    try:
        uri = f"ws://127.0.0.1:{echo_server.port}/chat"
        with syncws.connect(uri, proxy="http://user:pa%20ss@" + proxy.url[len("http://"):]) as ws:
            ws.send("through the tunnel")
            assert ws.recv(timeout=5) == "through the tunnel"
        (request,) = proxy.requests
        assert request.startswith(f"CONNECT 127.0.0.1:{echo_server.port} HTTP/1.1\r\n".encode())
        # "user:pa ss" in base64, percent-decoding applied
        assert b"Proxy-Authorization: Basic dXNlcjpwYSBzcw==\r\n" in request
    finally:
        proxy.close()


def test_environment_proxy_is_the_default(echo_server: syncws.WebSocketServer, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = TunnelProxy()
    try:
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        with syncws.connect(f"ws://127.0.0.1:{echo_server.port}/") as ws:
            ws.send("env")
            assert ws.recv(timeout=5) == "env"
        assert len(proxy.requests) == 1
        # proxy=None goes direct even with the variable set
        with syncws.connect(f"ws://127.0.0.1:{echo_server.port}/", proxy=None) as ws:
            ws.send("direct")
            assert ws.recv(timeout=5) == "direct"
        assert len(proxy.requests) == 1
    finally:
        proxy.close()


def test_no_proxy_bypasses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("https_proxy", "http://secure-proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "example.com")
    assert proxy_for(parse_uri("ws://example.com/"), True) is None
    assert proxy_for(parse_uri("ws://other.org/"), True) == "http://proxy.invalid:3128"
    assert proxy_for(parse_uri("wss://other.org/"), True) == "http://secure-proxy.invalid:3128"
    assert proxy_for(parse_uri("wss://other.org/"), None) is None


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="urllib also reads system-wide proxy settings there")
def test_an_environment_without_proxies_costs_no_lookup() -> None:
    # No variable ending in _proxy: no proxy, nothing to bypass, and no
    # urllib.request imported to find that out (megabytes, and two scans of
    # the environment per connection).
    env = {name: value for name, value in os.environ.items() if name[-6:].lower() != "_proxy"}
    code = (
        "import sys; from syncws.proxy import proxy_for; from syncws.uri import parse_uri; "
        "print(proxy_for(parse_uri('ws://example.com/'), True), proxy_for(parse_uri('wss://example.com/'), True), "
        "'urllib.request' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=15)
    assert result.stdout.split() == ["None", "None", "False"], result.stderr


def test_a_proxy_variable_in_any_case_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # As urllib.request.getproxies() finds them: *_proxy in any case.
    for name in list(os.environ):
        if name[-6:].lower() == "_proxy":
            monkeypatch.delenv(name)
    monkeypatch.setenv("Http_Proxy", "http://proxy.invalid:3128")
    assert proxy_for(parse_uri("ws://other.org/"), True) == "http://proxy.invalid:3128"


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without proxy variables (nor REQUEST_METHOD), restored afterwards."""
    for name in list(os.environ):
        if name[-6:].lower() == "_proxy" or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="urllib also reads system-wide proxy settings there")
def test_the_environment_s_answer_is_remembered_until_it_changes(no_proxy_variables: pytest.MonkeyPatch) -> None:
    import urllib.request

    monkeypatch = no_proxy_variables
    asked: List[int] = []
    getproxies = urllib.request.getproxies

    def counting_getproxies() -> Dict[str, str]:
        asked.append(1)
        return getproxies()

    monkeypatch.setattr(urllib.request, "getproxies", counting_getproxies)
    monkeypatch.setenv("http_proxy", "http://one.invalid:3128")
    uri = parse_uri("ws://remembered.example/")
    for _ in range(3):
        assert proxy_for(uri, True) == "http://one.invalid:3128"
    assert len(asked) == 1  # urllib's lookup costs ~200 µs a connection
    monkeypatch.setenv("http_proxy", "http://two.invalid:3128")
    assert proxy_for(uri, True) == "http://two.invalid:3128"
    monkeypatch.setenv("no_proxy", "remembered.example")
    assert proxy_for(uri, True) is None
    monkeypatch.delenv("no_proxy")
    monkeypatch.delenv("http_proxy")
    assert proxy_for(uri, True) is None
    assert len(asked) == 3


@pytest.mark.skipif(sys.platform in ("darwin", "win32"), reason="urllib also reads system-wide proxy settings there")
def test_a_cgi_script_ignores_http_proxy_in_capitals_remembered_or_not(no_proxy_variables: pytest.MonkeyPatch) -> None:
    # urllib ignores HTTP_PROXY when REQUEST_METHOD is set (a request's
    # "Proxy:" header sets it in a CGI script): the remembered answer
    # must follow.
    monkeypatch = no_proxy_variables
    monkeypatch.setenv("HTTP_PROXY", "http://upper.invalid:3128")
    uri = parse_uri("ws://cgi.example/")
    assert proxy_for(uri, True) == "http://upper.invalid:3128"
    monkeypatch.setenv("REQUEST_METHOD", "GET")
    assert proxy_for(uri, True) is None
    monkeypatch.delenv("REQUEST_METHOD")
    assert proxy_for(uri, True) == "http://upper.invalid:3128"


def test_proxy_refusal_raises_proxy_error(echo_server: syncws.WebSocketServer) -> None:
    proxy = TunnelProxy(refuse=True)
    try:
        with pytest.raises(syncws.ProxyError, match="407") as info:
            syncws.connect(f"ws://127.0.0.1:{echo_server.port}/", proxy=proxy.url)
        assert info.value.status_code == 407
    finally:
        proxy.close()


def test_unsupported_proxy_scheme_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unsupported proxy scheme 'ftp'"):
        syncws.connect("ws://127.0.0.1:9/", proxy="ftp://127.0.0.1:1080")


@pytest.mark.parametrize(
    "proxy, error",
    [
        ("ftp://user:hunter2@127.0.0.1:1080", "unsupported proxy scheme 'ftp' in 'ftp://user:[redacted]@127.0.0.1:1080'"),
        ("http://user:hunter2@:3128", "proxy URL 'http://user:[redacted]@:3128' has no host"),
        ("socks5://user:hunter2@", "proxy URL 'socks5://user:[redacted]@' has no host"),
    ],
)
def test_proxy_errors_leave_the_password_out(proxy: str, error: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        syncws.connect("ws://127.0.0.1:9/", proxy=proxy)
    assert error in str(excinfo.value)
    assert "hunter2" not in str(excinfo.value)
