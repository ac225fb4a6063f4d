"""connect() follows HTTP redirects (301, 302, 303, 307, 308), within limits.

Against a raw socket server that answers redirects by hand, syncws.serve and
the ``websockets`` server with a ``process_request`` answering 302.
"""

from __future__ import annotations

import contextlib
import ctypes
import http
import logging
import os
import queue
import re
import socket
import ssl
import subprocess
import threading
import time
from typing import Any, Callable, Iterator, List, Tuple

import pytest

import syncws
from syncws import InvalidStatusCode
from syncws.http import Headers
from syncws.redirects import AddressSpace, RedirectChain, address_space, host_address_space
from syncws.uri import parse_uri

from conftest import CERT_FILE, KEY_FILE, wait_for
from services import find_program, ip, need_network_namespaces

pytestmark = pytest.mark.timeout(20)


def echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


@contextlib.contextmanager
def redirector(answer: Callable[[str], bytes], host: str = "127.0.0.1") -> Iterator[Tuple[int, "queue.Queue[str]"]]:
    """A raw HTTP server on ``host``: each request's head goes on the queue
    and gets ``answer(path)``; yields ``(port, heads)``."""
    listener = socket.create_server((host, 0))
    heads: "queue.Queue[str]" = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with sock, contextlib.suppress(OSError):  # a client that gave up
                sock.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                head = data.split(b"\r\n\r\n")[0].decode("latin-1")
                heads.put(head)
                sock.sendall(answer(head.split(" ")[1]))
                sock.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], heads
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        listener.close()
        thread.join(5)


