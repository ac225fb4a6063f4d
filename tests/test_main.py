"""Tests for ``python -m syncws``: the interactive client, ``serve`` and ``demo``.

The command line runs in subprocesses, as users run it, on 127.0.0.1 only.
Servers that need to see what the client did (close codes, messages) run in
this process with :func:`syncws.serve` and hand what they saw to the test
through a queue. Every wait has a timeout and every process is killed at
teardown, so a hanging CLI fails its test instead of the run.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional

import pytest

import syncws
from syncws.__main__ import format_message

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 20  # seconds for any one step; generous for a loaded CI machine

posix_only = pytest.mark.skipif(os.name != "posix", reason="sends POSIX signals")


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"  # so non-ASCII output doesn't depend on the locale
    return env


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run ``python -m syncws args`` to completion (killed after TIMEOUT)."""
    return subprocess.run(
        [sys.executable, "-m", "syncws", *args],
        input=stdin, capture_output=True, text=True, encoding="utf-8",
        cwd=REPO, env=cli_env(), timeout=TIMEOUT,
    )


def _default_sigint() -> None:
    # A shell that starts the test run in the background ignores SIGINT in
    # its children; the CLI must see Ctrl-C as a terminal would send it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CLI:
    """A running ``python -m syncws``, its stdout and stderr read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "syncws", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", cwd=REPO, env=cli_env(),
            preexec_fn=_default_sigint if os.name == "posix" else None,
        )
        self.stdout = _Lines(self.proc.stdout)
        self.stderr = _Lines(self.proc.stderr)

    def read_line(self) -> str:
        """The next line of stdout."""
        return self.stdout.next_line()

    def send_line(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self) -> int:
        return self.proc.wait(TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass  # a pipe the child left broken


class _Lines:
    """The lines of a child's output stream, read by a thread of its own."""

    def __init__(self, stream: Any) -> None:
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self.seen: List[str] = []
        self._stream = stream
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self._stream:
            for line in self._stream:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next_line(self) -> str:
        """The next line; fails at the end of the stream or after TIMEOUT."""
        try:
            line = self._queue.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no line within {TIMEOUT} s; lines so far: {self.seen}")
        if line is None:
            pytest.fail(f"the stream ended; lines so far: {self.seen}")
        self.seen.append(line)
        return line

    def wait_for(self, text: str) -> str:
        """Skip lines until one contains ``text``; return it."""
        while True:
            line = self.next_line()
            if text in line:
                return line

    def rest(self) -> str:
        """Every line not read yet, up to the end of the stream."""
        lines = []
        while True:
            line = self._queue.get(timeout=TIMEOUT)
            if line is None:
                return "".join(f"{line}\n" for line in lines)
            lines.append(line)


