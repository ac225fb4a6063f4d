"""Tests for ``python -m syncws serve``'s options (syncws.serveconfig), as operators run them.

The parsing is tested in this process; every option's effect is tested on
a server run by the command line in a subprocess, on 127.0.0.1 and a free
port (or a Unix socket in a temporary directory), stopped by its PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import pytest

import syncws
from conftest import CERT_FILE, KEY_FILE, http_get, wait_for
from syncws import serveconfig
from syncws.http import Headers

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 20

PID_HANDLER = '''
import os

def handler(websocket):
    websocket.send(str(os.getpid()))
    for message in websocket:
        websocket.send(message)
'''


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serveconfig.add_arguments(parser)
    return parser.parse_args(list(argv))


# -- parsing --------------------------------------------------------------------------


EVERY_OPTION = [
    "--max-size", "65536", "--max-queue", "none", "--read-limit", "4096", "--write-limit", "8192",
    "--ping-interval", "5.5", "--ping-timeout", "none", "--open-timeout", "3", "--close-timeout", "2",
    "--write-timeout", "30", "--first-byte-timeout", "1", "--max-connections", "100",
    "--max-pending-handshakes", "16", "--backlog", "64", "--origin", "https://a.example",
    "--origin", "https://b.example", "--origin-regex", r"https://.*\.c\.example", "--allow-no-origin",
    "--no-compression", "--subprotocol", "chat.v2", "--subprotocol", "chat.v1", "--server-header", "",
    "--certfile", CERT_FILE, "--keyfile", KEY_FILE, "--health", "/healthz", "--metrics", "/metrics",
    "--log-level", "debug", "--log-format", "json",
]


def test_every_setting_reaches_serve() -> None:
    options = serveconfig.server_options(parse(*EVERY_OPTION))
    origins = options.pop("origins")
    assert origins[:2] == ["https://a.example", "https://b.example"] and origins[3] is None
    assert origins[2].pattern == r"https://.*\.c\.example"
    assert isinstance(options.pop("ssl"), ssl.SSLContext)
    assert callable(options.pop("process_request"))
    assert options == {
        "max_size": 65536, "max_queue": None, "read_limit": 4096, "write_limit": 8192, "ping_interval": 5.5,
        "ping_timeout": None, "open_timeout": 3.0, "close_timeout": 2.0, "write_timeout": 30.0,
        "first_byte_timeout": 1.0, "max_connections": 100, "max_pending_handshakes": 16, "backlog": 64,
        "compression": None, "subprotocols": ["chat.v2", "chat.v1"], "server_header": None,
    }
    # Each of serve()'s settings has its option.
    assert {s.dest for s in serveconfig.SETTINGS} >= {
        "max_size", "max_queue", "read_limit", "write_limit", "ping_interval", "ping_timeout", "open_timeout",
        "close_timeout", "write_timeout", "first_byte_timeout", "max_connections", "max_pending_handshakes",
        "backlog", "origins", "subprotocols", "server_header",
    }


def test_options_not_given_keep_serves_defaults() -> None:
    assert serveconfig.server_options(parse()) == {}


def test_workers_read_back_the_same_options() -> None:
    given = parse(
        *EVERY_OPTION, "--host", "0.0.0.0", "--port", "9000", "--processes", "4", "--admin-port", "9100",
        "--admin-host", "127.0.0.1", "app:handler",
    )
    again = parse(*serveconfig.worker_arguments(given))
    for name, value in vars(given).items():
        if name in ("host", "port", "processes", "handler", "shutdown_timeout"):
            continue  # the supervisor gives each worker these itself
        if name == "origin_patterns":
            assert [p.pattern for p in getattr(again, name)] == [p.pattern for p in value]
        else:
            assert getattr(again, name) == value, name


def test_shutdown_timeout_is_seconds_above_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse().shutdown_timeout == serveconfig.SHUTDOWN_TIMEOUT
    assert parse("--shutdown-timeout", "2.5").shutdown_timeout == 2.5
    for text, message in [
        ("0", "must be a number of seconds above 0, got 0"), ("-3", "must be a number of seconds above 0, got -3"),
        ("inf", "must be a number of seconds above 0, got inf"), ("nan", "must be a number of seconds above 0, got nan"),
        ("soon", "expected seconds, got 'soon'"), ("none", "expected seconds, got 'none'"),
        ("1e10", f"must be at most {threading.TIMEOUT_MAX:.0f} seconds, got 1e10"),
    ]:
        with pytest.raises(SystemExit) as exited:
            parse("--shutdown-timeout", text)
        assert exited.value.code == 2
        assert f"argument --shutdown-timeout: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--ping-interval", "0"], "--ping-interval must be > 0 seconds or None, got 0.0"),
    (["--keyfile", KEY_FILE], "--keyfile needs --certfile"),
    (["--allow-no-origin"], "--allow-no-origin goes with --origin or --origin-regex"),
    (["--admin-port", "9100"], "--admin-port serves --health and --metrics: give one of them, or both"),
    (["--health", "/h", "--port", "9100", "--admin-port", "9100"], "--admin-port 9100 is --port's"),
    (["--health", "/h", "--admin-port", str(serveconfig.DEFAULT_PORT)], f"--admin-port {serveconfig.DEFAULT_PORT} is --port's"),
    (["--health", "/h", "--host", "0.0.0.0", "--port", "9100", "--admin-host", "127.0.0.1", "--admin-port", "9100"],
     "--admin-port 9100 is --port's"),
    (["--health", "/h", "--port", "9100", "--admin-host", "localhost", "--admin-port", "9100"], "--admin-port 9100 is --port's"),
])
def test_options_that_dont_go_together(argv: List[str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        serveconfig.server_options(parse(*argv))
    assert message in str(raised.value)


# -- the command line, for real ---------------------------------------------------------


def cli_env(*paths: Path) -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *map(str, paths)]), PYTHONIOENCODING="utf-8")


class Served:
    """``python -m syncws serve args``, until stopped by its PID."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.log = cwd / f"serve-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "syncws", "serve", *args], cwd=cwd, env=cli_env(cwd),
                stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self.process.stdout is not None
        self.line = self.process.stdout.readline()  # bounded by the test's timeout
        assert self.line.startswith("serving on "), (self.line, self.stderr())
        match = re.match(r"serving on wss?://[^:]+:(\d+)/", self.line)
        self.port = int(match.group(1)) if match else 0

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=TIMEOUT)
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    def text(self, path: str) -> str:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=TIMEOUT)
        connection.request("GET", path)
        body = connection.getresponse().read().decode()
        connection.close()
        return body

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return int(self.process.returncode)