def redirect(status: int, location: str, body: bytes = b"moved\n", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nLocation: {location}\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def header(head: str, name: str) -> List[str]:
    values = []
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            values.append(value.strip())
    return values


@contextlib.contextmanager
def syncws_echo(**kwargs: Any) -> Iterator[Tuple[syncws.WebSocketServer, "queue.Queue[Any]"]]:
    seen: "queue.Queue[Any]" = queue.Queue()

    def handler(ws: Any) -> None:
        seen.put(ws)
        echo(ws)

    with syncws.serve(handler, "127.0.0.1", 0, **kwargs) as server:
        yield server, seen


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_follows_redirect_to_another_origin_dropping_the_callers_headers(status: int) -> None:
    # Every header the caller added was meant for the first origin:
    # Cookie and Authorization, and as much the custom credentials
    # (X-Api-Key) and anything else (X-Keep). The URI's user info too.
    added = {
        "Cookie": "a=1", "Proxy-Authorization": "Basic eDp5", "X-Api-Key": "key456", "X-Keep": "yes",
    }
    with syncws_echo() as (server, seen), redirector(
        lambda path: redirect(status, f"ws://localhost:{server.port}/final?x=1")
    ) as (port, heads):
        with syncws.connect(f"ws://user:secret@127.0.0.1:{port}/start", additional_headers=added) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            assert ws.path == "/final?x=1"
        first = heads.get(timeout=5)
        assert header(first, "Cookie") == ["a=1"] and header(first, "X-Api-Key") == ["key456"]
        assert header(first, "Authorization") == ["Basic dXNlcjpzZWNyZXQ="]  # user:secret
        final = seen.get(timeout=5).request_headers
        for name in ["Authorization", *added]:
            assert name not in final
        assert final["Host"] == f"localhost:{server.port}"


def test_keep_headers_on_redirect_sends_them_to_the_other_origin() -> None:
    added = {"Cookie": "a=1", "Authorization": "Bearer tok", "X-Api-Key": "key456"}
    with syncws_echo() as (server, seen), redirector(
        lambda path: redirect(302, f"ws://localhost:{server.port}/final")
    ) as (port, _):
        with syncws.connect(f"ws://127.0.0.1:{port}/", additional_headers=added, keep_headers_on_redirect=True):
            pass
        final = seen.get(timeout=5).request_headers
        assert [final[name] for name in added] == list(added.values())


def test_headers_stay_dropped_when_the_chain_comes_back() -> None:
    # A -> B -> A: once another origin has been seen, the caller's
    # headers are gone for the rest of the chain (as in the Fetch standard).
    elsewhere: List[int] = []

    def process_request(path: str, headers: Headers) -> Any:
        if path == "/start":
            return 302, [("Location", f"ws://localhost:{elsewhere[0]}/b")], b""
        return None

    with syncws_echo(process_request=process_request) as (server, seen), redirector(
        lambda path: redirect(302, f"ws://127.0.0.1:{server.port}/back")
    ) as (port, _):
        elsewhere.append(port)
        with syncws.connect(f"ws://127.0.0.1:{server.port}/start", additional_headers={"X-Api-Key": "k"}) as ws:
            assert ws.path == "/back"
        assert "X-Api-Key" not in seen.get(timeout=5).request_headers


def test_same_origin_redirect_keeps_credentials_syncws_process_request() -> None:
    def process_request(path: str, headers: Headers) -> Any:
        if path == "/old":
            return 302, [("Location", "/new")], b"see /new\n"
        return None

    with syncws_echo(process_request=process_request) as (server, seen):
        with syncws.connect(f"ws://bob:pw@127.0.0.1:{server.port}/old", additional_headers={"Cookie": "c=2"}) as ws:
            assert ws.path == "/new"
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
        headers = seen.get(timeout=5).request_headers
        assert headers["Cookie"] == "c=2"
        assert headers["Authorization"].startswith("Basic ")


def test_redirect_from_websockets_server(ws_serve: Any) -> None:
    from websockets.datastructures import Headers as WSHeaders
    from websockets.http11 import Response

    target = ws_serve(echo)

    def process_request(connection: Any, request: Any) -> Any:
        return Response(302, "Found", WSHeaders([("Location", f"{target}/there"), ("Content-Length", "0")]), b"")

    origin = ws_serve(echo, process_request=process_request)
    with syncws.connect(origin + "/here") as ws:
        assert ws.path == "/there"
        ws.send(b"bin")
        assert ws.recv(timeout=5) == b"bin"


def test_too_many_redirects_carries_the_response() -> None:
    def answer(path: str) -> bytes:
        n = int(path.strip("/") or 0)
        return redirect(307, f"/{n + 1}", body=b"again\n", extra="Retry-After: 3\r\n")

    with redirector(answer) as (port, heads):
        with pytest.raises(InvalidStatusCode) as excinfo:
            syncws.connect(f"ws://127.0.0.1:{port}/0", max_redirects=3)
        assert heads.qsize() == 4  # the first request and 3 redirects
    exc = excinfo.value
    assert exc.status_code == 307
    assert isinstance(exc.headers, Headers)
    assert exc.headers["Location"] == "/4" and exc.headers["Retry-After"] == "3"
    assert exc.body == b"again\n"
    assert "max_redirects=3" in str(exc)


def test_max_redirects_zero_follows_none() -> None:
    with redirector(lambda path: redirect(302, "/elsewhere")) as (port, heads):
        with pytest.raises(InvalidStatusCode) as excinfo:
            syncws.connect(f"ws://127.0.0.1:{port}/", max_redirects=0)
    assert excinfo.value.status_code == 302
    assert excinfo.value.headers["Location"] == "/elsewhere"
    assert heads.qsize() == 1


def test_redirect_loop_is_refused() -> None:
    with redirector(lambda path: redirect(302, "/a" if path == "/b" else "/b")) as (port, heads):
        with pytest.raises(InvalidStatusCode, match="redirect loop"):
            syncws.connect(f"ws://127.0.0.1:{port}/a")


def test_redirect_without_location() -> None:
    answer = b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"
    with redirector(lambda path: answer) as (port, _):
        with pytest.raises(InvalidStatusCode, match="without a Location") as excinfo:
            syncws.connect(f"ws://127.0.0.1:{port}/")
    assert excinfo.value.status_code == 302


@pytest.fixture
def server_tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT_FILE, KEY_FILE)
    return context


