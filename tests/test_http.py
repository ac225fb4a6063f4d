from __future__ import annotations

import http
import http.client
import io
from typing import Callable, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncws.exceptions import HeadersTooLarge, InvalidMessage
from syncws.http import (
    MAX_HEADERS,
    MAX_LINE,
    Headers,
    MultipleValuesError,
    Request,
    Response,
    read_request,
    read_response,
    serialize_request,
    serialize_response,
)


def reader(data: bytes) -> Callable[[int], bytes]:
    return io.BytesIO(data).readline


# Headers


def test_headers_lookup_ignores_case() -> None:
    headers = Headers([("Content-Type", "text/plain")])
    assert headers["content-type"] == "text/plain"
    assert headers["CONTENT-TYPE"] == "text/plain"
    assert "content-TYPE" in headers
    assert headers.get("Content-type") == "text/plain"


def test_headers_missing() -> None:
    headers = Headers()
    with pytest.raises(KeyError):
        headers["Host"]
    assert headers.get("Host") is None
    assert headers.get("Host", "default") == "default"
    assert headers.get_all("Host") == []
    assert headers.get_joined("Host") is None
    assert "Host" not in headers
    assert 42 not in headers


def test_headers_multiple_values() -> None:
    headers = Headers([("Connection", "Upgrade"), ("X", "1"), ("connection", "close")])
    with pytest.raises(MultipleValuesError) as excinfo:
        headers["Connection"]
    assert isinstance(excinfo.value, KeyError)
    assert excinfo.value.count == 2
    assert str(excinfo.value) == (
        "'Connection' header appears 2 times; use get_all() or get_joined()"
    )
    with pytest.raises(MultipleValuesError):
        headers.get("Connection")
    assert headers.get_all("CONNECTION") == ["Upgrade", "close"]
    assert headers.get_joined("connection") == "Upgrade, close"


def test_headers_setitem_appends() -> None:
    headers = Headers()
    headers["A"] = "1"
    headers["a"] = "2"
    assert headers.items() == [("A", "1"), ("a", "2")]


def test_headers_delitem_removes_every_value() -> None:
    headers = Headers([("A", "1"), ("B", "2"), ("a", "3")])
    del headers["A"]
    assert headers.items() == [("B", "2")]
    with pytest.raises(KeyError):
        del headers["A"]


def test_headers_iter_len_items() -> None:
    headers = Headers([("Host", "h"), ("X-A", "1"), ("x-a", "2"), ("Y", "3")])
    assert list(headers) == ["Host", "X-A", "Y"]
    assert len(headers) == 3
    assert headers.items() == [("Host", "h"), ("X-A", "1"), ("x-a", "2"), ("Y", "3")]
    assert headers.raw_items() == headers.items()
    assert not Headers()


def test_headers_items_is_a_copy() -> None:
    headers = Headers([("A", "1")])
    headers.items().append(("B", "2"))
    assert headers.items() == [("A", "1")]


def test_headers_update() -> None:
    headers = Headers({"A": "1"})
    headers.update([("B", "2")])
    headers.update({"a": "3"})
    headers.update(Headers([("C", "4"), ("c", "5")]))
    assert headers.items() == [
        ("A", "1"),
        ("B", "2"),
        ("a", "3"),
        ("C", "4"),
        ("c", "5"),
    ]


def test_headers_copy_and_clear() -> None:
    headers = Headers([("A", "1")])
    copy = headers.copy()
    headers.clear()
    assert headers.items() == []
    assert copy.items() == [("A", "1")]


def test_headers_eq() -> None:
    headers = Headers([("A", "1"), ("B", "2"), ("A", "3")])
    assert headers == Headers([("b", "2"), ("a", "1"), ("a", "3")])
    assert headers != Headers([("A", "3"), ("B", "2"), ("A", "1")])
    assert headers != Headers([("A", "1"), ("B", "2")])
    assert Headers([("A", "x")]) != Headers([("A", "X")])
    assert Headers([("A", "1")]) != {"A": "1"}


def test_headers_repr_and_str() -> None:
    headers = Headers([("Host", "h"), ("X", "1")])
    assert repr(headers) == "Headers([('Host', 'h'), ('X', '1')])"
    assert str(headers) == "Host: h\r\nX: 1\r\n\r\n"
    assert str(Headers()) == "\r\n"


# read_request


