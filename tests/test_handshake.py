"""Tests for syncws.handshake: the opening-handshake rules and header grammars."""

from __future__ import annotations

import base64
from typing import Dict, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncws.exceptions import InvalidHeader, InvalidUpgrade
from syncws.handshake import (
    GUID,
    WEBSOCKET_VERSION,
    accept_key,
    build_extension_list,
    build_request,
    build_response,
    build_subprotocol_list,
    check_request,
    check_request_head,
    check_response,
    parse_extension_list,
    parse_subprotocol_list,
    parse_token_list,
)

# RFC 6455 §1.3.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

FAST = settings(max_examples=200, deadline=None)


class FakeHeaders:
    """A header store with the accessors the handshake functions expect.

    Repeated headers are joined with ", " on read, as the HTTP layer does.
    """

    def __init__(self, **headers: str) -> None:
        self.values: Dict[str, List[str]] = {}
        for name, value in headers.items():
            self.set(name.replace("_", "-"), value)

    def set(self, name: str, value: str) -> None:
        self.values.setdefault(name.lower(), []).append(value)

    def get(self, name: str) -> Optional[str]:
        values = self.values.get(name.lower())
        return None if values is None else ", ".join(values)

    def remove(self, name: str) -> None:
        del self.values[name.lower()]

    def replace(self, name: str, value: str) -> None:
        self.values[name.lower()] = [value]


def make_request() -> FakeHeaders:
    headers = FakeHeaders()
    build_request(headers.set)
    return headers


def make_response(key: str = RFC_KEY) -> FakeHeaders:
    headers = FakeHeaders()
    build_response(headers.set, key)
    return headers


# --- Round trips -----------------------------------------------------------


def test_constants() -> None:
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert WEBSOCKET_VERSION == "13"


def test_accept_key_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_request_round_trip() -> None:
    headers = FakeHeaders()
    key = build_request(headers.set)
    assert headers.get("Upgrade") == "websocket"
    assert headers.get("Connection") == "Upgrade"
    assert headers.get("Sec-WebSocket-Key") == key
    assert headers.get("Sec-WebSocket-Version") == "13"
    assert len(base64.b64decode(key, validate=True)) == 16
    assert check_request(headers.get) == key


def test_request_keys_are_random() -> None:
    assert build_request(FakeHeaders().set) != build_request(FakeHeaders().set)


def test_response_round_trip() -> None:
    request = make_request()
    key = check_request(request.get)
    response = FakeHeaders()
    build_response(response.set, key)
    assert response.get("Sec-WebSocket-Accept") == accept_key(key)
    check_response(response.get, key)


def test_response_rfc_example() -> None:
    response = make_response(RFC_KEY)
    assert response.get("Sec-WebSocket-Accept") == RFC_ACCEPT
    check_response(response.get, RFC_KEY)


def test_accept_key_against_websockets() -> None:
    utils = pytest.importorskip("websockets.utils")
    key = build_request(FakeHeaders().set)
    assert accept_key(key) == utils.accept_key(key)


# --- check_request: what is accepted --------------------------------------


@pytest.mark.parametrize(
    "connection, upgrade",
    [
        ("upgrade", "websocket"),
        ("UPGRADE", "WebSocket"),
        ("keep-alive, Upgrade", "websocket"),
        ("Upgrade,keep-alive", "h2c, WEBSOCKET"),
        (" , Upgrade ,", "HTTP/2.0, websocket"),
    ],
)
def test_check_request_upgrade_variants(connection: str, upgrade: str) -> None:
    headers = make_request()
    headers.replace("Connection", connection)
    headers.replace("Upgrade", upgrade)
    check_request(headers.get)


def test_check_request_repeated_connection_header() -> None:
    headers = make_request()
    headers.replace("Connection", "keep-alive")
    headers.set("Connection", "Upgrade")
    check_request(headers.get)


# --- check_request: what is refused ---------------------------------------