def test_ws_to_wss_is_followed(server_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default context of the wss:// hop trusts the test certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(CERT_FILE))
    with syncws_echo(ssl=server_tls) as (server, seen), redirector(
        lambda path: redirect(301, f"wss://localhost:{server.port}/secure")
    ) as (port, _):
        with syncws.connect(f"ws://127.0.0.1:{port}/") as ws:
            assert ws.secure and ws.path == "/secure"
            ws.send("tls")
            assert ws.recv(timeout=5) == "tls"


def test_wss_to_ws_is_refused(server_tls: ssl.SSLContext) -> None:
    with syncws_echo() as (plain, seen):
        location = f"ws://127.0.0.1:{plain.port}/plain"

        def process_request(path: str, headers: Headers) -> Any:
            return 302, [("Location", location)], b"go plain\n"

        with syncws_echo(ssl=server_tls, process_request=process_request) as (secure, _):
            client_context = ssl.create_default_context(cafile=str(CERT_FILE))
            with pytest.raises(InvalidStatusCode, match="drop TLS") as excinfo:
                syncws.connect(f"wss://localhost:{secure.port}/", ssl=client_context)
        assert seen.empty()  # the plain server was never reached
    assert excinfo.value.headers["Location"] == location
    assert excinfo.value.body == b"go plain\n"


def test_http_location_maps_to_ws() -> None:
    with syncws_echo() as (server, _), redirector(
        lambda path: redirect(308, f"http://127.0.0.1:{server.port}/via-http")
    ) as (port, _):
        with syncws.connect(f"ws://127.0.0.1:{port}/") as ws:
            assert ws.path == "/via-http"


def test_max_redirects_is_checked() -> None:
    with pytest.raises(ValueError, match="max_redirects"):
        syncws.connect("ws://127.0.0.1:9/", max_redirects=-1)


def test_the_answer_a_redirect_reads_stays_out_of_the_message() -> None:
    # The read-back: an application connects to a URI a user gave and
    # shows the error; the URI redirects to an internal service, whose
    # answer must not reach the error's text. It stays on .body.
    internal = b'{"AccessKeyId": "AKIAEXAMPLE", "SecretAccessKey": "wJalrXUtnFEMI"}\n'
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(internal) + internal
    )
    with redirector(lambda path: answer) as (internal_port, _), redirector(
        lambda path: redirect(302, f"ws://127.0.0.1:{internal_port}/latest/meta-data/iam")
    ) as (port, _):
        with pytest.raises(InvalidStatusCode) as excinfo:
            syncws.connect(f"ws://127.0.0.1:{port}/")
    assert excinfo.value.status_code == 200
    assert excinfo.value.body == internal
    assert str(excinfo.value) == "server rejected WebSocket connection: HTTP 200"


def test_redirect_lines_and_texts_leave_passwords_and_query_values_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="syncws")
    with syncws_echo() as (server, _), redirector(
        lambda path: redirect(302, f"ws://127.0.0.1:{server.port}/final?next_token=tok456")
    ) as (port, _):
        with syncws.connect(f"ws://bob:hunter2@127.0.0.1:{port}/start?access_token=tok123"):
            pass
    lines = [r.getMessage() for r in caplog.records if " redirected to " in r.getMessage()]
    assert lines == [
        f"ws://bob:[redacted]@127.0.0.1:{port}/start?access_token=[redacted] redirected to "
        f"ws://127.0.0.1:{server.port}/final?next_token=[redacted] (HTTP 302)"
    ]
    for secret in ("hunter2", "tok123", "tok456"):
        assert secret not in caplog.text

    location = "ws://127.0.0.1:1/again?access_token=tok789"
    with redirector(lambda path: redirect(307, location)) as (port, _):
        with pytest.raises(InvalidStatusCode) as excinfo:
            syncws.connect(f"ws://127.0.0.1:{port}/?access_token=tok123", max_redirects=0)
    assert str(excinfo.value) == (
        "server rejected WebSocket connection: HTTP 307 (redirect to "
        "ws://127.0.0.1:1/again?access_token=[redacted] not followed: more than max_redirects=0)"
    )
    assert excinfo.value.headers["Location"] == location


def test_one_open_timeout_covers_the_whole_chain() -> None:
    # Each hop answers in 0.6 s, well within open_timeout; ten of them
    # would take 6 s. The chain gets 1.5 s in all, not 1.5 s a hop.
    def slow(path: str) -> bytes:
        time.sleep(0.6)
        return redirect(307, f"/{int(path.strip('/') or 0) + 1}")

    with redirector(slow) as (port, heads):
        started = time.monotonic()
        with pytest.raises(TimeoutError) as excinfo:
            syncws.connect(f"ws://127.0.0.1:{port}/0", open_timeout=1.5, max_redirects=10)
        elapsed = time.monotonic() - started
    assert elapsed < 6.0, elapsed  # short of the chain's 6.6 s
    assert heads.qsize() <= 3  # a fourth hop can't start within 1.5 s
    assert re.fullmatch(
        rf"the opening handshake with ws://127\.0\.0\.1:{port}/(\d) didn't finish "
        r"within 1\.5 seconds, \1 redirects included",
        str(excinfo.value),
    ), str(excinfo.value)