def test_read_request() -> None:
    data = (
        b"GET /chat?room=1 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"Upgrade:websocket\r\n"
        b"Connection: \t Upgrade \t\r\n"
        b"Empty:\r\n"
        b"\r\n"
        b"frame bytes"
    )
    stream = io.BytesIO(data)
    request = read_request(stream.readline)
    assert request == Request(
        "GET",
        "/chat?room=1",
        Headers(
            [
                ("Host", "example.com"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Empty", ""),
            ]
        ),
    )
    assert request.headers.items()[0] == ("Host", "example.com")
    # Nothing after the head was consumed.
    assert stream.read() == b"frame bytes"


@pytest.mark.parametrize("method", ["POST", "HEAD", "M-SEARCH"])
def test_read_request_returns_other_methods(method: str) -> None:
    request = read_request(reader(f"{method} / HTTP/1.1\r\n\r\n".encode()))
    assert request.method == method


def test_read_request_accepts_later_minor_versions() -> None:
    assert read_request(reader(b"GET / HTTP/1.2\r\n\r\n")).path == "/"


def test_read_request_decodes_obs_text_as_latin1() -> None:
    request = read_request(reader(b"GET / HTTP/1.1\r\nX: caf\xe9\r\n\r\n"))
    assert request.headers["X"] == "café"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"GET /\r\n\r\n", "request line isn't 'METHOD target HTTP/1.1': 'GET /'"),
        (b"GET  / HTTP/1.1\r\n\r\n", "request line isn't 'METHOD target HTTP/1.1'"),
        (b"GET / HTTP/1.1 x\r\n\r\n", "request line isn't 'METHOD target HTTP/1.1'"),
        (b"\r\n", "request line isn't 'METHOD target HTTP/1.1': ''"),
        (b"G(T / HTTP/1.1\r\n\r\n", "invalid HTTP method: 'G(T'"),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", "invalid request target: '/\\x7f'"),
        (b"GET /\xe9 HTTP/1.1\r\n\r\n", "invalid request target: '/é'"),
        (b"GET / HTTP/1.0\r\n\r\n", "unsupported HTTP version HTTP/1.0: WebSocket"),
        (b"GET / HTTP/2.0\r\n\r\n", "unsupported HTTP version HTTP/2.0"),
        (b"GET / HTTP/1.10\r\n\r\n", "invalid HTTP version: 'HTTP/1.10'"),
        (b"GET / FOO/1.1\r\n\r\n", "invalid HTTP version: 'FOO/1.1'"),
        (b"GET / HTTP/1.1\n\r\n", "ends with LF instead of CRLF: 'GET / HTTP/1.1\\x0a'"),
        (b"GET / HTTP/1.1\r\nHost: h\n\r\n", "ends with LF instead of CRLF"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\n\tHost: h\r\n\r\n", "header line starts with whitespace"),
        (b"GET / HTTP/1.1\r\nHost h\r\n\r\n", "header line has no colon: 'Host h'"),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", "invalid header name: 'Host '"),
        (b"GET / HTTP/1.1\r\n: h\r\n\r\n", "invalid header name: ''"),
        (b"GET / HTTP/1.1\r\nH\xe9: h\r\n\r\n", "invalid header name: 'Hé'"),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "invalid value of X header: 'a\\x00"),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", "invalid value of X header: 'a\\x0db'"),
        (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", "invalid value of X header"),
    ],
)
def test_read_request_malformed(data: bytes, message: str) -> None:
    with pytest.raises(InvalidMessage) as excinfo:
        read_request(reader(data))
    assert type(excinfo.value) is InvalidMessage
    assert message in str(excinfo.value)


def test_error_messages_cut_long_values() -> None:
    with pytest.raises(InvalidMessage) as excinfo:
        read_request(reader(b"GET / HTTP/1.1\r\nX: \x00" + b"a" * 500 + b"\r\n\r\n"))
    assert str(excinfo.value) == (
        "invalid value of X header: '\\x00" + "a" * 79 + "'..."
    )