@pytest.fixture
def cli() -> Iterator[Any]:
    """Start ``python -m syncws args``; every process is killed at teardown."""
    started: List[CLI] = []

    def start(*args: str) -> CLI:
        process = CLI(*args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def server() -> Iterator[Any]:
    """An in-process syncws server whose handler reports to ``seen``.

    ``start(handler)`` returns the URI; the handler gets the connection and
    the ``seen`` queue.
    """
    servers: List[syncws.WebSocketServer] = []
    seen: "queue.Queue[Any]" = queue.Queue()

    def start(handler: Any) -> str:
        srv = syncws.serve(lambda ws: handler(ws, seen), HOST, 0)
        servers.append(srv)
        return f"ws://{HOST}:{srv.port}/"

    start.seen = seen  # type: ignore[attr-defined]
    yield start
    for srv in servers:
        srv.close()
        srv.wait_closed(TIMEOUT)


def record(ws: syncws.WebSocketServerProtocol, seen: "queue.Queue[Any]") -> None:
    """A handler that reports each message, then the close code it received."""
    for message in ws:
        seen.put(message)
    seen.put(("closed", ws.close_code, ws.close_reason))


def echo_and_record(ws: syncws.WebSocketServerProtocol, seen: "queue.Queue[Any]") -> None:
    for message in ws:
        ws.send(message)
    seen.put(("closed", ws.close_code, ws.close_reason))


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connecting is refused: bound, not listening."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


# -- output format ----------------------------------------------------------------


@pytest.mark.parametrize(
    "message, shown",
    [
        ("hello", "hello"),
        ("", ""),
        ("two\nlines\tand tab", "two\nlines\tand tab"),
        ("\x1b[31mred\r\x07\x7f\x9b", "\\x1b[31mred\\x0d\\x07\\x7f\\x9b"),
        ("é€😀", "é€😀"),
        (b"", "<binary 0 bytes>"),
        (b"\xff", "<binary 1 byte> ff"),
        (bytes(range(16)), "<binary 16 bytes> 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"),
        (bytes(range(17)), "<binary 17 bytes> 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f ..."),
    ],
)
def test_format_message(message: Any, shown: str) -> None:
    assert format_message(message) == shown


# -- arguments ----------------------------------------------------------------------


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"syncws {syncws.__version__}"


def test_help_names_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for usage in ("URI", "serve [-h] [--host HOST] [--port PORT]", "demo"):
        assert usage in result.stdout


def test_no_uri_is_a_usage_error() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "required: URI" in result.stderr


# -- demo ---------------------------------------------------------------------------


def test_demo() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "echo server listening on ws://127.0.0.1:" in out
    assert "negotiated extension: permessage-deflate" in out
    assert "< Hello, syncws!" in out
    assert "< <binary 8 bytes> 00 01 02 03 04 05 06 07" in out
    assert "< a fragmented message in three pieces" in out
    assert "< syncws compresses repetitive text." in out
    assert "< pong, latency" in out
    assert "client closed: 1000 (OK)" in out
    assert out.rstrip().endswith("server closed")
    assert "Traceback" not in result.stderr


# -- the interactive client ------------------------------------------------------------


def test_client_with_serve_end_to_end(cli: Any) -> None:
    server = cli("serve", "--port", "0")
    banner = server.read_line()
    assert banner.startswith("serving on ws://127.0.0.1:") and banner.endswith("/")
    uri = banner[len("serving on "):]
    assert int(uri.rsplit(":", 1)[1].rstrip("/")) > 0  # the real port, not 0

    client = cli(uri)
    client.send_line("hello")
    assert client.read_line() == "< hello"
    client.send_line("wörld 😀")
    assert client.read_line() == "< wörld 😀"
    client.close_stdin()
    assert client.wait() == 0
    assert client.stdout.rest() == ""
    assert "Traceback" not in client.stderr.rest()

    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert "server closed" in server.stderr.rest()


def test_client_sends_every_line_then_closes_with_1000_at_eof(server: Any) -> None:
    uri = server(record)
    # All of stdin at once, a CRLF line and a last line without a newline.
    result = run_cli(uri, stdin="first\nsecond\r\n\nlast")
    assert result.returncode == 0, result.stderr
    received = [server.seen.get(timeout=TIMEOUT) for _ in range(5)]
    assert received == ["first", "second", "", "last", ("closed", 1000, "")]
    assert result.stderr == ""


def test_client_closes_with_1000_on_empty_stdin(server: Any) -> None:
    uri = server(record)
    result = run_cli(uri, stdin="")
    assert result.returncode == 0, result.stderr
    assert server.seen.get(timeout=TIMEOUT) == ("closed", 1000, "")


@posix_only
def test_client_closes_with_1000_on_ctrl_c(server: Any, cli: Any) -> None:
    uri = server(echo_and_record)
    client = cli(uri)
    client.send_line("ready?")
    assert client.read_line() == "< ready?"  # connected and in its loop
    client.proc.send_signal(signal.SIGINT)
    assert client.wait() == 0
    assert server.seen.get(timeout=TIMEOUT) == ("closed", 1000, "")
    assert "Traceback" not in client.stderr.rest()


def test_client_reports_the_servers_close(server: Any, cli: Any) -> None:
    closing = threading.Event()

    def handler(ws: syncws.WebSocketServerProtocol, seen: Any) -> None:
        ws.send(bytes(range(20)))
        ws.send("\x1b[2Jplain")
        closing.wait(TIMEOUT)
        ws.close(4000, "bye")

    uri = server(handler)
    client = cli(uri)  # its stdin stays open: the server closes first
    assert client.read_line() == "< <binary 20 bytes> 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f ..."
    assert client.read_line() == "< \\x1b[2Jplain"
    closing.set()
    assert client.wait() == 1
    assert client.stderr.rest().strip() == "connection closed by the server: 4000 (private use) bye"


@pytest.mark.parametrize(
    "code, reason, status, shown",
    [
        (1000, "", 0, "connection closed by the server: 1000 (OK)"),
        (1001, "restarting", 0, "connection closed by the server: 1001 (going away) restarting"),
        (1011, "oops", 1, "connection closed by the server: 1011 (internal error) oops"),
    ],
)
def test_client_exit_status_follows_the_servers_close_code(
    server: Any, cli: Any, code: int, reason: str, status: int, shown: str
) -> None:
    uri = server(lambda ws, seen: ws.close(code, reason))
    client = cli(uri)
    assert client.wait() == status
    assert client.stderr.rest().strip() == shown


def test_client_prints_no_control_sequence_the_server_sent(server: Any, cli: Any) -> None:
    # OSC 0 retitles the terminal, CSI 2J clears it, U+202E reverses what
    # follows; a line feed in a close reason would fake a line of output.
    closing = threading.Event()

    def handler(ws: syncws.WebSocketServerProtocol, seen: Any) -> None:
        ws.send("\x1b]0;pwned\x07two\nlines\u202etxt.exe\x9b2J")
        closing.wait(TIMEOUT)
        ws.close(4000, "bye\nconnection closed by the server: 1000 (OK)\x1b[2J")

    uri = server(handler)
    client = cli(uri)
    assert client.read_line() == "< \\x1b]0;pwned\\x07two"  # messages keep their line feeds
    assert client.read_line() == "lines\\u202etxt.exe\\x9b2J"
    closing.set()
    assert client.wait() == 1
    assert client.stderr.rest() == (
        "connection closed by the server: 4000 (private use) "
        "bye\\x0aconnection closed by the server: 1000 (OK)\\x1b[2J\n"
    )
    assert client.stdout.rest() == ""


def test_client_shows_a_refusals_body_escaped() -> None:
    body = b"\x1b]0;pwned\x07go away\r\n\x1b[2J"
    srv = syncws.serve(lambda ws: None, HOST, 0, process_request=lambda path, headers: (403, [], body))
    uri = f"ws://{HOST}:{srv.port}/private?token=abc"
    try:
        result = run_cli(uri)
    finally:
        srv.close()
        srv.wait_closed(TIMEOUT)
    assert result.returncode == 1
    assert result.stderr == (
        f"python -m syncws: could not connect to ws://{HOST}:{srv.port}/private?token=[redacted]: "
        "server rejected WebSocket connection: HTTP 403: \\x1b]0;pwned\\x07go away\\x0d\\x0a\\x1b[2J\n"
    )


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["http://example.com/", "localhost:8765", "ws://"])
def test_client_bad_uri(uri: str) -> None:
    result = run_cli(uri)
    assert result.returncode == 1
    assert result.stderr.startswith("python -m syncws: ")
    assert "isn't a valid WebSocket URI" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_client_connection_refused() -> None:
    with refused_port() as port:
        result = run_cli(f"ws://{HOST}:{port}/")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"python -m syncws: could not connect to ws://{HOST}:{port}/: connection refused"
    )