def assert_raises(
    exc_type: type, name: str, fragment: str, headers: FakeHeaders
) -> InvalidHeader:
    with pytest.raises(InvalidHeader) as info:
        check_request(headers.get)
    assert type(info.value) is exc_type
    assert info.value.name == name
    assert fragment in str(info.value)
    return info.value


@pytest.mark.parametrize("name", ["Upgrade", "Connection"])
def test_missing_upgrade_headers(name: str) -> None:
    headers = make_request()
    headers.remove(name)
    error = assert_raises(InvalidUpgrade, name, f"missing {name} header", headers)
    assert error.value is None


@pytest.mark.parametrize(
    "upgrade, fragment",
    [
        ("h2c", "expected 'websocket'"),
        ("websocket/2", "expected 'websocket'"),
        ("", "empty Upgrade header"),
        ("web socket", "expected ',' at position 4"),
        ("websocket/", "expected protocol version at position 10"),
    ],
)
def test_invalid_upgrade(upgrade: str, fragment: str) -> None:
    headers = make_request()
    headers.replace("Upgrade", upgrade)
    error = assert_raises(InvalidUpgrade, "Upgrade", fragment, headers)
    assert error.value == upgrade


@pytest.mark.parametrize(
    "connection, fragment",
    [
        ("keep-alive", "expected 'Upgrade'"),
        ("upgrades", "expected 'Upgrade'"),
        ("keep-alive; Upgrade", "expected ',' at position 10, found ';'"),
    ],
)
def test_connection_without_upgrade(connection: str, fragment: str) -> None:
    headers = make_request()
    headers.replace("Connection", connection)
    assert_raises(InvalidUpgrade, "Connection", fragment, headers)


def test_missing_key() -> None:
    headers = make_request()
    headers.remove("Sec-WebSocket-Key")
    assert_raises(
        InvalidHeader, "Sec-WebSocket-Key", "missing Sec-WebSocket-Key", headers
    )


@pytest.mark.parametrize(
    "key", ["not base64!", "dGhlIHNhbXBsZSBub25jZQ", " " + RFC_KEY, "é" * 24]
)
def test_key_not_base64(key: str) -> None:
    headers = make_request()
    headers.replace("Sec-WebSocket-Key", key)
    assert_raises(InvalidHeader, "Sec-WebSocket-Key", "not valid base64", headers)


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_key_wrong_length(length: int) -> None:
    headers = make_request()
    headers.replace("Sec-WebSocket-Key", base64.b64encode(b"x" * length).decode())
    assert_raises(
        InvalidHeader,
        "Sec-WebSocket-Key",
        f"decodes to {length} bytes, expected 16",
        headers,
    )


def test_repeated_key() -> None:
    headers = make_request()
    headers.set("Sec-WebSocket-Key", RFC_KEY)
    assert_raises(
        InvalidHeader, "Sec-WebSocket-Key", "more than one Sec-WebSocket-Key", headers
    )


@pytest.mark.parametrize(
    "version, fragment",
    [
        (None, "missing Sec-WebSocket-Version header"),
        ("8", "invalid Sec-WebSocket-Version header: '8' (expected '13')"),
        ("13, 8", "'13, 8' (more than one Sec-WebSocket-Version header)"),
        ("", "empty Sec-WebSocket-Version header"),
    ],
)
def test_invalid_version(version: Optional[str], fragment: str) -> None:
    headers = make_request()
    if version is None:
        headers.remove("Sec-WebSocket-Version")
    else:
        headers.replace("Sec-WebSocket-Version", version)
    # The server answers HTTP 426 on exactly this name: it must not change.
    assert_raises(InvalidHeader, "Sec-WebSocket-Version", fragment, headers)


def test_version_is_checked_before_key() -> None:
    # An old client should get HTTP 426, even if its key looks odd too.
    headers = make_request()
    headers.replace("Sec-WebSocket-Version", "8")
    headers.replace("Sec-WebSocket-Key", "bogus")
    assert_raises(InvalidHeader, "Sec-WebSocket-Version", "'8'", headers)


