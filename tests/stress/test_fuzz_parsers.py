"""Fuzz every pure parser: only the exceptions each one documents may escape.

A parser that raises anything else (``ValueError`` from ``int()``,
``IndexError``, ``UnicodeError``, ...) turns hostile input into a crash of the
connection thread instead of a clean refusal, so each test below feeds one
parser with hypothesis-generated input, biased towards its grammar, and
checks that the only exceptions are the documented ones.

Hypothesis at scale rather than coverage-guided fuzzing (atheris): it needs
no compiler toolchain and runs on every Python that syncws supports. The
strategies are built from the grammars' own alphabets (tokens, separators,
quotes, digits, control bytes), so most examples get past the first check.
``fuzz(n)`` bounds each test to ``n`` examples: the whole module takes about
30 s of CPU. Set ``SYNCWS_FUZZ_SCALE`` (a multiplier, e.g. 100) for a long run.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Callable, List, Optional, Sequence, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncws import handshake
from syncws.exceptions import (
    InvalidHeader,
    InvalidMessage,
    InvalidURI,
    NegotiationError,
    PayloadTooBig,
    WebSocketProtocolError,
)
from syncws.extensions.permessage_deflate import (
    EXTENSION_NAME,
    ClientDeflateFactory,
    DeflateSettings,
    PerMessageDeflate,
    ServerDeflateFactory,
)
from syncws.framing import read_frame
from syncws.http import read_request, read_response
from syncws.uri import parse_uri
from core_helpers import reader

pytestmark = pytest.mark.timeout(300)

SCALE = float(os.environ.get("SYNCWS_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for one fuzz test: ``examples`` times the scale."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


# -- alphabets and building blocks -------------------------------------------

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SEPARATORS = ' \t,;="\\/:@[]?{}()<>'
CONTROL = "\x00\r\n\x7f\x80\xff"

# Text from the grammar's pieces mixed with anything at all.
grammar_text = st.one_of(
    st.text(alphabet=TOKEN_CHARS[:20] + SEPARATORS + CONTROL, max_size=60),
    st.lists(
        st.sampled_from(
            [
                "permessage-deflate", "client_max_window_bits", "server_max_window_bits",
                "client_no_context_takeover", "server_no_context_takeover", "8", "15",
                "16", "0" * 30 + "9", "9" * 5000, '"', '"1\\5"', ",", ";", "=", " ",
                "\t", "websocket", "Upgrade", "13", "chat", "x", "\\", "\xe9", "\ud800",
            ]
        ),
        max_size=20,
    ).map("".join),
    st.text(max_size=40),
)


# -- URIs ---------------------------------------------------------------------

# Around 4300, int()'s limit on the digits of a string, and anywhere.
digit_counts = st.one_of(st.integers(0, 8), st.integers(4290, 4310), st.integers(0, 6000))

uri_text = st.one_of(
    st.builds(
        lambda scheme, user, host, port, rest: f"{scheme}://{user}{host}{port}{rest}",
        st.sampled_from(["ws", "wss", "WS", "http", "ws:", ""]),
        st.sampled_from(["", "u:p@", "u@", "%ff:x@", "a:b@c@", "@"]),
        st.one_of(
            st.sampled_from(["h", "[::1]", "[::1", "[fe80::1%25eth0]", "ex\xe4mple.com", "\u2488", "", "a b"]),
            st.text(max_size=12),
        ),
        st.one_of(
            st.just(""),
            st.integers(-10, 10**7).map(lambda n: f":{n}"),
            digit_counts.map(lambda n: ":" + "0" * n + "80"),
            digit_counts.map(lambda n: ":" + "9" * n),
            st.text(alphabet="0123456789\u00b2\u0661:", max_size=10).map(lambda t: ":" + t),
        ),
        st.one_of(st.just(""), st.text(max_size=20).map(lambda t: "/" + t)),
    ),
    st.text(max_size=60),
)


@fuzz(2500)
@given(uri_text)
def test_parse_uri(uri: str) -> None:
    try:
        wsuri = parse_uri(uri)
    except InvalidURI:
        return
    assert 1 <= wsuri.port <= 65535
    assert wsuri.resource_name.isascii()


# -- HTTP heads ---------------------------------------------------------------

header_lines = st.one_of(
    st.builds(
        lambda name, sep, value, end: f"{name}{sep}{value}{end}".encode("latin-1", "replace"),
        st.sampled_from(["Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "X", "", "Bad Name", " fold"]),
        st.sampled_from([": ", ":", " : ", ""]),
        grammar_text,
        st.sampled_from(["\r\n", "\n", "\r", ""]),
    ),
    st.binary(max_size=40),
)


def head(start_line: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A head: a start line, header lines, maybe an end, maybe garbage after."""
    return st.builds(
        lambda start, lines, end: start + b"".join(lines) + end,
        start_line,
        st.lists(header_lines, max_size=8),
        st.sampled_from([b"\r\n", b"", b"\n", b"\r\n\r\nGET"]),
    )


