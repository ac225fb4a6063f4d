from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from syncws.exceptions import InvalidURI
from syncws.uri import WebSocketURI, host_header, parse_uri


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("ws://localhost/", WebSocketURI(False, "localhost", 80, "/", None)),
        ("wss://localhost/", WebSocketURI(True, "localhost", 443, "/", None)),
        ("ws://localhost", WebSocketURI(False, "localhost", 80, "/", None)),
        ("WSS://Example.COM", WebSocketURI(True, "example.com", 443, "/", None)),
        ("ws://localhost:8080/", WebSocketURI(False, "localhost", 8080, "/", None)),
        ("wss://localhost:80/", WebSocketURI(True, "localhost", 80, "/", None)),
        ("ws://h:0080/", WebSocketURI(False, "h", 80, "/", None)),
        ("ws://h:65535/", WebSocketURI(False, "h", 65535, "/", None)),
        ("ws://127.0.0.1:1/", WebSocketURI(False, "127.0.0.1", 1, "/", None)),
        ("ws://[::1]:8080/", WebSocketURI(False, "::1", 8080, "/", None)),
        ("wss://[2001:DB8::1]/x", WebSocketURI(True, "2001:db8::1", 443, "/x", None)),
        ("ws://h/a/b?c=d&e", WebSocketURI(False, "h", 80, "/a/b?c=d&e", None)),
        ("ws://h?c=d", WebSocketURI(False, "h", 80, "/?c=d", None)),
        ("ws://h/path?", WebSocketURI(False, "h", 80, "/path", None)),
        ("ws://h/a%2Fb", WebSocketURI(False, "h", 80, "/a%2Fb", None)),
        (
            "ws://user:pass@h/",
            WebSocketURI(False, "h", 80, "/", ("user", "pass")),
        ),
        (
            "ws://us%40er:p%3Ass@h:81/",
            WebSocketURI(False, "h", 81, "/", ("us@er", "p:ss")),
        ),
        ("ws://user:@h/", WebSocketURI(False, "h", 80, "/", ("user", ""))),
        ("ws://u:p@ss@h/", WebSocketURI(False, "h", 80, "/", ("u", "p@ss"))),
    ],
)
def test_parse_valid(uri: str, expected: WebSocketURI) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize(
    "uri, resource_name",
    [
        ("ws://h/é?q=ü", "/%C3%A9?q=%C3%BC"),
        ("ws://h/a b", "/a%20b"),
        ("ws://h/a\r\nb", "/a%0D%0Ab"),
        ("ws://h/100%", "/100%25"),
        ("ws://h/%zz", "/%25zz"),
        ("ws://h/%7e", "/%7e"),
        ('ws://h/<"x">', "/%3C%22x%22%3E"),
        ("ws://h/[x]", "/%5Bx%5D"),
    ],
)
def test_resource_name_is_percent_encoded(uri: str, resource_name: str) -> None:
    assert parse_uri(uri).resource_name == resource_name


def test_non_ascii_host_is_idna_encoded() -> None:
    assert parse_uri("ws://bücher.example/").host == "xn--bcher-kva.example"



def test_repr_leaves_the_password_and_query_values_out() -> None:
    # An application that logs a parsed URI (logger.info("%r", wsuri), an
    # f-string, a traceback's locals) must not log its secrets.
    wsuri = parse_uri("wss://bob:hunter2@example.com:8443/feed?room=1&token=abc123")
    shown = (
        "WebSocketURI(secure=True, host='example.com', port=8443, "
        "resource_name='/feed?room=[redacted]&token=[redacted]', user_info=('bob', '[redacted]'))"
    )
    assert repr(wsuri) == shown
    assert str(wsuri) == f"{wsuri}" == "%s" % (wsuri,) == shown
    assert "hunter2" not in repr([wsuri]) and "abc123" not in repr({"uri": wsuri})
    assert repr(parse_uri("ws://h/")) == (
        "WebSocketURI(secure=False, host='h', port=80, resource_name='/', user_info=None)"
    )