@pytest.mark.parametrize(
    "data, message",
    [
        (b"GET /feed?access_token=tok123 HTTP/1.1 x\r\n\r\n",
         "request line isn't 'METHOD target HTTP/1.1': 'GET /feed?access_token=[redacted]'"),
        (b"GET /feed?access_token=tok123\x7f HTTP/1.1\r\n\r\n",
         "invalid request target: '/feed?access_token=[redacted]'"),
        (b"GET /?access_token=tok123 HTTP/1.1\n\r\n",
         "ends with LF instead of CRLF: 'GET /?access_token=[redacted]'"),
        (b"GET / HTTP/1.1\r\nAuthorization: Bearer tok123\n\r\n",
         "ends with LF instead of CRLF: 'Authorization: [redacted]'"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n X-Api-Key: tok123\r\n\r\n",
         "obs-fold, obsolete line folding, isn't supported): ' X-Api-Key: [redacted]'"),
        (b"GET / HTTP/1.1\r\nX-Auth-Token: tok123\x01\r\n\r\n",
         "invalid value of X-Auth-Token header: [redacted]"),
        (b"GET / HTTP/1.1\r\nReferer: http://a/?access_token=tok123\x01\r\n\r\n",
         "invalid value of Referer header: 'http://a/?access_token=[redacted]'"),
    ],
)
def test_errors_about_a_malformed_request_leave_secrets_out(data: bytes, message: str) -> None:
    # The server logs why it refused a request: a client's token in its
    # target or headers must not end up in that log.
    with pytest.raises(InvalidMessage) as excinfo:
        read_request(reader(data))
    assert message in str(excinfo.value)
    assert "tok123" not in str(excinfo.value)


def test_read_request_empty_stream() -> None:
    with pytest.raises(InvalidMessage) as excinfo:
        read_request(reader(b""))
    assert str(excinfo.value) == "connection closed before sending an HTTP request"
    assert isinstance(excinfo.value.__cause__, EOFError)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HT",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r",
    ],
)
def test_read_request_premature_end(data: bytes) -> None:
    with pytest.raises(InvalidMessage) as excinfo:
        read_request(reader(data))
    assert str(excinfo.value) == "connection closed while reading HTTP request head"
    assert isinstance(excinfo.value.__cause__, EOFError)


def test_read_request_line_limit() -> None:
    ok = b"GET /" + b"a" * 95 + b" HTTP/1.1\r\n\r\n"  # a 109-byte request line
    assert read_request(reader(ok), max_line=109).path == "/" + "a" * 95
    with pytest.raises(HeadersTooLarge) as excinfo:
        read_request(reader(ok), max_line=108)
    assert excinfo.value.limit == 108
    assert str(excinfo.value) == (
        "a line of the HTTP request head is longer than 108 bytes"
    )


def test_read_request_header_line_limit() -> None:
    data = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_LINE + b"\r\n\r\n"
    with pytest.raises(HeadersTooLarge) as excinfo:
        read_request(reader(data))
    assert excinfo.value.limit == MAX_LINE == 8192
    assert "longer than 8192 bytes" in str(excinfo.value)


def test_read_request_header_count_limit() -> None:
    def request(count: int) -> bytes:
        return b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * count + b"\r\n"

    assert len(read_request(reader(request(MAX_HEADERS))).headers.items()) == 128
    with pytest.raises(HeadersTooLarge) as excinfo:
        read_request(reader(request(MAX_HEADERS + 1)))
    assert excinfo.value.limit == MAX_HEADERS
    assert str(excinfo.value) == "HTTP request head has more than 128 headers"
    with pytest.raises(HeadersTooLarge, match="more than 2 headers"):
        read_request(reader(request(3)), max_headers=2)


def test_read_request_lets_io_errors_through() -> None:
    def read_line(limit: int) -> bytes:
        raise TimeoutError("timed out")

    with pytest.raises(TimeoutError):
        read_request(read_line)


# read_response


@pytest.mark.parametrize(
    "status_line, status_code, reason",
    [
        (b"HTTP/1.1 101 Switching Protocols", 101, "Switching Protocols"),
        (b"HTTP/1.1 404 Not  Found ", 404, "Not  Found "),
        (b"HTTP/1.1 200 ", 200, ""),
        (b"HTTP/1.1 200", 200, ""),
        (b"HTTP/1.1 599 Caf\xe9", 599, "Café"),
        (b"HTTP/1.9 100 Continue", 100, "Continue"),
    ],
)
def test_read_response(status_line: bytes, status_code: int, reason: str) -> None:
    data = status_line + b"\r\nUpgrade: websocket\r\n\r\n"
    assert read_response(reader(data)) == Response(
        status_code, reason, Headers([("Upgrade", "websocket")])
    )