def test_a_cross_origin_hop_gets_its_own_server_hostname(server_tls: ssl.SSLContext) -> None:
    # server_hostname names the first host's certificate (here: connecting
    # by IP, checking the name); a redirect to another origin is checked
    # against its own host, 127.0.0.1 (no SNI for an IP address).
    names: "queue.Queue[Any]" = queue.Queue()
    server_tls.sni_callback = lambda sock, name, context: names.put(name)
    client_context = ssl.create_default_context(cafile=str(CERT_FILE))
    with syncws_echo(ssl=server_tls) as (final, _):
        def process_request(path: str, headers: Headers) -> Any:
            if path == "/start":
                return 302, [("Location", "/same-origin")], b""
            return 302, [("Location", f"wss://127.0.0.1:{final.port}/other-origin")], b""

        with syncws_echo(ssl=server_tls, process_request=process_request) as (first, _):
            with syncws.connect(
                f"wss://127.0.0.1:{first.port}/start", ssl=client_context, server_hostname="localhost"
            ) as ws:
                assert ws.path == "/other-origin"
    assert [names.get(timeout=5) for _ in range(3)] == ["localhost", "localhost", None]


# -- address spaces and the chain's rules, without sockets ------------------------


@pytest.mark.parametrize(
    "address, space",
    [
        ("127.0.0.1", AddressSpace.LOOPBACK), ("127.9.9.9", AddressSpace.LOOPBACK),
        ("0.0.0.0", AddressSpace.LOOPBACK), ("::1", AddressSpace.LOOPBACK), ("::", AddressSpace.LOOPBACK),
        ("::ffff:127.0.0.1", AddressSpace.LOOPBACK), ("2002:7f00:1::", AddressSpace.LOOPBACK),
        ("169.254.169.254", AddressSpace.LOCAL), ("10.0.0.1", AddressSpace.LOCAL),
        ("172.16.5.4", AddressSpace.LOCAL), ("192.168.1.1", AddressSpace.LOCAL),
        ("100.100.100.200", AddressSpace.LOCAL), ("192.0.0.192", AddressSpace.LOCAL),
        ("198.18.0.1", AddressSpace.LOCAL), ("224.0.0.251", AddressSpace.LOCAL),
        ("255.255.255.255", AddressSpace.LOCAL), ("fd00:ec2::254", AddressSpace.LOCAL),
        ("fe80::1%eth0", AddressSpace.LOCAL), ("::ffff:169.254.169.254", AddressSpace.LOCAL),
        ("64:ff9b::a9fe:a9fe", AddressSpace.LOCAL), ("ff02::1", AddressSpace.LOCAL),
        ("8.8.8.8", AddressSpace.PUBLIC), ("192.31.196.1", AddressSpace.PUBLIC),
        ("2606:4700::1111", AddressSpace.PUBLIC), ("::ffff:8.8.8.8", AddressSpace.PUBLIC),
        ("2002:808:808::", AddressSpace.PUBLIC),
    ],
)
def test_address_space(address: str, space: AddressSpace) -> None:
    assert address_space(address) is space


@pytest.mark.parametrize(
    "host, space",
    [
        ("localhost", AddressSpace.LOOPBACK), ("app.localhost", AddressSpace.LOOPBACK),
        ("169.254.169.254", AddressSpace.LOCAL), ("::1", AddressSpace.LOOPBACK),
        ("8.8.8.8", AddressSpace.PUBLIC), ("example.com", None), ("localhost.example", None),
        # What a proxy's resolver reads as an address, or as localhost.
        ("localhost.", AddressSpace.LOOPBACK), ("app.localhost.", AddressSpace.LOOPBACK),
        ("127.1", AddressSpace.LOOPBACK), ("2130706433", AddressSpace.LOOPBACK),
        ("0x7f.1", AddressSpace.LOOPBACK), ("0177.0.0.1", AddressSpace.LOOPBACK), ("0", AddressSpace.LOOPBACK),
        ("0xa9fea9fe", AddressSpace.LOCAL), ("10.1", AddressSpace.LOCAL), ("134744072", AddressSpace.PUBLIC),
        ("1e100.net", None), ("0x7f.example", None),
    ],
)
def test_host_address_space(host: str, space: Any) -> None:
    assert host_address_space(host) is space