# --- check_request_head: the HTTP rules before the hooks -------------------


def make_head(**headers: str) -> FakeHeaders:
    return FakeHeaders(Host="example.com", **headers)


@pytest.mark.parametrize(
    "host",
    ["example.com", "example.com:8765", "example.com:", "127.0.0.1", "[::1]:80", "[2001:db8::ffff:1.2.3.4]",
     "my_host.local", "xn--bcher-kva.example", "ex%41mple.com"],
)
def test_head_with_one_host(host: str) -> None:
    headers = make_head()
    headers.replace("Host", host)
    check_request_head(headers.get)


@pytest.mark.parametrize(
    "host, fragment",
    [
        ("", "empty Host header"),
        ("a b", "expected host or host:port"),
        ("example.com/path", "expected host or host:port"),
        ("user@example.com", "expected host or host:port"),
        ("example.com:80a", "expected host or host:port"),
        ("::1", "expected host or host:port"),
        ("[::1", "expected host or host:port"),
        ("ex\xe9mple.com", "expected host or host:port"),
    ],
)
def test_head_with_invalid_host(host: str, fragment: str) -> None:
    headers = make_head()
    headers.replace("Host", host)
    with pytest.raises(InvalidHeader, match=fragment) as info:
        check_request_head(headers.get)
    assert info.value.name == "Host"


def test_head_without_host() -> None:
    headers = make_head()
    headers.remove("Host")
    with pytest.raises(InvalidHeader, match="missing Host header"):
        check_request_head(headers.get)


def test_head_with_two_hosts() -> None:
    headers = make_head()
    headers.set("Host", "example.com")
    with pytest.raises(InvalidHeader, match="more than one Host header"):
        check_request_head(headers.get)


@pytest.mark.parametrize("origin", ["https://app.example.com", "http://127.0.0.1:8000", "null", "file://"])
def test_head_with_one_origin(origin: str) -> None:
    check_request_head(make_head(Origin=origin).get)


@pytest.mark.parametrize("origin", ["https://a.test https://b.test", "https://a.test\thttps://b.test"])
def test_head_with_an_origin_list(origin: str) -> None:
    with pytest.raises(InvalidHeader, match="more than one origin"):
        check_request_head(make_head(Origin=origin).get)


def test_head_with_two_origins() -> None:
    headers = make_head(Origin="https://evil.test")
    headers.set("Origin", "https://app.example.com")
    with pytest.raises(InvalidHeader, match="more than one origin") as info:
        check_request_head(headers.get)
    assert info.value.name == "Origin"


