"""syncws.safetext: peer text escaped, secrets left out of URIs (no sockets)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncws.safetext import REDACTED, escape, is_secret_header, redact_invalid_uri, redact_uri


@pytest.mark.parametrize(
    "text, shown",
    [
        ("bye", "bye"),
        ("", ""),
        ("a\nb\r\n", "a\\x0ab\\x0d\\x0a"),
        ("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\x07\\x1b[2J"),
        ("\x00\t\x7f\x85\x9b", "\\x00\\x09\\x7f\\x85\\x9b"),
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("\u202eevil\u202c \u2066x\u2069 \u200e\u200f\u061c", "\\u202eevil\\u202c \\u2066x\\u2069 \\u200e\\u200f\\u061c"),
        ("é€😀 café", "é€😀 café"),
        ("back\\slash \\x41", "back\\slash \\x41"),
    ],
)
def test_escape(text: str, shown: str) -> None:
    assert escape(text) == shown


@given(st.text(st.characters(blacklist_categories=())))  # lone surrogates included
def test_escape_gives_text_that_encodes(text: str) -> None:
    # A lone surrogate (a URI given as str, bytes decoded with
    # surrogateescape) would make print() or a log handler fail.
    escape(text).encode("utf-8")


def test_escape_renders_a_lone_surrogate_as_a_backslash_sequence() -> None:
    assert escape("a\ud800b\udfff") == "a\\ud800b\\udfff"
    assert escape("é\ud83d\x1b") == "é\\ud83d\\x1b"
    assert redact_uri("ws://h/\udc80?k=v") == f"ws://h/\\udc80?k={REDACTED}"


def test_escape_keeps_what_it_is_told_to() -> None:
    assert escape("a\nb\tc\x1b", keep="\n\t") == "a\nb\tc\\x1b"
    assert escape("a\nb") == "a\\x0ab"  # the default table is unchanged


@given(st.text())
def test_escape_leaves_no_control_character(text: str) -> None:
    shown = escape(text)
    for char in shown:
        assert unicodedata.category(char) not in ("Cc", "Zl", "Zp"), repr(shown)
        assert unicodedata.bidirectional(char) not in ("LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI")
    assert "\n" not in shown and "\x1b" not in shown


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("ws://example.com/chat", "ws://example.com/chat"),
        ("wss://bob:hunter2@example.com:8443/feed", f"wss://bob:{REDACTED}@example.com:8443/feed"),
        ("ws://bob:p@ss:w@rd@example.com/", f"ws://bob:{REDACTED}@example.com/"),
        ("ws://ghp_token@example.com/", f"ws://{REDACTED}@example.com/"),
        ("ws://:pw@h/", f"ws://:{REDACTED}@h/"),
        ("ws://h/p?access_token=abc&room=1", f"ws://h/p?access_token={REDACTED}&room={REDACTED}"),
        ("ws://h/p?flag&empty=&&x=1", f"ws://h/p?{REDACTED}&empty=&&x={REDACTED}"),
        ("ws://h/p?", "ws://h/p?"),
        ("ws://h/p#frag", f"ws://h/p#{REDACTED}"),
        ("/room?access_token=abc", f"/room?access_token={REDACTED}"),
        ("/room", "/room"),
        ("redis://:s3cret@redis.internal:6379/0", f"redis://:{REDACTED}@redis.internal:6379/0"),
        ("rediss://user:s3cret@r/1?ssl_cert_reqs=none", f"rediss://user:{REDACTED}@r/1?ssl_cert_reqs={REDACTED}"),
        ("unix:///run/redis.sock?password=s3cret&db=2", f"unix:///run/redis.sock?password={REDACTED}&db={REDACTED}"),
        ("http://u:p@proxy:3128", f"http://u:{REDACTED}@proxy:3128"),
        ("ws://h/\x1b[2J?k=v\nx", f"ws://h/\\x1b[2J?k={REDACTED}"),
        ("ws://h/\x1b[2J\n", "ws://h/\\x1b[2J\\x0a"),
        ("not a uri at all", "not a uri at all"),
        ("", ""),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


# A secret that "[redacted]" starts with ("[", "[re") would be found in it.
@given(st.text(), st.text(min_size=1).filter(lambda s: not set(s) & set("@/?#&=") and not REDACTED.startswith(s)))
def test_redact_uri_never_shows_the_password_or_a_query_value(prefix: str, secret: str) -> None:
    for uri in (
        f"ws://user:{secret}@host/{prefix}",
        f"wss://host/{prefix.replace('?', '').replace('#', '')}?k={secret}",
        f"ws://host/?a=1&k={secret}&b",
    ):
        shown = redact_uri(uri)
        assert f":{secret}@" not in shown and f"={secret}" not in shown, shown
        assert "\n" not in shown and "\x1b" not in shown


@pytest.mark.parametrize(
    "text, shown",
    [
        ("ws://bob:pa/ss@example.com:x/?token=abc", f"ws://bob:{REDACTED}@example.com:x/?token={REDACTED}"),
        ("ws://bob:p?ss@h", f"ws://bob:{REDACTED}@h"),
        ("ws://bob:p#ss@h", f"ws://bob:{REDACTED}@h"),
        ("ws://bob:p@ss@h:x", f"ws://bob:{REDACTED}@h:x"),
        ("ws://to/ken@h/", f"ws://{REDACTED}@h/"),
        ("ws://token@h/", f"ws://{REDACTED}@h/"),
        ("bob:secret@h/", f"bob:{REDACTED}@h/"),
        ("u:a://secret@h", f"u:{REDACTED}@h"),
        ("ws://h/p?mail=a@b.example", f"ws://{REDACTED}@b.example"),
        ("ws://h:x/p?k=v", f"ws://h:x/p?k={REDACTED}"),
        ("ws://h\n/", "ws://h\\x0a/"),
        ("", ""),
    ],
)
def test_redact_invalid_uri(text: str, shown: str) -> None:
    assert redact_invalid_uri(text) == shown


# The passwords are made of the letters QZXJK, which nothing else holds.
@given(
    scheme=st.sampled_from(["ws://", "wss://", "", "ws:", "ws:/", "u:a://"]),
    user=st.text(st.characters(blacklist_characters="QZXJK:@")),
    password=st.text("QZXJK/?#@:[] %.&=", min_size=1),
    after=st.text(st.characters(blacklist_characters="QZXJK@")),
)
def test_redact_invalid_uri_never_shows_a_part_of_the_password(
    scheme: str, user: str, password: str, after: str
) -> None:
    shown = redact_invalid_uri(f"{scheme}{user}:{password}@{after}")
    assert not set("QZXJK") & set(shown), shown
    assert "\n" not in shown and "\x1b" not in shown


@pytest.mark.parametrize(
    "name, secret",
    [
        ("Authorization", True), ("proxy-authorization", True), ("Cookie", True), ("Set-Cookie", True),
        ("X-Api-Key", True), ("X-Auth-Token", True), ("Private-Token", True), ("X-Session-Id", True),
        ("Ocp-Apim-Subscription-Key", True), ("apikey", True), ("X-Amz-Security-Token", True),
        ("Sec-WebSocket-Key", False), ("Sec-WebSocket-Accept", False), ("Host", False), ("Origin", False),
        ("WWW-Authenticate", False), ("Key", False), ("Keep-Alive", False), ("User-Agent", False),
    ],
)
def test_is_secret_header(name: str, secret: bool) -> None:
    assert is_secret_header(name) is secret