def response(location: str, status: int = 302) -> InvalidStatusCode:
    return InvalidStatusCode(status, b"moved", Headers([("Location", location)]))


def test_chain_refuses_a_more_private_space_after_a_public_hop() -> None:
    chain = RedirectChain("ws://public.example/")
    assert not chain.checks_addresses  # the caller's own URI is never checked
    chain.follow(parse_uri(chain.uri), response("ws://internal.example/"), AddressSpace.PUBLIC)
    assert chain.checks_addresses
    chain.check_space(AddressSpace.PUBLIC)
    chain.check_space(None)  # a name only a proxy resolves
    for space in (AddressSpace.LOCAL, AddressSpace.LOOPBACK):
        with pytest.raises(InvalidStatusCode) as excinfo:
            chain.check_space(space)
        assert excinfo.value.status_code == 302 and excinfo.value.headers["Location"] == "ws://internal.example/"
        assert str(excinfo.value) == (
            "server rejected WebSocket connection: HTTP 302 (redirect to ws://internal.example/ refused: "
            f"it leads to a {space.name.lower()} address after a public one; allow_private_redirects=True follows it)"
        )


def test_chain_from_local_refuses_loopback_only_and_never_lowers_its_mark() -> None:
    chain = RedirectChain("ws://10.0.0.5/")
    chain.follow(parse_uri(chain.uri), response("ws://10.0.0.6/"), AddressSpace.LOCAL)
    chain.check_space(AddressSpace.LOCAL)
    with pytest.raises(InvalidStatusCode, match="loopback address after a local one"):
        chain.check_space(AddressSpace.LOOPBACK)
    chain.follow(parse_uri(chain.uri), response("ws://8.8.8.8/"), AddressSpace.LOCAL)
    chain.follow(parse_uri(chain.uri), response("ws://10.0.0.7/"), AddressSpace.PUBLIC)
    with pytest.raises(InvalidStatusCode, match="local address after a public one"):
        chain.check_space(AddressSpace.LOCAL)


def test_chain_checks_nothing_from_loopback_or_when_allowed() -> None:
    chain = RedirectChain("ws://127.0.0.1/")
    chain.follow(parse_uri(chain.uri), response("ws://127.0.0.1/b"), AddressSpace.LOOPBACK)
    assert not chain.checks_addresses
    chain = RedirectChain("ws://public.example/", allow_private_redirects=True)
    chain.follow(parse_uri(chain.uri), response("ws://127.0.0.1/"), AddressSpace.PUBLIC)
    assert not chain.checks_addresses
    chain.check_space(AddressSpace.LOOPBACK)


def test_chain_takes_a_name_behind_a_proxy_for_public() -> None:
    chain = RedirectChain("ws://example.com/")
    chain.follow(parse_uri(chain.uri), response("ws://10.1.2.3/"), None)
    with pytest.raises(InvalidStatusCode, match="local address after a public one"):
        chain.check_space(host_address_space("10.1.2.3"))


def test_chain_keeps_what_the_caller_gave_for_the_first_origin_only() -> None:
    chain = RedirectChain(
        "wss://api.example:8443/a", headers={"X-Api-Key": "k"}, server_hostname="api.internal",
        connect_host="10.0.0.1", connect_port=9443,
    )
    chain.follow(parse_uri(chain.uri), response("/b"), AddressSpace.PUBLIC)  # same origin
    assert chain.uri == "wss://api.example:8443/b"
    assert (chain.headers, chain.server_hostname) == ({"X-Api-Key": "k"}, "api.internal")
    assert (chain.connect_host, chain.connect_port) == ("10.0.0.1", 9443)
    chain.follow(parse_uri(chain.uri), response("wss://api.example/c"), AddressSpace.PUBLIC)  # other port
    assert chain.headers is None and chain.server_hostname is None
    assert chain.connect_host is None and chain.connect_port is None
    assert chain.visited == ["wss://api.example:8443/a", "wss://api.example:8443/b"]


# -- redirects into private addresses, in a network namespace ---------------------