@pytest.fixture
def serve_cli(tmp_path: Path) -> Iterator[Any]:
    started: List[Served] = []

    def start(*args: str) -> Served:
        served = Served(tmp_path, *args)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def metric(text: str, sample: str) -> float:
    """The value of one sample (name and labels, as written) of an exposition."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    raise AssertionError(f"no sample {sample} in:\n{text}")


@pytest.mark.timeout(60)
def test_an_operators_server(serve_cli: Any) -> None:
    server = serve_cli(
        "--host", HOST, "--port", "0", "--max-size", "100", "--origin", "https://good.example", "--allow-no-origin",
        "--subprotocol", "chat", "--no-compression", "--server-header", "", "--max-connections", "1",
        "--ping-interval", "none", "--health", "/healthz", "--metrics", "/metrics",
    )
    uri = f"ws://{HOST}:{server.port}/"
    # The health check: plain HTTP, no upgrade, nothing refused.
    health = server.get("/healthz?probe=1")
    assert (health.status, health.getheader("Server")) == (200, None)
    with pytest.raises(syncws.InvalidStatusCode) as refused:
        syncws.connect(uri, origin="https://evil.example")
    assert refused.value.status_code == 403
    with syncws.connect(uri, subprotocols=["other", "chat"], origin="https://good.example") as websocket:
        assert websocket.subprotocol == "chat"
        assert websocket.response_headers.get("Sec-WebSocket-Extensions") is None
        assert websocket.response_headers.get("Server") is None
        # --max-connections 1: the server sheds load before reading a
        # request, so a full server answers 503 to everything, its health
        # check included (a load balancer then sends clients elsewhere).
        assert wait_for(lambda: server.get("/healthz").status == 503, TIMEOUT)
        with pytest.raises(syncws.InvalidStatusCode) as busy:
            syncws.connect(uri)
        assert busy.value.status_code == 503
        websocket.send("x" * 101)  # --max-size 100
        with pytest.raises(syncws.ConnectionClosed) as closed:
            websocket.recv(TIMEOUT)
        assert closed.value.code == 1009
        assert websocket.latency == 0.0  # --ping-interval none: never pinged
    assert wait_for(lambda: 'syncws_connections_closed_total{code="1009"} 1' in server.text("/metrics"), TIMEOUT)
    text = server.text("/metrics")
    assert metric(text, 'syncws_handshakes_refused_total{status="403"}') == 1
    assert metric(text, 'syncws_handshakes_refused_total{status="503"}') >= 2  # the WebSocket, the health check
    assert metric(text, "syncws_connections_opened_total") == 1
    assert metric(text, "syncws_connections_open") == 0
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_tls(serve_cli: Any) -> None:
    server = serve_cli("--port", "0", "--certfile", CERT_FILE, "--keyfile", KEY_FILE)
    assert server.line.startswith("serving on wss://127.0.0.1:")
    context = ssl.create_default_context(cafile=CERT_FILE)
    with syncws.connect(f"wss://localhost:{server.port}/", ssl=context) as websocket:
        assert websocket.secure
        websocket.send("over TLS")
        assert websocket.recv(TIMEOUT) == "over TLS"


def test_a_certificate_that_does_not_load(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncws", "serve", "--port", "0", "--certfile", str(tmp_path / "missing.pem")],
        capture_output=True, text=True, env=cli_env(), timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert result.stderr == "python -m syncws: could not load the TLS certificate: No such file or directory\n"


@pytest.mark.parametrize("argv, message", [
    (["--ping-interval", "0"], "--ping-interval must be > 0 seconds or None, got 0.0"),
    (["--processes", "2", "--unix", "x.sock"], "--unix and --processes don't go together"),
    (["--processes", "2", "--keyfile", KEY_FILE], "--keyfile needs --certfile"),
])
def test_usage_errors(tmp_path: Path, argv: List[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncws", "serve", "--port", "0", *argv],
        capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("python -m syncws: ") and message in result.stderr
    assert result.stdout == ""


@pytest.mark.timeout(60)
def test_unix_socket(serve_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "server.sock"
    server = serve_cli("--unix", str(path), "--health", "/healthz")
    assert server.line == f"serving on unix socket {path}\n"
    with syncws.unix_connect(str(path)) as websocket:
        websocket.send("over a Unix socket")
        assert websocket.recv(TIMEOUT) == "over a Unix socket"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
    assert server.stop() == 0
    assert not path.exists()  # removed on the way out


@pytest.mark.timeout(90)
def test_processes_answer_health_and_metrics_for_every_worker(serve_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "pidapp.py").write_text(PID_HANDLER)
    server = serve_cli(
        "--processes", "2", "--host", HOST, "--port", "0", "--health", "/healthz", "--metrics", "/metrics",
        "--max-size", "100", "pidapp:handler",
    )
    uri = f"ws://{HOST}:{server.port}/"
    for _ in range(20):  # spread over both workers by the kernel
        assert server.get("/healthz").status == 200
    # One connection held open on each worker.
    clients: Dict[int, syncws.WebSocketClientProtocol] = {}
    deadline = time.monotonic() + TIMEOUT
    while len(clients) < 2:
        assert time.monotonic() < deadline, f"only workers {list(clients)} answered"
        websocket = syncws.connect(uri, timeout=TIMEOUT)
        pid = int(websocket.recv(TIMEOUT))
        if pid in clients:
            websocket.close()
        else:
            clients[pid] = websocket
    try:
        # --max-size reached the workers.
        first = next(iter(clients.values()))
        first.send("x" * 101)
        with pytest.raises(syncws.ConnectionClosed) as closed:
            first.recv(TIMEOUT)
        assert closed.value.code == 1009

        def scrape() -> Tuple[List[float], float]:
            """(connections open per worker, connections closed with 1009 in all)."""
            text = server.text("/metrics")
            assert text.count("# TYPE syncws_connections_open gauge") == 1
            open_now = sorted(metric(text, f'syncws_connections_open{{worker="{w}"}}') for w in ("0", "1"))
            failed = sum(float(v) for v in re.findall(r'^syncws_connections_closed_total\{worker="\d",code="1009"\} (\S+)$', text, re.M))
            return open_now, failed

        # Whichever worker answers, both workers' samples are there (each
        # writes its own every second): one connection still open on one
        # worker, none on the other, which closed one with 1009.
        assert wait_for(lambda: scrape() == ([0, 1], 1), TIMEOUT), scrape()
    finally:
        for websocket in clients.values():
            websocket.close()


JSON_LINE_KEYS = {"time", "level", "logger", "pid", "connection", "message"}


@pytest.mark.timeout(60)
def test_json_logs_with_the_pid_and_the_connection(serve_cli: Any) -> None:
    server = serve_cli("--port", "0", "--log-format", "json", "--log-level", "info")
    with syncws.connect(f"ws://{HOST}:{server.port}/chat") as websocket:
        websocket.send("hi")
        websocket.recv(TIMEOUT)
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
    assert lines and all(set(line) == JSON_LINE_KEYS for line in lines)
    assert {line["pid"] for line in lines} == {server.process.pid}
    opened = next(line for line in lines if " opened: " in line["message"])
    connection = opened["connection"]
    about = [line["message"] for line in lines if line["connection"] == connection]
    # syncws's lines and the echo handler's own (logger syncws.cli).
    assert any("connected, path /chat" in message for message in about)
    assert any(" closed: 1000 (OK)" in message for message in about)


def test_debug_level(serve_cli: Any) -> None:
    server = serve_cli("--port", "0", "--log-level", "debug")
    with syncws.connect(f"ws://{HOST}:{server.port}/"):
        pass
    server.stop()
    assert " DEBUG syncws.server: " in server.stderr()
    assert re.search(r"^\S+ \S+ \d+ [0-9a-f]{8} DEBUG syncws.server: connection [0-9a-f]{8} request: GET /",
                     server.stderr(), re.MULTILINE)


def test_a_handler_modules_logging_is_kept(serve_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "loggingapp.py").write_text(
        "import logging\n"
        "logging.basicConfig(level=logging.WARNING, format='APP %(levelname)s %(name)s: %(message)s')\n"
        "def handler(websocket):\n"
        "    logging.getLogger('app').warning('hello %s', websocket.path)\n"
    )
    server = serve_cli("--port", "0", "--log-format", "json", "--log-level", "debug", "loggingapp:handler")
    with syncws.connect(f"ws://{HOST}:{server.port}/x") as websocket:
        with pytest.raises(syncws.ConnectionClosed):
            websocket.recv(TIMEOUT)
    server.stop()
    log = server.stderr()
    assert "APP WARNING app: hello /x" in log.splitlines()
    assert "{" not in log and "INFO" not in log  # neither JSON nor the CLI's level


def test_with_an_admin_port_health_and_metrics_leave_the_websocket_port() -> None:
    def page(path: str, headers: Any) -> Any:
        return None

    options = serveconfig.server_options(parse("--health", "/healthz", "--metrics", "/metrics", "--admin-port", "0"),
                                         process_request=page)
    assert options == {"process_request": page}
    assert "process_request" not in serveconfig.server_options(parse("--health", "/healthz", "--admin-port", "0"))


def admin_port(server: Served, paths: str = "/healthz and /metrics") -> int:
    """The port of the admin listener, from the line after ``serving on``."""
    assert server.process.stdout is not None
    line = server.process.stdout.readline()
    match = re.fullmatch(rf"answering {paths} on http://127\.0\.0\.1:(\d+)/\n", line)
    assert match, (line, server.stderr())
    return int(match.group(1))


@pytest.mark.timeout(60)
def test_an_admin_port_answers_while_the_server_is_full(serve_cli: Any) -> None:
    server = serve_cli(
        "--host", HOST, "--port", "0", "--max-connections", "1", "--health", "/healthz", "--metrics", "/metrics",
        "--admin-port", "0",
    )
    admin = admin_port(server)
    uri = f"ws://{HOST}:{server.port}/"
    with syncws.connect(uri, open_timeout=TIMEOUT):
        # Full: the WebSocket port answers 503 before reading a request.
        assert wait_for(lambda: server.get("/healthz").status == 503, TIMEOUT)
        with pytest.raises(syncws.InvalidStatusCode) as busy:
            syncws.connect(uri, open_timeout=TIMEOUT)
        assert busy.value.status_code == 503
        for _ in range(3):
            assert http_get(admin, "/healthz") == (200, "OK\n")
        status, text = http_get(admin, "/metrics")
        assert status == 200
        assert metric(text, "syncws_connections_open") == 1
        assert metric(text, 'syncws_handshakes_refused_total{status="503"}') >= 2
        assert http_get(admin, "/") == (404, "Not Found: this port serves the health check and the metrics only.\n")
    # Not full: the health check is the admin port's only. (The gauge
    # drops as the connection closes; its place in max_connections is
    # given back a moment later, once its handler's thread is done.)
    assert wait_for(lambda: metric(http_get(admin, "/metrics")[1], "syncws_connections_open") == 0, TIMEOUT)
    assert wait_for(lambda: server.get("/healthz").status == 426, TIMEOUT)
    assert server.stop() == 0


@pytest.mark.timeout(90)
def test_processes_answer_on_the_admin_port_while_every_worker_is_full(serve_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "pidapp.py").write_text(PID_HANDLER)
    server = serve_cli(
        "--processes", "2", "--host", HOST, "--port", "0", "--max-connections", "1", "--health", "/healthz",
        "--metrics", "/metrics", "--admin-port", "0", "pidapp:handler",
    )
    admin = admin_port(server)
    uri = f"ws://{HOST}:{server.port}/"
    clients: Dict[int, syncws.WebSocketClientProtocol] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(clients) < 2:  # one connection on each worker: both full
            assert time.monotonic() < deadline, f"only workers {list(clients)} answered"
            try:
                websocket = syncws.connect(uri, open_timeout=TIMEOUT)
            except syncws.InvalidStatusCode as exc:  # a full worker
                assert exc.status_code == 503
                continue
            clients[int(websocket.recv(TIMEOUT))] = websocket
        for _ in range(10):  # whichever worker the kernel picks
            assert http_get(admin, "/healthz") == (200, "OK\n")

        def open_per_worker() -> List[float]:
            text = http_get(admin, "/metrics")[1]
            return [metric(text, f'syncws_connections_open{{worker="{w}"}}') for w in ("0", "1")]

        assert wait_for(lambda: open_per_worker() == [1, 1], TIMEOUT), open_per_worker()
    finally:
        for websocket in clients.values():
            websocket.close()
    assert server.stop() == 0


# Sends its PID; once closed, stays until the file named by RELEASE exists: a drain that lasts.
SLOW_TO_CLOSE_HANDLER = '''
import os
import time

def handler(websocket):
    websocket.send(str(os.getpid()))
    for message in websocket:
        pass
    deadline = time.monotonic() + 60
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.05)
'''


def one_client_per_worker(uri: str, workers: int) -> List[syncws.WebSocketClientProtocol]:
    """Connections to ``uri`` until each of ``workers`` processes (they send their PID) holds one."""
    clients: List[syncws.WebSocketClientProtocol] = []
    pids: Set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    while len(pids) < workers:
        assert time.monotonic() < deadline, f"only workers {pids} answered"
        clients.append(syncws.connect(uri, open_timeout=TIMEOUT))
        pids.add(int(clients[-1].recv(TIMEOUT)))
    return clients


@pytest.mark.timeout(120)
@pytest.mark.parametrize("processes", [None, 2])
def test_the_admin_port_fails_the_health_check_while_the_server_drains(
    serve_cli: Any, tmp_path: Path, processes: Optional[int],
) -> None:
    release = tmp_path / "release"
    (tmp_path / "slowapp.py").write_text(f"RELEASE = {str(release)!r}\n" + SLOW_TO_CLOSE_HANDLER)
    server = serve_cli(
        *(["--processes", str(processes)] if processes else []), "--host", HOST, "--port", "0",
        "--health", "/healthz", "--metrics", "/metrics", "--admin-port", "0", "slowapp:handler",
    )
    admin = admin_port(server)
    clients = one_client_per_worker(f"ws://{HOST}:{server.port}/", processes or 1)
    try:
        assert http_get(admin, "/healthz") == (200, "OK\n")
        server.process.send_signal(signal.SIGTERM)
        for websocket in clients:  # every process began to close
            with pytest.raises(syncws.ConnectionClosed) as closed:
                websocket.recv(TIMEOUT)
            assert closed.value.code == 1001
        # Draining (the handlers wait for the release file): not ready,
        # whichever process answers; the metrics still answer.
        assert wait_for(lambda: http_get(admin, "/healthz") == (503, "draining\n"), TIMEOUT), http_get(admin, "/healthz")
        for _ in range(10):
            assert http_get(admin, "/healthz") == (503, "draining\n")
        status, text = http_get(admin, "/metrics")
        assert status == 200 and "syncws_connections_open" in text
        assert server.process.poll() is None
    finally:
        release.touch()
        for websocket in clients:
            websocket.close()
    assert server.process.wait(TIMEOUT) == 0, server.stderr()


def test_processes_refuse_an_admin_port_already_taken(tmp_path: Path) -> None:
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "syncws", "serve", "--processes", "2", "--port", "0", "--health", "/healthz",
             "--admin-port", str(port)],
            capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=TIMEOUT,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"python -m syncws: could not listen on 127.0.0.1:{port}: Address already in use")
    assert result.stdout == ""


def test_the_admin_port_may_share_a_number_with_the_port_on_another_address() -> None:
    args = parse("--health", "/h", "--host", "127.0.0.1", "--port", "9100", "--admin-host", "10.1.2.3",
                 "--admin-port", "9100")
    assert "process_request" not in serveconfig.server_options(args)
    assert "process_request" not in serveconfig.server_options(parse("--health", "/h", "--port", "0", "--admin-port", "0"))


def test_processes_refuse_the_websocket_port_as_the_admin_port(tmp_path: Path) -> None:
    """Workers listen on both with SO_REUSEPORT: one port, and the kernel gave the admin listener WebSocket clients."""
    with socket.create_server((HOST, 0)) as free:
        port = free.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "syncws", "serve", "--processes", "2", "--port", str(port), "--health", "/healthz",
         "--admin-port", str(port)],
        capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert f"--admin-port {port} is --port's" in result.stderr
    assert result.stdout == ""


@pytest.mark.timeout(60)
def test_a_websocket_upgrade_on_the_health_path_reaches_the_handler(serve_cli: Any) -> None:
    """``--health /`` mustn't take ``/`` away from the WebSocket clients."""
    server = serve_cli("--host", HOST, "--port", "0", "--health", "/", "--metrics", "/metrics")
    assert server.get("/").status == 200
    for path in ("/", "/metrics"):
        with syncws.connect(f"ws://{HOST}:{server.port}{path}", open_timeout=TIMEOUT) as websocket:
            websocket.send("still echoed")
            assert websocket.recv(timeout=TIMEOUT) == "still echoed"