def test_client_handshake_refused() -> None:
    srv = syncws.serve(lambda ws: None, HOST, 0, process_request=lambda path, headers: (404, [], b"no\n"))
    uri = f"ws://{HOST}:{srv.port}/missing"
    try:
        result = run_cli(uri)
    finally:
        srv.close()
        srv.wait_closed(TIMEOUT)
    assert result.returncode == 1
    assert f"could not connect to {uri}: server rejected WebSocket connection: HTTP 404" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(f"python -m syncws: could not listen on {HOST}:{port}: ")
    assert "Traceback" not in result.stderr


# -- the echo server ----------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_closes_connections_with_1001_on_ctrl_c(cli: Any, signum: int) -> None:
    server = cli("serve", "--port", "0")
    uri = server.read_line()[len("serving on "):]
    with syncws.connect(uri + "chat") as ws:
        # The server logs from the handler: the connection is fully open on
        # its side too. (No message is echoed first: the signal must not
        # race with a send, see the report on server.close().)
        server.stderr.wait_for("connected, path /chat")
        server.proc.send_signal(signum)
        with pytest.raises(syncws.ConnectionClosedOK) as raised:
            ws.recv(TIMEOUT)
        assert raised.value.code == 1001
    assert server.wait() == 0
    assert "disconnected: 1001 (going away)" in server.stderr.wait_for("disconnected")
    assert server.stderr.rest().endswith("server closed\n")