@pytest.mark.parametrize(
    "name, value",
    [("Content-Length", "8"), ("Content-Length", "0, 0"), ("Content-Length", "00"),
     ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")],
)
def test_head_with_a_body(name: str, value: str) -> None:
    headers = make_head()
    headers.set(name, value)
    with pytest.raises(InvalidHeader, match="a WebSocket upgrade request has no body") as info:
        check_request_head(headers.get)
    assert info.value.name == name


def test_head_with_content_length_0() -> None:
    check_request_head(make_head(Content_Length="0").get)


def test_repeated_version() -> None:
    headers = make_request()
    headers.set("Sec-WebSocket-Version", "13")
    assert_raises(
        InvalidHeader, "Sec-WebSocket-Version", "more than one Sec-WebSocket-Version header", headers
    )


# --- check_response --------------------------------------------------------


def test_wrong_accept() -> None:
    headers = make_response(RFC_KEY)
    other_key = build_request(FakeHeaders().set)
    with pytest.raises(InvalidHeader) as info:
        check_response(headers.get, other_key)
    assert type(info.value) is InvalidHeader
    assert info.value.name == "Sec-WebSocket-Accept"
    assert info.value.value == RFC_ACCEPT
    assert f"expected {accept_key(other_key)!r}" in str(info.value)


def test_missing_accept() -> None:
    headers = make_response()
    headers.remove("Sec-WebSocket-Accept")
    with pytest.raises(InvalidHeader) as info:
        check_response(headers.get, RFC_KEY)
    assert info.value.name == "Sec-WebSocket-Accept"
    assert "missing Sec-WebSocket-Accept header" in str(info.value)


def test_repeated_accept() -> None:
    headers = make_response()
    headers.set("Sec-WebSocket-Accept", RFC_ACCEPT)
    with pytest.raises(InvalidHeader, match="Sec-WebSocket-Accept"):
        check_response(headers.get, RFC_KEY)


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("Upgrade", None, "missing Upgrade header"),
        ("Upgrade", "h2c", "expected 'websocket'"),
        ("Connection", None, "missing Connection header"),
        ("Connection", "close", "expected 'Upgrade'"),
    ],
)
def test_response_invalid_upgrade(
    name: str, value: Optional[str], fragment: str
) -> None:
    headers = make_response()
    if value is None:
        headers.remove(name)
    else:
        headers.replace(name, value)
    with pytest.raises(InvalidUpgrade) as info:
        check_response(headers.get, RFC_KEY)
    assert info.value.name == name
    assert fragment in str(info.value)


def test_response_case_insensitive() -> None:
    headers = make_response()
    headers.replace("Upgrade", "WebSocket")
    headers.replace("Connection", "keep-alive, upgrade")
    check_response(headers.get, RFC_KEY)


# --- Token lists -----------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        ("a , \tb", ["a", "b"]),
        (",a,,b,", ["a", "b"]),
        (" , , ", []),
        ("", []),
        ("Keep-Alive, Upgrade", ["Keep-Alive", "Upgrade"]),
    ],
)
def test_parse_token_list(value: str, expected: List[str]) -> None:
    assert parse_token_list(value, "Connection") == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("a b", "expected ',' at position 2, found 'b'"),
        ("a, @", "expected token at position 3, found '@'"),
        ("a;", "expected ',' at position 1, found ';'"),
    ],
)
def test_parse_token_list_errors(value: str, fragment: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_token_list(value, "X-Test")
    assert type(info.value) is InvalidHeader
    assert info.value.name == "X-Test"
    assert fragment in str(info.value)


# --- Subprotocols ----------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("chat", ["chat"]),
        ("chat, superchat", ["chat", "superchat"]),
        # Two headers, joined by the HTTP layer.
        ("chat, v2.bookings.example.net", ["chat", "v2.bookings.example.net"]),
        ("chat,,  superchat ,", ["chat", "superchat"]),
    ],
)
def test_parse_subprotocol_list(value: str, expected: List[str]) -> None:
    assert parse_subprotocol_list(value) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("chat/1", "expected ',' at position 4, found '/'"),
        ('"chat"', "expected token at position 0, found '\"'"),
        ("chat, caf\u00e9", "expected ',' at position 9, found 'é'"),
    ],
)
def test_parse_subprotocol_list_errors(value: str, fragment: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_subprotocol_list(value)
    assert info.value.name == "Sec-WebSocket-Protocol"
    assert fragment in str(info.value)


def test_build_subprotocol_list() -> None:
    assert build_subprotocol_list(["chat", "superchat"]) == "chat, superchat"
    assert build_subprotocol_list([]) == ""


@pytest.mark.parametrize("protocols", [["chat room"], [""], ["chat", "a,b"]])
def test_build_subprotocol_list_refuses_non_tokens(protocols: List[str]) -> None:
    with pytest.raises(ValueError, match="is not a token"):
        build_subprotocol_list(protocols)


def test_build_subprotocol_list_refuses_a_string() -> None:
    with pytest.raises(TypeError):
        build_subprotocol_list("chat")


# --- Extensions ------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("permessage-deflate", [("permessage-deflate", [])]),
        (
            "permessage-deflate; client_max_window_bits, "
            "permessage-deflate; server_max_window_bits=10; "
            'client_no_context_takeover, x-foo; a="quoted-value"',
            [
                ("permessage-deflate", [("client_max_window_bits", None)]),
                (
                    "permessage-deflate",
                    [
                        ("server_max_window_bits", "10"),
                        ("client_no_context_takeover", None),
                    ],
                ),
                ("x-foo", [("a", "quoted-value")]),
            ],
        ),
        # Whitespace around ";", "," and "=".
        (
            "  x ;a = 1\t;\tb ,\ty; c= \"2\" ",
            [("x", [("a", "1"), ("b", None)]), ("y", [("c", "2")])],
        ),
        # Escapes in quoted strings.
        ('x; a="\\1\\0"', [("x", [("a", "10")])]),
        ('x; a="\\a\\-b"', [("x", [("a", "a-b")])]),
        # Empty list elements.
        (", x, , y ,", [("x", []), ("y", [])]),
        ("", []),
        # Names are kept as written; negotiation decides what they mean.
        ("X-Foo; A=B", [("X-Foo", [("A", "B")])]),
    ],
)
def test_parse_extension_list(value: str, expected: list) -> None:
    assert parse_extension_list(value) == expected