@pytest.mark.parametrize(
    "data, message",
    [
        (b"HTTP/1.0 101 OK\r\n\r\n", "unsupported HTTP version HTTP/1.0"),
        (b"HTTP/2 101 OK\r\n\r\n", "invalid HTTP version: 'HTTP/2'"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "invalid HTTP version: 'SSH-2.0-OpenSSH'"),
        (b"HTTP/1.1\r\n\r\n", "invalid HTTP status code: ''"),
        (b"HTTP/1.1  101 OK\r\n\r\n", "invalid HTTP status code: ''"),
        (b"HTTP/1.1 1O1 OK\r\n\r\n", "invalid HTTP status code: '1O1'"),
        (b"HTTP/1.1 1010 OK\r\n\r\n", "invalid HTTP status code: '1010'"),
        (b"HTTP/1.1 099 OK\r\n\r\n", "HTTP status code 99 isn't in 100-599"),
        (b"HTTP/1.1 600 OK\r\n\r\n", "HTTP status code 600 isn't in 100-599"),
        (b"HTTP/1.1 101 O\x00K\r\n\r\n", "invalid HTTP reason phrase: 'O\\x00K'"),
        (b"HTTP/1.1 101 OK\r\nX\r\n\r\n", "header line has no colon: 'X'"),
        (b"HTTP/1.1 101 OK\r\nX: 1\r\n  2\r\n\r\n", "obs-fold"),
        (b"HTTP/1.1 101 OK\n\n", "ends with LF instead of CRLF"),
    ],
)
def test_read_response_malformed(data: bytes, message: str) -> None:
    with pytest.raises(InvalidMessage) as excinfo:
        read_response(reader(data))
    assert type(excinfo.value) is InvalidMessage
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "connection closed before sending an HTTP response"),
        (
            b"HTTP/1.1 101 OK\r\nUp",
            "connection closed while reading HTTP response head",
        ),
    ],
)
def test_read_response_premature_end(data: bytes, message: str) -> None:
    with pytest.raises(InvalidMessage) as excinfo:
        read_response(reader(data))
    assert str(excinfo.value) == message
    assert isinstance(excinfo.value.__cause__, EOFError)


def test_read_response_limits() -> None:
    data = b"HTTP/1.1 101 OK\r\n" + b"X: 1\r\n" * 3 + b"\r\n"
    with pytest.raises(HeadersTooLarge) as excinfo:
        read_response(reader(data), max_headers=2)
    assert str(excinfo.value) == "HTTP response head has more than 2 headers"
    with pytest.raises(HeadersTooLarge) as excinfo:
        read_response(reader(data), max_line=10)
    assert excinfo.value.limit == 10
    assert str(excinfo.value) == (
        "a line of the HTTP response head is longer than 10 bytes"
    )


# read_request and read_response, with the head taken whole