# A public address (globally reachable, IANA's AS112 block) for the "public"
# server, and a private one: both on the loopback interface of a namespace
# made for the test, which has no other interface, so nothing leaves it.
PUBLIC = "192.31.196.1"
PRIVATE = "10.213.250.1"
CLONE_NEWNET = 0x40000000


def in_namespace(name: str, scenario: Callable[[], None]) -> None:
    """Run ``scenario`` in a thread of this process moved into the network
    namespace ``name``: the sockets it (and the threads it starts) opens
    live there. Its exception, if any, is raised here."""
    errors: List[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns() failed")
            finally:
                os.close(fd)
            scenario()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the scenario didn't end"
    if errors:
        raise errors[0]


@pytest.fixture
def namespace() -> Iterator[str]:
    need_network_namespaces()
    name = f"swredir{os.getpid()}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        for address in (PUBLIC, PRIVATE):
            ip("-n", name, "addr", "add", f"{address}/32", "dev", "lo")
        yield name
    finally:
        ip("netns", "del", name)


@pytest.mark.parametrize(
    "start, target, refusal",
    [
        (PUBLIC, "ws://127.0.0.1:{internal}/latest/meta-data", "loopback address after a public one"),
        (PUBLIC, f"ws://{PRIVATE}:{{internal}}/admin", "local address after a public one"),
        (PUBLIC, "http://localhost:{internal}/", "loopback address after a public one"),  # a name
        (PRIVATE, "ws://127.0.0.1:{internal}/", "loopback address after a local one"),
    ],
)
def test_a_redirect_cannot_lead_into_a_more_private_address_space(
    namespace: str, start: str, target: str, refusal: str
) -> None:
    secret = b'{"SecretAccessKey": "wJalrXUtnFEMI"}'
    internal_answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(secret), secret)

    def scenario() -> None:
        internal_host = "127.0.0.1" if "127.0.0.1" in target or "localhost" in target else PRIVATE
        with redirector(lambda path: internal_answer, internal_host) as (internal, asked):
            location = target.format(internal=internal)
            with redirector(lambda path: redirect(302, location), start) as (port, _):
                with pytest.raises(InvalidStatusCode) as excinfo:
                    syncws.connect(f"ws://{start}:{port}/")
                assert excinfo.value.status_code == 302
                assert refusal in str(excinfo.value), str(excinfo.value)
                assert asked.empty()  # the internal server heard nothing

                # The caller may opt in, and then reads what it answered.
                with pytest.raises(InvalidStatusCode) as excinfo:
                    syncws.connect(f"ws://{start}:{port}/", allow_private_redirects=True)
                assert excinfo.value.status_code == 200 and excinfo.value.body == secret
                assert asked.qsize() == 1

    in_namespace(namespace, scenario)


def test_a_redirect_may_stay_public_or_leave_loopback(namespace: str) -> None:
    def scenario() -> None:
        with syncws_echo() as (loopback, _), syncws.serve(echo, PUBLIC, 0) as public:
            # public -> public: followed.
            with redirector(lambda path: redirect(302, f"ws://{PUBLIC}:{public.port}/p"), PUBLIC) as (port, _):
                with syncws.connect(f"ws://{PUBLIC}:{port}/") as ws:
                    assert ws.path == "/p" and ws.remote_address[0] == PUBLIC
            # loopback -> public -> loopback: the public hop raised the mark.
            with redirector(lambda path: redirect(302, f"ws://127.0.0.1:{loopback.port}/"), PUBLIC) as (hop, _):
                with redirector(lambda path: redirect(302, f"ws://{PUBLIC}:{hop}/"), "127.0.0.1") as (port, _):
                    with pytest.raises(InvalidStatusCode, match="loopback address after a public one"):
                        syncws.connect(f"ws://127.0.0.1:{port}/")

    in_namespace(namespace, scenario)


# -- the same through a SOCKS proxy that leaves the name to this machine ----------

# A name that this process's resolver answers for (the tests' stand-in for
# DNS): only resolving it tells where it leads, not the name itself.
INTERNAL_NAME = "metadata.internal.test"