def test_repr_keeps_the_tuple_whole() -> None:
    wsuri = parse_uri("wss://bob:hunter2@example.com:8443/feed?room=1")
    assert wsuri == (True, "example.com", 8443, "/feed?room=1", ("bob", "hunter2"))
    assert wsuri.user_info == ("bob", "hunter2")
    assert wsuri._asdict()["resource_name"] == "/feed?room=1"
    assert wsuri._replace(port=1) == WebSocketURI(True, "example.com", 1, "/feed?room=1", ("bob", "hunter2"))
    assert WebSocketURI._make(tuple(wsuri)) == wsuri
    secure, host, port, resource_name, user_info = wsuri
    assert (host, port, user_info) == ("example.com", 8443, ("bob", "hunter2"))


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("http://h/", "scheme isn't ws or wss"),
        ("wsx://h/", "scheme isn't ws or wss"),
        ("localhost", "scheme isn't ws or wss"),
        ("", "scheme isn't ws or wss"),
        (" ws://h/", "scheme isn't ws or wss"),
        ("ws:/h/", "'//' must follow 'ws:'"),
        ("ws://h/#frag", "fragments aren't allowed"),
        ("ws://h/#", "fragments aren't allowed"),
        ("ws:///path", "host is missing"),
        ("ws://:80/", "host is missing"),
        ("ws://u:p@/", "host is missing"),
        ("ws://h:/", "port is empty after ':'"),
        ("ws://[::1]:/", "port is empty after ':'"),
        ("ws://h:http/", "port 'http' isn't a number"),
        ("ws://h:-1/", "port '-1' isn't a number"),
        ("ws://h:²/", "port '²' isn't a number"),
        ("ws://h:70000/", "port 70000 is out of range 1-65535"),
        ("ws://h:0/", "port 0 is out of range 1-65535"),
        ("ws://h:" + "9" * 5000, "port 99999999999999999999... is out of range"),
        ("ws://user@h/", "user info has a user but no password"),
        ("ws://%ff:p@h/", "user info isn't UTF-8 once percent-decoded"),
        ("ws://[::1/", "'[' of the IPv6 address isn't closed"),
        ("ws://[::1]x/", "unexpected 'x' after the IPv6 address"),
        ("ws://[nope]/", "'nope' isn't a valid IPv6 address"),
        ("ws://[fe80::1%25eth0]/", "IPv6 zone identifiers aren't supported"),
        ("ws://::1/", "IPv6 addresses must be enclosed in brackets"),
        ("ws://h st/", "host 'h st' contains invalid characters"),
        ("ws://h\n/", "host 'h\\n' contains invalid characters"),
        ("ws://ex%41mple/", "host 'ex%41mple' contains invalid characters"),
        ("ws://ä..b/", "host 'ä..b' can't be IDNA-encoded"),
        ("ws://h/\ud800", "it contains a lone surrogate"),
    ],
)
def test_parse_invalid(uri: str, reason: str) -> None:
    with pytest.raises(InvalidURI) as excinfo:
        parse_uri(uri)
    assert reason in excinfo.value.reason
    assert excinfo.value.uri == uri
    assert reason in str(excinfo.value)



# A "/", "?" or "#" in a password ends the authority early, and what parse_uri
# then reads as the host, the port or the path is a part of the password.
@pytest.mark.parametrize(
    "uri, text",
    [
        (
            "ws://u:pa/ss@h",
            "'ws://u:[redacted]@h' isn't a valid WebSocket URI: the host or port is invalid, "
            "and an '@' follows it: a '/' or '?' in a password must be percent-encoded (%2F, %3F)",
        ),
        (
            "ws://u:p?ss@h",
            "'ws://u:[redacted]@h' isn't a valid WebSocket URI: the host or port is invalid, "
            "and an '@' follows it: a '/' or '?' in a password must be percent-encoded (%2F, %3F)",
        ),
        (
            "ws://u:p#ss@h",
            "'ws://u:[redacted]@h' isn't a valid WebSocket URI: fragments aren't allowed "
            "(a '#' in a password must be percent-encoded: %23)",
        ),
        ("ws://u:p@ss@h:x", "'ws://u:[redacted]@h:x' isn't a valid WebSocket URI: port 'x' isn't a number"),
    ],
)
def test_invalid_uri_text_with_an_ambiguous_user_info(uri: str, text: str) -> None:
    with pytest.raises(InvalidURI) as excinfo:
        parse_uri(uri)
    assert str(excinfo.value) == text
    assert excinfo.value.uri == uri  # the attribute keeps it whole