class _Chunks:
    """A socket stand-in that returns ``data`` in one recv (cut to its size), then EOF."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, n: int) -> bytes:
        data, self.data = self.data[:n], self.data[n:]
        return data

    def recv_into(self, view: memoryview) -> int:
        raise AssertionError("a head is read with recv")


def _outcome(read: Callable[[], object]) -> object:
    try:
        head = read()
    except Exception as exc:
        return type(exc), str(exc), type(exc.__cause__)
    return head, head.headers.items()  # type: ignore[attr-defined]


_HEADS = [
    b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nX: 1\r\nx: 2\r\n\r\n\x81",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\rX: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
    b"GET / HT\r\n\r\n",
    b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 3 + b"\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"a" * 60 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n",
    b"",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 101\r\nUpgrade: websocket\r\n\n\r\n",
    b"HTTP/1.1 600 OK\r\n\r\n",
]


@pytest.mark.parametrize("data", _HEADS)
@pytest.mark.parametrize("read", [read_request, read_response])
@pytest.mark.parametrize("limits", [{}, {"max_headers": 2}, {"max_line": 40}])
def test_a_head_taken_whole_reads_as_line_by_line(
    data: bytes, read: Callable[..., object], limits: dict
) -> None:
    from syncws.headreader import HeadReader

    stream = HeadReader(_Chunks(data))  # type: ignore[arg-type]
    whole = _outcome(lambda: read(stream.read_line, read_head=stream.read_head, **limits))
    assert whole == _outcome(lambda: read(reader(data), **limits))
    if not isinstance(whole[0], type):  # read: what follows the head stays
        assert stream.take_buffered() == data[data.index(b"\r\n\r\n") + 4 :]


# serialize_request and serialize_response


def test_serialize_request() -> None:
    head = serialize_request("/chat?a=1", [("Host", "h"), ("Upgrade", "websocket")])
    assert head == b"GET /chat?a=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"
    assert serialize_request("/", Headers()) == b"GET / HTTP/1.1\r\n\r\n"


def test_serialize_response() -> None:
    assert serialize_response(101, {"Upgrade": "websocket"}) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    )
    assert serialize_response(http.HTTPStatus.NOT_FOUND, []) == (
        b"HTTP/1.1 404 Not Found\r\n\r\n"
    )
    assert serialize_response(599, []) == b"HTTP/1.1 599 \r\n\r\n"
    assert serialize_response(200, [("X", "caf\xe9")], "Fine") == (
        b"HTTP/1.1 200 Fine\r\nX: caf\xe9\r\n\r\n"
    )


@pytest.mark.parametrize(
    "headers, message",
    [
        ([("X", "a\r\nSet-Cookie: x")], "value of X header contains CR or LF"),
        ([("X", "a\nb")], "response splitting"),
        ([("X", "a\x00b")], "value of X header contains a control character"),
        ([("X", "snow\u2603")], "outside ISO-8859-1"),
        ([("X", " a")], "value of X header has leading or trailing whitespace"),
        ([("X", "a\t")], "leading or trailing whitespace"),
        ([("X Y", "a")], "invalid header name: 'X Y'"),
        ([("", "a")], "invalid header name: ''"),
        ([("X:", "a")], "invalid header name: 'X:'"),
    ],
)
def test_serialize_refuses_bad_headers(
    headers: List[Tuple[str, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        serialize_request("/", headers)
    with pytest.raises(ValueError, match=message):
        serialize_response(200, headers)


# Lines and headers validated once are remembered (syncws.http._known_lines,
# _known_headers): the same results, errors every time, and bounded.


def test_a_line_read_again_gives_the_same_header_and_shares_its_strings() -> None:
    head = b"GET / HTTP/1.1\r\nX-Remembered-Test:  some value \r\n\r\n"
    first = read_request(reader(head)).headers
    second = read_request(reader(head)).headers
    assert first.items() == second.items() == [("X-Remembered-Test", "some value")]
    (name_1, value_1), (name_2, value_2) = first.items() + second.items()
    assert name_1 is name_2 and value_1 is value_2


def test_a_bad_line_is_refused_every_time() -> None:
    head = b"GET / HTTP/1.1\r\nX-Bad-Test: a\x01b\r\n\r\n"
    for _ in range(2):
        with pytest.raises(InvalidMessage, match="invalid value of X-Bad-Test header"):
            read_request(reader(head))


def test_a_bad_header_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="contains CR or LF"):
            serialize_request("/", [("X-Bad-Test", "a\r\nInjected: yes")])


def test_remembered_lines_and_headers_are_bounded() -> None:
    import syncws.http as module

    for i in range(module._KNOWN_MAX + 10):
        read_request(reader(f"GET / HTTP/1.1\r\nX-Count: {i}\r\n\r\n".encode()))
        serialize_response(101, [("X-Count", str(i))])
    assert 0 < len(module._known_lines) <= module._KNOWN_MAX
    assert 0 < len(module._known_headers) <= module._KNOWN_MAX
    # Long lines are validated every time, never kept.
    long_value = "v" * (module._KNOWN_LINE_LENGTH + 1)
    read_request(reader(f"GET / HTTP/1.1\r\nX-Long: {long_value}\r\n\r\n".encode()))
    serialize_response(101, [("X-Long", long_value)])
    assert not any(long_value.encode() in line for line in module._known_lines)
    assert ("X-Long", long_value) not in module._known_headers


def test_keys_answers_and_credentials_are_not_remembered() -> None:
    # New on every connection, or secret: never kept past their use.
    import syncws.http as module

    head = (
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Authorization: Basic dXNlcjpzZWNyZXQ=\r\nCookie: session=secret\r\n\r\n"
    )
    headers = read_request(reader(head)).headers
    assert headers["Authorization"] == "Basic dXNlcjpzZWNyZXQ=" and headers["Cookie"] == "session=secret"
    serialize_response(101, [("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), ("Set-Cookie", "a=b")])
    assert b"Upgrade: websocket\r\n" in module._known_lines
    for remembered in module._known_lines:
        assert not remembered.lower().startswith((b"sec-websocket-key", b"authorization", b"cookie"))
    for name, _ in module._known_headers:
        assert name.lower() not in ("sec-websocket-accept", "set-cookie")
    # Nor is a request target with a query string (a token, often).
    assert read_request(reader(b"GET /chat?token=secret HTTP/1.1\r\n\r\n")).path == "/chat?token=secret"
    read_request(reader(b"GET /chat HTTP/1.1\r\n\r\n"))
    assert b"GET /chat HTTP/1.1\r\n" in module._known_request_lines
    assert not any(b"token" in line for line in module._known_request_lines)


@pytest.mark.parametrize("path", ["", "/a b", "/a\r\nX: y", "/é"])
def test_serialize_request_refuses_bad_target(path: str) -> None:
    with pytest.raises(ValueError, match="invalid request target"):
        serialize_request(path, [])


def test_serialize_response_refuses_bad_status_line() -> None:
    with pytest.raises(ValueError, match="HTTP status code 99 isn't in 100-599"):
        serialize_response(99, [])
    with pytest.raises(ValueError, match="HTTP status code 600 isn't in 100-599"):
        serialize_response(600, [])
    with pytest.raises(ValueError, match="invalid HTTP reason phrase"):
        serialize_response(200, [], "OK\r\nX: y")


# Properties

_tokens = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}", fullmatch=True)
_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
).map(lambda value: value.strip(" \t"))
_headers = st.lists(st.tuples(_tokens, _values), max_size=10)
_targets = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)


def _check_only_documented_errors(read: Callable[..., object], data: bytes) -> None:
    try:
        read(reader(data), max_line=200, max_headers=5)
    except InvalidMessage:  # HeadersTooLarge included
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_read_arbitrary_bytes(data: bytes) -> None:
    _check_only_documented_errors(read_request, data)
    _check_only_documented_errors(read_response, data)


_lines = st.lists(
    st.sampled_from(
        [b"Host: h", b"X:", b" folded", b"\t", b":", b"X: \x00", b"", b"\xff: v"]
    )
    | st.binary(max_size=30),
    max_size=8,
)
_ends = st.sampled_from([b"\r\n", b"\n", b"\r", b""])


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([b"GET / HTTP/1.1", b"HTTP/1.1 101 OK", b"HTTP/1.1 101"]),
    st.lists(st.tuples(_lines.map(b"".join), _ends), max_size=8),
)
def test_read_garbage_after_a_valid_start_line(
    start_line: bytes, lines: List[Tuple[bytes, bytes]]
) -> None:
    # Random bytes rarely get past the start line; these reach the headers.
    data = start_line + b"\r\n" + b"".join(line + end for line, end in lines)
    _check_only_documented_errors(read_request, data)
    _check_only_documented_errors(read_response, data)


@settings(max_examples=200, deadline=None)
@given(_targets, _headers)
def test_request_round_trip(path: str, headers: List[Tuple[str, str]]) -> None:
    request = read_request(reader(serialize_request(path, headers)))
    assert request.method == "GET"
    assert request.path == path
    assert request.headers.items() == headers


@settings(max_examples=200, deadline=None)
@given(
    st.integers(100, 599),
    st.none() | _values,
    _headers,
)
def test_response_round_trip(
    status: int, reason: str | None, headers: List[Tuple[str, str]]
) -> None:
    response = read_response(reader(serialize_response(status, headers, reason)))
    assert response.status_code == status
    if reason is not None:
        assert response.reason == reason
    assert response.headers.items() == headers


@settings(max_examples=200, deadline=None)
@given(st.integers(200, 599), _headers)
def test_stdlib_reads_what_we_write(
    status: int, headers: List[Tuple[str, str]]
) -> None:
    # An independent reader: http.client, on ASCII heads (it decodes latin-1
    # values differently) and final statuses (it skips 1xx responses).
    headers = [(name, value) for name, value in headers if value.isascii()]

    class FakeSocket:
        def makefile(self, mode: str) -> io.BytesIO:
            return io.BytesIO(serialize_response(status, headers))

    response = http.client.HTTPResponse(FakeSocket())  # type: ignore[arg-type]
    response.begin()
    assert response.status == status
    assert response.getheaders() == headers
