"""syncws.paths: the one decoded form of a request path (no sockets)."""

import pytest

from syncws.exceptions import InvalidMessage
from syncws.paths import check_path, decode_path, decode_target


@pytest.mark.parametrize("target, path", [
    ("/", "/"),
    ("/chat?room=1", "/chat?room=1"),
    ("/%70rivate/feed", "/private/feed"),
    ("/caf%C3%A9?q=caf%C3%A9", "/café?q=caf%C3%A9"),  # the query as received
    ("/a%2Fb", "/a/b"),  # as WSGI servers decode PATH_INFO
    ("/a/../b//c", "/a/../b//c"),  # not normalized: routers match literally
    ("/a?", "/a"),
    ("http://example.com/chat?x=1", "/chat?x=1"),
    ("ws://example.com", "/"),
    ("HTTPS://example.com:8443?x", "/?x"),
])
def test_decode_target(target, path):
    assert decode_target(target) == path


@pytest.mark.parametrize("target, why", [
    ("*", "isn't a path"),
    ("example.com:443", "isn't a path"),
    ("//no-scheme", None),  # a path: kept as is
    ("/%FF", "UTF-8"),
    ("/%C3", "UTF-8"),
    ("/a%00", "control character"),
    ("/a%7F", "control character"),
    ("/a%C2%9B", "control character"),  # C1: a terminal's CSI
    # A decoded "?" would pass for the query's start ("/metrics%3F" for
    # "/metrics" past a proxy that denies "/metrics"), a "#" for a fragment's.
    ("/metrics%3F", "'\\?' or '#'"),
    ("/a%3fb?c", "'\\?' or '#'"),
    ("/metrics%23", "'\\?' or '#'"),
])
def test_decode_target_refuses(target, why):
    if why is None:
        assert decode_target(target) == target
        return
    with pytest.raises(InvalidMessage, match=why):
        decode_target(target)


def test_decode_path_and_check_path():
    assert decode_path("/café".encode()) == "/café"
    assert check_path("/%FF") == "/%FF"  # a framework's decoded path, kept
    with pytest.raises(InvalidMessage, match="UTF-8"):
        decode_path(b"/\xe9")
    with pytest.raises(InvalidMessage, match="control"):
        check_path("/a\nb")
    for path in ("/metrics?", "/a#b"):  # a framework's path with %3F or %23 decoded
        with pytest.raises(InvalidMessage, match="'#'"):
            check_path(path)


def test_refusals_quote_no_peer_text():
    with pytest.raises(InvalidMessage) as info:
        decode_target("/\x1b]0;title\x07%FF")
    assert "\x1b" not in str(info.value) and "title" not in str(info.value)