# The passwords below are made of the letters QZXJK (which no reason uses)
# and of what ends or splits an authority.
@pytest.mark.parametrize(
    "uri",
    [
        "ws://u:QZ/XJ@h/",
        "ws://u:QZ?XJ@h/",
        "ws://u:QZ#XJ@h/",
        "ws://u:QZ@XJ@h:x/",
        "ws://u:QZ@X J/K@h/",  # the host would be "X J"
        "ws://u:Q Z/XJ@h/",
        "ws://u:QZ:XJ/K@h/",
        "ws://[u:QZ/XJ@h/",
        "ws://u:[QZ/XJ@h/",
        "ws://u:QZ\n/XJ@h/",
        "ws://u:QZ/XJ@h:99999/",
        "ws://u:/QZ@h/",
        "wss:/u:QZ@h/",
        "u:QZ@h/",
        "ws:u:QZ/XJ@h",
        "ws://u:QZ/XJ@h/\ud800",
        "http://u:QZ/XJ@h/",
        "ws://Q Z/XJ@h/",  # a token alone, with a " " and a "/"
    ],
)
def test_invalid_uri_texts_hold_no_part_of_a_password(uri: str) -> None:
    with pytest.raises(InvalidURI) as excinfo:
        parse_uri(uri)
    for text in (str(excinfo.value), excinfo.value.reason, repr(excinfo.value)):
        assert not set("QZXJK") & set(text), text
    assert excinfo.value.uri == uri
    str(excinfo.value).encode("utf-8")  # printable and loggable: no lone surrogate


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(["ws://", "wss://", "ws:/", "ws:", "", "http://"]),
    password=st.text(alphabet="QZXJK/?#@:[] %.", min_size=1),
    after=st.sampled_from(["h", "h/", "h:x", "h:99999/p", "h/p?q=1", "[::1]/", "h st/"]),
)
def test_no_invalid_uri_text_holds_part_of_a_password(prefix: str, password: str, after: str) -> None:
    # Without a prefix, a password starting with "//" turns "u:" into a
    # scheme: "u://J:@h" is scheme u, user J, an empty password (RFC 3986
    # §3.2.1), and the user is shown as in any URI. Not a password then.
    assume(not (prefix == "" and password.startswith("//")))
    try:
        parse_uri(f"{prefix}u:{password}@{after}")
    except InvalidURI as exc:
        assert not set("QZXJK") & set(str(exc) + exc.reason), str(exc)


@pytest.mark.parametrize(
    "uri, header",
    [
        ("ws://h/", "h"),
        ("wss://h/", "h"),
        ("ws://h:80/", "h"),
        ("ws://h:443/", "h:443"),
        ("wss://h:80/", "h:80"),
        ("ws://h:8080/", "h:8080"),
        ("ws://[::1]/", "[::1]"),
        ("wss://[::1]:8443/", "[::1]:8443"),
        ("ws://u:p@h:81/", "h:81"),
    ],
)
def test_host_header(uri: str, header: str) -> None:
    assert host_header(parse_uri(uri)) == header


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_invalid_uri(text: str) -> None:
    try:
        parse_uri(text)
    except InvalidURI:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_after_scheme_raises_only_invalid_uri(text: str) -> None:
    # Random text almost never gets past the scheme; start past it.
    try:
        wsuri = parse_uri("ws://" + text)
    except InvalidURI:
        return
    # Whatever parses must be safe to put in a request line.
    assert wsuri.resource_name.isascii()
    assert " " not in wsuri.resource_name and "\n" not in wsuri.resource_name
    assert 1 <= wsuri.port <= 65535


_hosts = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,10}){0,2}", fullmatch=True
)
_paths = st.from_regex(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]{0,8}){0,3}", fullmatch=True)
_queries = st.from_regex(r"[A-Za-z0-9._~!$&'()*+,;=:@/?-]{1,12}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    secure=st.booleans(),
    host=_hosts,
    port=st.none() | st.integers(1, 65535),
    path=_paths,
    query=st.none() | _queries,
)
def test_agrees_with_websockets(
    secure: bool, host: str, port: int | None, path: str, query: str | None
) -> None:
    # An independent implementation: websockets, from the test extras.
    websockets_uri = pytest.importorskip("websockets.uri")
    uri = f"{'wss' if secure else 'ws'}://{host}"
    if port is not None:
        uri += f":{port}"
    uri += path
    if query is not None:
        uri += f"?{query}"
    theirs = websockets_uri.parse_uri(uri)
    ours = parse_uri(uri)
    assert (ours.secure, ours.host, ours.port, ours.resource_name) == (
        theirs.secure,
        theirs.host,
        theirs.port,
        theirs.resource_name,
    )


def test_port_longer_than_int_digit_limit():
    # int() refuses strings of over 4300 digits with ValueError (Python's
    # integer-string conversion limit), leading zeros included: it used to
    # escape from parse_uri. Leading zeros are allowed (RFC 3986's port is
    # *DIGIT, and "0080" is 80, as in browsers), however many there are.
    assert parse_uri("ws://localhost:" + "0" * 5000 + "80").port == 80
    with pytest.raises(InvalidURI, match="out of range"):
        parse_uri("ws://localhost:" + "0" * 5000)
    with pytest.raises(InvalidURI, match="out of range"):
        parse_uri("ws://localhost:" + "0" * 5000 + "9" * 6)