request_heads = st.one_of(
    head(
        st.builds(
            lambda method, target, version: f"{method} {target} {version}\r\n".encode("latin-1", "replace"),
            st.sampled_from(["GET", "POST", "G\x00T", "", "get"]),
            st.sampled_from(["/", "/chat?x=1", "*", "http://h/", "", "/\x7f", "/ /"]),
            st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 ", "http/1.1", ""]),
        )
    ),
    st.binary(max_size=200),
)

response_heads = st.one_of(
    head(
        st.builds(
            lambda version, status, reason: f"{version} {status}{reason}\r\n".encode("latin-1", "replace"),
            st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.10", ""]),
            st.one_of(st.integers(-5, 1000).map(str), st.sampled_from(["", "1O1", "0" * 5000 + "101", "\u0661\u0660\u0661"])),
            st.sampled_from(["", " ", " Switching Protocols", " \x00", " \xe9"]),
        )
    ),
    st.binary(max_size=200),
)


def small_limits() -> st.SearchStrategy[Tuple[int, int]]:
    """Limits small enough for the fuzzer to hit them."""
    return st.tuples(st.integers(0, 100), st.integers(0, 10))


@fuzz(1500)
@given(request_heads, small_limits())
def test_read_request(data: bytes, limits: Tuple[int, int]) -> None:
    max_line, max_headers = limits
    try:
        request = read_request(io.BytesIO(data).readline, max_line=max_line, max_headers=max_headers)
    except InvalidMessage:  # HeadersTooLarge included
        return
    assert len(request.headers) <= max_headers


@fuzz(1500)
@given(response_heads, small_limits())
def test_read_response(data: bytes, limits: Tuple[int, int]) -> None:
    max_line, max_headers = limits
    try:
        response = read_response(io.BytesIO(data).readline, max_line=max_line, max_headers=max_headers)
    except InvalidMessage:
        return
    assert 100 <= response.status_code <= 599


# -- handshake headers ----------------------------------------------------------

HANDSHAKE_HEADERS = ["Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Accept"]