def test_serve_host_option(cli: Any) -> None:
    server = cli("serve", "--host", "127.0.0.1", "--port", "0")
    uri = server.read_line()[len("serving on "):]
    with syncws.connect(uri, compression=None) as ws:
        ws.send(b"\x00\xff")
        assert ws.recv(TIMEOUT) == b"\x00\xff"


def test_client_reports_a_lost_connection(raw_serve: Any, cli: Any) -> None:
    uri = raw_serve(lambda conn: conn.close())  # handshake, then TCP closes: no close frame
    client = cli(uri)
    assert client.wait() == 1
    assert client.stderr.rest().strip() == "connection lost: 1006 (abnormal closure) TCP closed without a close frame"


# -- client options and piped input ------------------------------------------------------


def echo_websockets(ws: Any) -> None:
    for message in ws:
        ws.send(message)


@pytest.mark.parametrize("peer", ["syncws", "websockets"])
def test_piped_input_prints_the_echoes_before_closing(server: Any, ws_serve: Any, peer: str) -> None:
    # printf 'a\nb' | python -m syncws URI: once closed before the echoes came.
    uri = server(echo_and_record) if peer == "syncws" else ws_serve(echo_websockets)
    result = run_cli(uri, stdin="a\nb")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "< a\n< b\n"
    if peer == "syncws":
        assert server.seen.get(timeout=TIMEOUT) == ("closed", 1000, "")


def test_piped_input_gives_up_on_a_silent_server(server: Any) -> None:
    uri = server(record)
    result = run_cli("--reply-timeout", "0.3", uri, stdin="one\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert [server.seen.get(timeout=TIMEOUT) for _ in range(3)] == ["one", "two", ("closed", 1000, "")]


def test_header_origin_and_subprotocol_options() -> None:
    seen: "queue.Queue[Any]" = queue.Queue()

    def handler(ws: Any) -> None:
        seen.put((ws.request_headers, ws.subprotocol))
        for _ in ws:
            ws.send(f"subprotocol {ws.subprotocol}")

    with syncws.serve(handler, HOST, 0, subprotocols=["chat.v2", "chat.v1"]) as srv:
        result = run_cli(
            "--header", "X-Token: abc 123", "--header", "X-Other:two", "--origin", "https://app.example",
            "--subprotocol", "chat.v1", "--subprotocol", "chat.v2", f"ws://{HOST}:{srv.port}/", stdin="which?\n",
        )
        assert result.returncode == 0, result.stderr
        headers, subprotocol = seen.get(timeout=TIMEOUT)
    assert headers["X-Token"] == "abc 123" and headers["X-Other"] == "two"
    assert headers["Origin"] == "https://app.example"
    assert headers["Sec-WebSocket-Protocol"] == "chat.v1, chat.v2"
    assert subprotocol == "chat.v2"
    assert result.stdout == "< subprotocol chat.v2\n"


def test_bad_header_option_is_a_usage_error() -> None:
    result = run_cli("--header", "no colon here", "ws://127.0.0.1:9/")
    assert result.returncode == 2
    assert "expected 'Name: value'" in result.stderr


def test_insecure_skips_the_certificate_check_loudly() -> None:
    from conftest import CERT_FILE, KEY_FILE
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT_FILE, KEY_FILE)
    with syncws.serve(lambda ws: [ws.send(m) for m in ws], HOST, 0, ssl=context) as srv:
        uri = f"wss://localhost:{srv.port}/"
        refused = run_cli(uri, stdin="x\n")
        assert refused.returncode == 1
        assert "certificate verify failed" in refused.stderr
        result = run_cli("--insecure", uri, stdin="hello over tls\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "< hello over tls\n"
    assert "WARNING: --insecure" in result.stderr and "NOT checked" in result.stderr


def test_insecure_with_ws_says_it_does_nothing(server: Any) -> None:
    result = run_cli("--insecure", server(echo_and_record), stdin="")
    assert result.returncode == 0
    assert "does nothing for a ws:// URI" in result.stderr