@pytest.mark.parametrize(
    "value, fragment",
    [
        # Missing names.
        ("; a=1", "expected extension name at position 0, found ';'"),
        ("x; =1", "expected parameter name at position 3, found '='"),
        ("x;", "expected parameter name at position 2, found end of value"),
        # Bad characters.
        ("x@y", "expected ',' at position 1, found '@'"),
        ("x; a=1@", "expected ',' at position 6, found '@'"),
        ("x; a=b=c", "expected ',' at position 6, found '='"),
        ('x; a="b\x01"', "unexpected '\\x01' at position 7 in quoted string"),
        ('x; a="b\\\x7f"', "unexpected '\\x7f' at position 8 in quoted string"),
        # Unterminated quotes.
        ('x; a="bc', "unterminated quoted string starting at position 5"),
        ('x; a="bc\\"', "unterminated quoted string starting at position 5"),
        ('x; a="bc\\', "unterminated quoted string starting at position 5"),
        # "=" without a value.
        ("x; a=", "expected parameter value at position 5, found end of value"),
        ("x; a= , y", "expected parameter value at position 6, found ','"),
        ("x; a=; b", "expected parameter value at position 5, found ';'"),
        # Quoted values must be tokens once unescaped (RFC 6455 §9.1).
        ('x; a="b c"', "quoted value 'b c' at position 5 is not a token"),
        ('x; a=""', "quoted value '' at position 5 is not a token"),
        ('x; a="\\""', "quoted value '\"' at position 5 is not a token"),
        ('x; a="caf\u00e9"', "quoted value 'café' at position 5 is not a token"),
    ],
)
def test_parse_extension_list_errors(value: str, fragment: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_extension_list(value)
    assert type(info.value) is InvalidHeader
    assert info.value.name == "Sec-WebSocket-Extensions"
    assert info.value.value == value
    assert fragment in str(info.value)


def test_build_extension_list() -> None:
    extensions = [
        ("permessage-deflate", [("client_max_window_bits", None)]),
        ("permessage-deflate", [("server_max_window_bits", "10")]),
        ("x-foo", []),
    ]
    assert build_extension_list(extensions) == (
        "permessage-deflate; client_max_window_bits, "
        "permessage-deflate; server_max_window_bits=10, x-foo"
    )
    assert build_extension_list([]) == ""


@pytest.mark.parametrize(
    "extensions",
    [
        [("bad name", [])],
        [("x", [("bad name", None)])],
        [("x", [("a", "b c")])],
        [("x", [("a", "")])],
    ],
)
def test_build_extension_list_refuses_non_tokens(extensions: list) -> None:
    with pytest.raises(ValueError, match="is not a token"):
        build_extension_list(extensions)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "value",
    [
        "x" + "; a" * 100_000 + "@",
        'x; a="' + "\\b" * 200_000,
        ", " * 200_000 + "@",
        " " * 200_000 + "@",
    ],
)
def test_hostile_headers_fail_in_linear_time(value: str) -> None:
    with pytest.raises(InvalidHeader):
        parse_extension_list(value)