@pytest.fixture
def internal_name(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """Make INTERNAL_NAME resolve, in this process, to the address the test appends."""
    answer: List[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return real_getaddrinfo(answer[0] if host == INTERNAL_NAME else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answer


@pytest.mark.parametrize(
    "internal, refusal",
    [("127.0.0.1", "loopback address after a public one"), (PRIVATE, "local address after a public one")],
)
def test_a_socks5_proxy_is_given_an_address_checked_like_a_direct_hop(
    namespace: str, internal_name: List[str], internal: str, refusal: str
) -> None:
    # socks5:// (not socks5h://): this machine resolves the name and hands
    # the proxy an address, so the address can be checked before it is.
    pytest.importorskip("python_socks", reason="python-socks isn't installed: pip install -e '.[test]'")
    microsocks = find_program("microsocks")
    internal_name.append(internal)
    secret = b'{"SecretAccessKey": "wJalrXUtnFEMI"}'
    internal_answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(secret), secret)

    def scenario() -> None:
        with socket.create_server(("127.0.0.1", 0)) as probe:  # a free port of the namespace
            proxy_port = probe.getsockname()[1]
        argv = ["ip", "netns", "exec", namespace, microsocks, "-i", "127.0.0.1", "-p", str(proxy_port)]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: accepts(("127.0.0.1", proxy_port)) or process.poll() is not None, 10)
            assert process.poll() is None, "microsocks exited"
            proxy = f"socks5://127.0.0.1:{proxy_port}"
            with redirector(lambda path: internal_answer, internal) as (internal_port, asked):
                location = f"ws://{INTERNAL_NAME}:{internal_port}/latest/meta-data"
                with redirector(lambda path: redirect(302, location), PUBLIC) as (port, _):
                    with pytest.raises(InvalidStatusCode) as excinfo:
                        syncws.connect(f"ws://{PUBLIC}:{port}/", proxy=proxy)
                    assert excinfo.value.status_code == 302
                    assert refusal in str(excinfo.value), str(excinfo.value)
                    assert asked.empty()  # the internal server heard nothing

                    # The caller may opt in, and then reads what it answered.
                    with pytest.raises(InvalidStatusCode) as excinfo:
                        syncws.connect(f"ws://{PUBLIC}:{port}/", proxy=proxy, allow_private_redirects=True)
                    assert excinfo.value.status_code == 200 and excinfo.value.body == secret
                    assert asked.qsize() == 1
        finally:
            process.terminate()
            process.wait(10)

    in_namespace(namespace, scenario)


def accepts(address: Tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
        return True
    return False


@pytest.mark.parametrize("internal_host", ["127.1", "2130706433", "0x7f.1", "0177.0.0.1"])
def test_a_proxy_that_resolves_names_is_refused_loopback_in_any_ipv4_form(
    namespace: str, internal_host: str
) -> None:
    # socks5h://: the proxy resolves the host, as every resolver reads an
    # IPv4 address, so "127.1" reaches the proxy's loopback: it must be
    # checked as 127.0.0.1 is.
    pytest.importorskip("python_socks", reason="python-socks isn't installed: pip install -e '.[test]'")
    microsocks = find_program("microsocks")
    secret = b'{"SecretAccessKey": "wJalrXUtnFEMI"}'
    internal_answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(secret), secret)

    def scenario() -> None:
        with socket.create_server(("127.0.0.1", 0)) as probe:  # a free port of the namespace
            proxy_port = probe.getsockname()[1]
        argv = ["ip", "netns", "exec", namespace, microsocks, "-i", "127.0.0.1", "-p", str(proxy_port)]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: accepts(("127.0.0.1", proxy_port)) or process.poll() is not None, 10)
            assert process.poll() is None, "microsocks exited"
            proxy = f"socks5h://127.0.0.1:{proxy_port}"
            with redirector(lambda path: internal_answer, "127.0.0.1") as (internal_port, asked):
                location = f"ws://{internal_host}:{internal_port}/latest/meta-data"
                with redirector(lambda path: redirect(302, location), PUBLIC) as (port, _):
                    with pytest.raises(InvalidStatusCode) as excinfo:
                        syncws.connect(f"ws://{PUBLIC}:{port}/", proxy=proxy)
                    assert excinfo.value.status_code == 302
                    assert "loopback address after a public one" in str(excinfo.value), str(excinfo.value)
                    assert asked.empty()  # the internal server heard nothing
        finally:
            process.terminate()
            process.wait(10)

    in_namespace(namespace, scenario)