header_values = st.one_of(
    st.sampled_from(
        ["websocket", "Upgrade", "keep-alive, Upgrade", "13", "8, 13", "dGhlIHNhbXBsZSBub25jZQ==",
         "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "", ",", "=", "\x00"]
    ),
    grammar_text,
)


def get_header_from(values: dict) -> Callable[[str], Optional[str]]:
    return lambda name: values.get(name)


@fuzz(1500)
@given(st.dictionaries(st.sampled_from(HANDSHAKE_HEADERS), header_values))
def test_check_request(values: dict) -> None:
    try:
        handshake.check_request(get_header_from(values))
    except InvalidHeader:  # InvalidUpgrade included
        pass


@fuzz(1200)
@given(st.dictionaries(st.sampled_from(HANDSHAKE_HEADERS), header_values), header_values)
def test_check_response(values: dict, key: str) -> None:
    if not key.isascii():
        key = "dGhlIHNhbXBsZSBub25jZQ=="  # the key is ours, always ASCII
    try:
        handshake.check_response(get_header_from(values), key)
    except InvalidHeader:
        pass


@fuzz(2500)
@given(grammar_text)
def test_header_list_parsers(value: str) -> None:
    for parse in (
        handshake.parse_extension_list,
        handshake.parse_subprotocol_list,
        lambda v: handshake.parse_token_list(v, "Connection"),
    ):
        try:
            parse(value)
        except InvalidHeader:
            pass


# -- frames -------------------------------------------------------------------


frame_bytes = st.one_of(
    st.builds(
        lambda first, second, length, rest: bytes([first, second]) + length + rest,
        st.integers(0, 255),
        st.integers(0, 255),
        st.sampled_from([b"", b"\x00\x7e", b"\xff\xff", struct.pack("!Q", 2**63), struct.pack("!Q", 2**64 - 1), struct.pack("!Q", 3)]),
        st.binary(max_size=140),
    ),
    st.binary(max_size=200),
)


@fuzz(2500)
@given(frame_bytes, st.booleans(), st.one_of(st.none(), st.integers(0, 200)), st.booleans())
def test_read_frame(data: bytes, mask: bool, max_size: Optional[int], allow_rsv1: bool) -> None:
    try:
        frame = read_frame(reader(data), mask=mask, max_size=max_size, allow_rsv1=allow_rsv1)
    except (WebSocketProtocolError, PayloadTooBig, EOFError):
        return
    if max_size is not None:
        assert len(frame.data) <= max_size


# -- permessage-deflate -------------------------------------------------------

param_names = st.one_of(
    st.sampled_from(
        ["client_max_window_bits", "server_max_window_bits", "client_no_context_takeover",
         "server_no_context_takeover", "x"]
    ),
    st.text(max_size=8),
)
param_values = st.one_of(
    st.none(),
    st.sampled_from(["8", "9", "15", "16", "7", "0", "08", "0" * 5000 + "9", "9" * 5000, "", "\u0661", "+9", " 9"]),
    st.text(max_size=6),
)
params = st.lists(st.tuples(param_names, param_values), max_size=5)


def deflate_settings() -> st.SearchStrategy[Optional[DeflateSettings]]:
    bits = st.one_of(st.none(), st.integers(9, 15))
    return st.one_of(
        st.none(),
        st.builds(
            lambda s, c, sn, cn: DeflateSettings(
                server_max_window_bits=s, client_max_window_bits=c,
                server_no_context_takeover=sn, client_no_context_takeover=cn,
            ),
            bits, bits, st.booleans(), st.booleans(),
        ),
    )


@fuzz(700)
@given(st.lists(params, max_size=4), deflate_settings())
def test_server_deflate_accept(offers: List[List[Tuple[str, Optional[str]]]], settings_: Optional[DeflateSettings]) -> None:
    # Documented: never raises; a bad offer is declined.
    factory = ServerDeflateFactory(settings_)
    result = factory.accept(offers)
    if result is not None:
        response_params, codec = result
        assert isinstance(codec, PerMessageDeflate)
        # What we answer must be something a client would accept.
        handshake.build_extension_list([(EXTENSION_NAME, response_params)])


@fuzz(1000)
@given(params, deflate_settings())
def test_client_deflate_accept(response: List[Tuple[str, Optional[str]]], settings_: Optional[DeflateSettings]) -> None:
    try:
        ClientDeflateFactory(settings_).accept(response)
    except NegotiationError:
        pass


@fuzz(1000)
@given(grammar_text)
def test_server_negotiation_from_header(value: str) -> None:
    # The server's whole path: parse the header, keep the permessage-deflate
    # elements, accept one.
    try:
        extensions = handshake.parse_extension_list(value)
    except InvalidHeader:
        return
    offers: Sequence[List[Tuple[str, Optional[str]]]] = [p for name, p in extensions if name == EXTENSION_NAME]
    ServerDeflateFactory().accept(offers)


compressed = st.one_of(
    st.binary(max_size=100),
    st.binary(max_size=300).map(lambda data: zlib.compress(data)[2:-4]),
    st.builds(lambda n: zlib.compress(b"\x00" * n)[2:-4], st.integers(0, 100_000)),
)


@fuzz(1500)
@given(st.lists(st.tuples(compressed, st.booleans()), min_size=1, max_size=4), st.one_of(st.none(), st.integers(0, 1000)))
def test_decompress(frames: List[Tuple[bytes, bool]], max_size: Optional[int]) -> None:
    codec = PerMessageDeflate(is_client=True)
    for data, fin in frames:
        try:
            payload = codec.decompress(data, fin, max_size)
        except (WebSocketProtocolError, PayloadTooBig):
            return
        if max_size is not None:
            assert len(payload) <= max_size