def test_the_applications_hook_comes_after_health_and_metrics() -> None:
    asked: List[str] = []

    def page(path: str, headers: Any) -> Any:
        asked.append(path)
        return (200, [], b"page") if path == "/" else None

    hook = serveconfig.routes("/healthz", "/metrics", lambda: "metrics\n", page)
    assert hook is not None
    headers = Headers()
    assert hook("/healthz", headers)[2] == b"OK\n"  # type: ignore[index]
    assert hook("/metrics?x=1", headers)[2] == b"metrics\n"  # type: ignore[index]
    assert hook("/?q=1", headers) is None and hook("/", headers) == (200, [], b"page")
    assert asked == ["/?q=1", "/"]  # with its query, as serve() gives it
    assert serveconfig.routes(None, None, then=page) is page


@pytest.mark.timeout(60)
def test_process_request_option(serve_cli: Any, tmp_path: Path) -> None:
    (tmp_path / "pageapp.py").write_text(
        "def pages(path, headers):\n"
        "    return (200, [('Content-Type', 'text/plain')], b'a page\\n') if path == '/page' else None\n"
    )
    server = serve_cli("--port", "0", "--health", "/healthz", "--process-request", "pageapp:pages")
    assert server.text("/page") == "a page\n"
    assert server.text("/healthz") == "OK\n"
    with syncws.connect(f"ws://{HOST}:{server.port}/ws") as websocket:  # not a page: WebSocket
        websocket.send("echo")
        assert websocket.recv(TIMEOUT) == "echo"


def test_a_process_request_that_does_not_import(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncws", "serve", "--port", "0", "--process-request", "nomodule_xyz:pages"],
        capture_output=True, text=True, env=cli_env(), cwd=tmp_path, timeout=TIMEOUT,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("python -m syncws: --process-request 'nomodule_xyz:pages': cannot import")