# --- Against an independent implementation ---------------------------------


def test_parse_extension_list_agrees_with_websockets() -> None:
    headers = pytest.importorskip("websockets.headers")
    value = (
        "permessage-deflate; client_max_window_bits; server_no_context_takeover,"
        ' x-foo;a="1", permessage-deflate'
    )
    theirs = headers.parse_extension_list(value)
    theirs = [(name, list(params)) for name, params in theirs]
    assert parse_extension_list(value) == theirs


# --- Properties ------------------------------------------------------------

TCHARS = (
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
parameters = st.lists(st.tuples(tokens, st.none() | tokens), max_size=4)
extension_lists = st.lists(st.tuples(tokens, parameters), max_size=4)

# Characters that exercise every branch of the grammar, plus a few others.
GRAMMAR_CHARS = TCHARS[:20] + ' \t,;="\\/@\x00\x7f\u00e9\u20ac'
hostile_text = st.text() | st.text(alphabet=GRAMMAR_CHARS, max_size=40)


@FAST
@given(extension_lists)
def test_extension_list_round_trip(extensions: list) -> None:
    assert parse_extension_list(build_extension_list(extensions)) == extensions


@FAST
@given(extension_lists, st.data())
def test_extension_list_quoted_values(extensions: list, data: st.DataObject) -> None:
    # Quoting a value, and escaping any of its characters, must not change it.
    parts = []
    for name, params in extensions:
        items = [name]
        for param_name, param_value in params:
            if param_value is None:
                items.append(param_name)
            else:
                size = len(param_value)
                escapes = data.draw(
                    st.lists(st.booleans(), min_size=size, max_size=size)
                )
                quoted = "".join(
                    "\\" + char if escape else char
                    for char, escape in zip(param_value, escapes)
                )
                items.append(f'{param_name} =\t"{quoted}"')
        parts.append(" ;".join(items))
    assert parse_extension_list(" ,".join(parts)) == extensions


@FAST
@given(st.lists(tokens, max_size=5))
def test_subprotocol_list_round_trip(protocols: List[str]) -> None:
    assert parse_subprotocol_list(build_subprotocol_list(protocols)) == protocols


@FAST
@given(hostile_text)
def test_parsers_raise_only_invalid_header(value: str) -> None:
    for parse in (
        parse_extension_list,
        parse_subprotocol_list,
        lambda text: parse_token_list(text, "Connection"),
    ):
        try:
            parse(value)
        except InvalidHeader:
            pass


@FAST
@given(hostile_text, hostile_text, hostile_text, hostile_text)
def test_check_request_raises_only_invalid_header(
    connection: str, upgrade: str, key: str, version: str
) -> None:
    headers = FakeHeaders(
        Connection=connection,
        Upgrade=upgrade,
        Sec_WebSocket_Key=key,
        Sec_WebSocket_Version=version,
    )
    try:
        check_request(headers.get)
    except InvalidHeader:
        pass


@FAST
@given(hostile_text, hostile_text, hostile_text, hostile_text)
def test_check_request_head_raises_only_invalid_header(
    host: str, origin: str, content_length: str, transfer_encoding: str
) -> None:
    headers = FakeHeaders(
        Host=host, Origin=origin, Content_Length=content_length, Transfer_Encoding=transfer_encoding
    )
    try:
        check_request_head(headers.get)
    except InvalidHeader:
        pass
