"""Tests for syncws.extensions.permessage_deflate: negotiation and codec (RFC 7692)."""

from __future__ import annotations

import itertools
import logging
import random
import tracemalloc
import zlib
from typing import List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncws.exceptions import NegotiationError, PayloadTooBig, WebSocketProtocolError
from syncws.extensions.permessage_deflate import (
    CLIENT_DEFAULTS,
    DEFAULT_THRESHOLD,
    EXTENSION_NAME,
    INVALID_DATA_CLOSE_CODE,
    SERVER_DEFAULTS,
    ClientDeflateFactory,
    DeflateSettings,
    ExtensionParameters,
    PerMessageDeflate,
    ServerDeflateFactory,
)

TAIL = b"\x00\x00\xff\xff"
MiB = 1 << 20

FAST = settings(max_examples=60, deadline=None)


def sample_text(size: int, seed: int = 0) -> bytes:
    """Compressible but not trivial data: words from a small vocabulary."""
    rnd = random.Random(seed)
    words = [
        bytes(rnd.choice(b"abcdefghijklmnop") for _ in range(rnd.randint(2, 9)))
        for _ in range(200)
    ]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" "
    return bytes(out[:size])


def negotiate(
    client: DeflateSettings = CLIENT_DEFAULTS, server: DeflateSettings = SERVER_DEFAULTS
) -> Tuple[PerMessageDeflate, PerMessageDeflate, ExtensionParameters]:
    """Run a whole negotiation.

    Returns the client's codec, the server's codec and the server's response.
    """
    client_factory = ClientDeflateFactory(client)
    name, offer = client_factory.offer()
    assert name == EXTENSION_NAME
    accepted = ServerDeflateFactory(server).accept([offer])
    assert accepted is not None
    response, server_codec = accepted
    return client_factory.accept(response), server_codec, response


def send(
    sender: PerMessageDeflate,
    receiver: PerMessageDeflate,
    fragments: Sequence[bytes],
    max_size: Optional[int] = None,
) -> Tuple[bytes, List[bytes]]:
    """Compress one message frame by frame and decompress it frame by frame.

    Returns the message as received and the compressed frames.
    """
    frames = [
        sender.compress(fragment, fin=index == len(fragments) - 1)
        for index, fragment in enumerate(fragments)
    ]
    received = bytearray()
    for index, frame in enumerate(frames):
        left = None if max_size is None else max_size - len(received)
        received += receiver.decompress(
            frame, fin=index == len(frames) - 1, max_size=left
        )
    return bytes(received), frames


def inflate_with_zlib(payload: bytes, wbits: int = 15) -> bytes:
    """Decompress one message as RFC 7692 §7.2.2 says, with plain zlib."""
    return zlib.decompressobj(-wbits).decompress(payload + TAIL)


def deflate_with_zlib(data: bytes, wbits: int = 15) -> bytes:
    """Compress one message as RFC 7692 §7.2.1 says, with plain zlib."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    payload = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(TAIL)
    return payload[:-4]


# Settings.


def test_defaults_are_documented_values():
    assert CLIENT_DEFAULTS == DeflateSettings()
    assert SERVER_DEFAULTS.server_max_window_bits == 12
    assert SERVER_DEFAULTS.client_max_window_bits == 12
    assert SERVER_DEFAULTS.mem_level == 5
    assert SERVER_DEFAULTS.compress_level == 6
    assert SERVER_DEFAULTS.threshold == DEFAULT_THRESHOLD == 128


def test_server_default_memory_per_connection():
    """The ~49 KiB per connection the module documents for the server defaults."""
    client, server, _ = negotiate()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        message = sample_text(8000)
        for _ in range(3):
            send(client, server, [message])
            send(server, client, [message])
        del message
        # The client's zlib objects are counted too; take them out.
        client._compressor = client._decompressor = None
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # zlib 1.2.13 measures 49 KiB; other builds (zlib-ng) lay memory out differently.
    assert 30 * 1024 < used < 90 * 1024


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        CLIENT_DEFAULTS.threshold = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (
            {"server_max_window_bits": 7},
            ValueError,
            "server_max_window_bits must be from 8 to 15, got 7",
        ),
        (
            {"server_max_window_bits": 16},
            ValueError,
            "server_max_window_bits must be from 8 to 15",
        ),
        (
            {"client_max_window_bits": 0},
            ValueError,
            "client_max_window_bits must be from 8 to 15",
        ),
        (
            {"client_max_window_bits": "12"},
            TypeError,
            "client_max_window_bits must be an int",
        ),
        (
            {"client_max_window_bits": True},
            TypeError,
            "client_max_window_bits must be an int",
        ),
        (
            {"server_no_context_takeover": 1},
            TypeError,
            "server_no_context_takeover must be a bool",
        ),
        ({"client_no_context_takeover": None}, TypeError, "client_no_context_takeover"),
        ({"compress_level": 10}, ValueError, "compress_level must be from -1 to 9"),
        ({"compress_level": -2}, ValueError, "compress_level"),
        ({"compress_level": 6.0}, TypeError, "compress_level must be an int"),
        ({"mem_level": 0}, ValueError, "mem_level must be from 1 to 9"),
        ({"mem_level": 10}, ValueError, "mem_level"),
        ({"threshold": -1}, ValueError, "threshold must be >= 0"),
        ({"threshold": "1k"}, TypeError, "threshold must be an int"),
    ],
)
def test_settings_reject_bad_values(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        DeflateSettings(**kwargs)


def test_settings_accept_extremes():
    DeflateSettings(
        server_max_window_bits=8, client_max_window_bits=15, compress_level=-1
    )
    DeflateSettings(compress_level=0, mem_level=9, threshold=0)


@pytest.mark.parametrize("factory_class", [ClientDeflateFactory, ServerDeflateFactory])
def test_from_compression(factory_class):
    assert factory_class.from_compression(None) is None
    default = factory_class.from_compression("deflate")
    assert isinstance(default, factory_class)
    assert default.settings == factory_class().settings
    custom = DeflateSettings(threshold=0)
    assert factory_class.from_compression(custom).settings is custom
    with pytest.raises(ValueError, match="unsupported compression 'gzip'"):
        factory_class.from_compression("gzip")
    with pytest.raises(TypeError, match="compression must be"):
        factory_class.from_compression(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="settings must be a DeflateSettings"):
        factory_class({"threshold": 0})  # type: ignore[arg-type]


def test_factory_defaults_and_repr():
    assert ClientDeflateFactory().settings is CLIENT_DEFAULTS
    assert ServerDeflateFactory().settings is SERVER_DEFAULTS
    assert (
        ClientDeflateFactory.name == ServerDeflateFactory.name == "permessage-deflate"
    )
    assert repr(ServerDeflateFactory()).startswith(
        "ServerDeflateFactory(DeflateSettings("
    )


# Negotiation: the client's offer.


@pytest.mark.parametrize(
    "settings, expected",
    [
        (DeflateSettings(), [("client_max_window_bits", None)]),
        (
            DeflateSettings(server_no_context_takeover=True),
            [("server_no_context_takeover", None), ("client_max_window_bits", None)],
        ),
        (
            DeflateSettings(client_no_context_takeover=True),
            [("client_no_context_takeover", None), ("client_max_window_bits", None)],
        ),
        (
            DeflateSettings(server_max_window_bits=10),
            [("server_max_window_bits", "10"), ("client_max_window_bits", None)],
        ),
        (DeflateSettings(client_max_window_bits=9), [("client_max_window_bits", "9")]),
        (
            DeflateSettings(True, True, 8, 15),
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "8"),
                ("client_max_window_bits", "15"),
            ],
        ),
    ],
)
def test_client_offer(settings, expected):
    assert ClientDeflateFactory(settings).offer() == ("permessage-deflate", expected)


# Negotiation: every combination of settings on both sides, end to end.

FLAGS = (False, True)
BITS = (None, 8, 12, 15)
SIDE_SETTINGS = [
    DeflateSettings(snct, cnct, sbits, cbits)
    for snct, cnct, sbits, cbits in itertools.product(FLAGS, FLAGS, BITS, BITS)
]


def settings_id(settings: DeflateSettings) -> str:
    return "{}{}-s{}-c{}".format(
        "S" if settings.server_no_context_takeover else "s",
        "C" if settings.client_no_context_takeover else "c",
        settings.server_max_window_bits,
        settings.client_max_window_bits,
    )


def min_given(*values: Optional[int]) -> Optional[int]:
    given = [value for value in values if value is not None]
    return min(given) if given else None


@pytest.mark.parametrize("client_settings", SIDE_SETTINGS, ids=settings_id)
def test_negotiation_matrix(client_settings):
    """Every client setting against every server setting: what's agreed, and
    that it works."""
    message = sample_text(3000)
    for server_settings in SIDE_SETTINGS:
        client, server, response = negotiate(client_settings, server_settings)

        # RFC 7692 §7.1: what the response must say.
        snct = (
            client_settings.server_no_context_takeover
            or server_settings.server_no_context_takeover
        )
        cnct = (
            client_settings.client_no_context_takeover
            or server_settings.client_no_context_takeover
        )
        sbits = min_given(
            client_settings.server_max_window_bits,
            server_settings.server_max_window_bits,
        )
        cbits = min_given(
            client_settings.client_max_window_bits,
            server_settings.client_max_window_bits,
        )
        expected: ExtensionParameters = []
        if snct:
            expected.append(("server_no_context_takeover", None))
        if cnct:
            expected.append(("client_no_context_takeover", None))
        if sbits is not None:
            expected.append(("server_max_window_bits", str(sbits)))
        if cbits is not None:
            expected.append(("client_max_window_bits", str(cbits)))
        assert response == expected, server_settings

        # Both codecs agree on every parameter, seen from each side.
        assert client.params == server.params == expected
        assert (
            client.local_no_context_takeover
            == server.remote_no_context_takeover
            == cnct
        )
        assert (
            server.local_no_context_takeover
            == client.remote_no_context_takeover
            == snct
        )
        assert (
            client.local_max_window_bits
            == server.remote_max_window_bits
            == (cbits or 15)
        )
        assert (
            server.local_max_window_bits
            == client.remote_max_window_bits
            == (sbits or 15)
        )

        # And they understand each other, over two messages each way.
        for _ in range(2):
            assert send(client, server, [message])[0] == message
            assert send(server, client, [message])[0] == message


# Negotiation: the server.


def test_server_accepts_first_acceptable_offer_and_logs_declines(caplog):
    offers = [
        [("server_max_window_bits", "16")],
        [("x_unknown", None)],
        [("client_max_window_bits", "10"), ("server_no_context_takeover", None)],
        [("client_max_window_bits", None)],
    ]
    with caplog.at_level(logging.DEBUG, logger="syncws.extensions.permessage_deflate"):
        accepted = ServerDeflateFactory().accept(offers)
    assert accepted is not None
    response, codec = accepted
    assert response == [
        ("server_no_context_takeover", None),
        ("server_max_window_bits", "12"),
        ("client_max_window_bits", "10"),
    ]
    assert response == codec.params
    assert not codec.is_client
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert (
        "offer 1" in messages[0]
        and "invalid server_max_window_bits value '16'" in messages[0]
    )
    assert "offer 2" in messages[1] and "unknown parameter x_unknown" in messages[1]


def test_server_with_no_offers_declines():
    assert ServerDeflateFactory().accept([]) is None


@pytest.mark.parametrize(
    "offer, reason",
    [
        (
            [("server_no_context_takeover", None)] * 2,
            "duplicate parameter server_no_context_takeover",
        ),
        (
            [("client_max_window_bits", None), ("client_max_window_bits", "10")],
            "duplicate parameter",
        ),
        (
            [("server_max_window_bits", "10"), ("server_max_window_bits", "10")],
            "duplicate parameter",
        ),
        ([("x-foo", None)], "unknown parameter x-foo"),
        ([("Server_No_Context_Takeover", None)], "unknown parameter"),
        (
            [("server_no_context_takeover", "1")],
            "server_no_context_takeover takes no value",
        ),
        (
            [("client_no_context_takeover", "")],
            "client_no_context_takeover takes no value",
        ),
        ([("server_max_window_bits", None)], "server_max_window_bits needs a value"),
        ([("server_max_window_bits", "7")], "invalid server_max_window_bits value '7'"),
        ([("server_max_window_bits", "16")], "invalid server_max_window_bits"),
        ([("server_max_window_bits", "010")], "without sign or leading zero"),
        ([("server_max_window_bits", "+9")], "invalid server_max_window_bits"),
        ([("server_max_window_bits", "9 ")], "invalid server_max_window_bits"),
        ([("server_max_window_bits", "9\n")], "invalid server_max_window_bits"),
        ([("server_max_window_bits", "")], "invalid server_max_window_bits"),
        (
            [("client_max_window_bits", "abc")],
            "invalid client_max_window_bits value 'abc'",
        ),
        # Arabic-Indic "12": int() would take it.
        (
            [("client_max_window_bits", "\u0661\u0662")],
            "invalid client_max_window_bits",
        ),
        ([("client_max_window_bits", "9.0")], "invalid client_max_window_bits"),
    ],
)
def test_server_declines_malformed_offer(offer, reason, caplog):
    """RFC 7692 §5: the server declines - it doesn't fail the handshake."""
    with caplog.at_level(logging.DEBUG, logger="syncws.extensions.permessage_deflate"):
        assert ServerDeflateFactory(DeflateSettings()).accept([offer]) is None
    assert reason in caplog.text


def test_server_accepts_bare_offer_with_15_bit_client_window():
    """RFC 7692 §7.1.2.2: an offer without client_max_window_bits can't be
    limited; the server accepts it and inflates with the implied 15 bits."""
    accepted = ServerDeflateFactory().accept([[]])
    assert accepted is not None
    params, codec = accepted
    assert params == [("server_max_window_bits", "12")]
    assert codec.remote_max_window_bits == 15 and codec.local_max_window_bits == 12
    accepted = ServerDeflateFactory().accept([[("server_no_context_takeover", None)]])
    assert accepted is not None
    # An offer that can be limited still is.
    accepted = ServerDeflateFactory().accept([[("client_max_window_bits", None)]])
    assert accepted is not None and accepted[0][-1] == ("client_max_window_bits", "12")


@pytest.mark.parametrize("client_max_window_bits", [None, 15])
def test_server_without_client_limit_accepts_offer_without_client_max_window_bits(
    client_max_window_bits,
):
    factory = ServerDeflateFactory(
        DeflateSettings(client_max_window_bits=client_max_window_bits)
    )
    accepted = factory.accept([[]])
    assert accepted is not None
    response, codec = accepted
    assert response == []  # client_max_window_bits can't be in the response
    assert codec.remote_max_window_bits == 15


@pytest.mark.parametrize(
    "server_setting, offered, expected",
    [
        (None, None, None),  # valueless, no limit: omitted
        (12, None, "12"),  # valueless: the server picks
        (None, "10", "10"),  # the client's own limit, echoed
        (12, "10", "10"),
        (9, "10", "9"),
        (8, "15", "8"),
    ],
)
def test_server_answers_client_max_window_bits(server_setting, offered, expected):
    factory = ServerDeflateFactory(
        DeflateSettings(client_max_window_bits=server_setting)
    )
    accepted = factory.accept([[("client_max_window_bits", offered)]])
    assert accepted is not None
    response, codec = accepted
    assert dict(response).get("client_max_window_bits") == expected
    assert codec.remote_max_window_bits == int(expected or 15)


@pytest.mark.parametrize(
    "server_setting, offered, expected",
    [
        (None, None, None),
        (None, "10", "10"),  # the client's request, granted as is
        (12, None, "12"),  # added unasked (RFC 7692 §7.1.2.1)
        (12, "10", "10"),
        (10, "12", "10"),  # smaller than requested is fine
        (None, "8", "8"),  # 8 is honoured too (compressing with 9, see below)
    ],
)
def test_server_answers_server_max_window_bits(server_setting, offered, expected):
    factory = ServerDeflateFactory(
        DeflateSettings(server_max_window_bits=server_setting)
    )
    offer: ExtensionParameters = [("client_max_window_bits", None)]
    if offered is not None:
        offer.insert(0, ("server_max_window_bits", offered))
    accepted = factory.accept([offer])
    assert accepted is not None
    response, codec = accepted
    assert dict(response).get("server_max_window_bits") == expected
    assert codec.local_max_window_bits == int(expected or 15)


@pytest.mark.parametrize("in_offer", [False, True])
@pytest.mark.parametrize("configured", [False, True])
@pytest.mark.parametrize(
    "name, side",
    [("server_no_context_takeover", "local"), ("client_no_context_takeover", "remote")],
)
def test_server_no_context_takeover_in_offer_or_settings(
    name, side, in_offer, configured
):
    """server_no_context_takeover: honoured when requested, added when configured
    (RFC 7692 §7.1.1.1); client_no_context_takeover: echoed when offered,
    required when configured (§7.1.1.2)."""
    offer: ExtensionParameters = [("client_max_window_bits", None)]
    if in_offer:
        offer.append((name, None))
    accepted = ServerDeflateFactory(DeflateSettings(**{name: configured})).accept(
        [offer]
    )
    assert accepted is not None
    response, codec = accepted
    assert ((name, None) in response) == (in_offer or configured)
    assert getattr(codec, f"{side}_no_context_takeover") == (in_offer or configured)


# Negotiation: the client.


@pytest.mark.parametrize(
    "settings, response, fragment",
    [
        (
            CLIENT_DEFAULTS,
            [("server_no_context_takeover", None)] * 2,
            "duplicate parameter",
        ),
        (
            CLIENT_DEFAULTS,
            [("client_max_window_bits", "9")] * 2,
            "duplicate parameter client_max_window_bits",
        ),
        (CLIENT_DEFAULTS, [("mystery", "1")], "unknown parameter mystery"),
        (CLIENT_DEFAULTS, [("server_no_context_takeover", "x")], "takes no value"),
        (CLIENT_DEFAULTS, [("client_no_context_takeover", "x")], "takes no value"),
        (
            CLIENT_DEFAULTS,
            [("server_max_window_bits", None)],
            "server_max_window_bits needs a value",
        ),
        # Valueless is for offers only (RFC 7692 §7.1.2.2).
        (
            CLIENT_DEFAULTS,
            [("client_max_window_bits", None)],
            "client_max_window_bits needs a value",
        ),
        (
            CLIENT_DEFAULTS,
            [("server_max_window_bits", "16")],
            "invalid server_max_window_bits value '16'",
        ),
        (
            CLIENT_DEFAULTS,
            [("server_max_window_bits", "09")],
            "invalid server_max_window_bits value '09'",
        ),
        (
            CLIENT_DEFAULTS,
            [("client_max_window_bits", "-9")],
            "invalid client_max_window_bits",
        ),
        (
            CLIENT_DEFAULTS,
            [("client_max_window_bits", "7")],
            "invalid client_max_window_bits",
        ),
        (
            DeflateSettings(server_no_context_takeover=True),
            [],
            "didn't accept server_no_context_takeover",
        ),
        (
            DeflateSettings(server_max_window_bits=10),
            [],
            "didn't accept server_max_window_bits=10",
        ),
        (
            DeflateSettings(server_max_window_bits=10),
            [("server_max_window_bits", "11")],
            "server_max_window_bits=11 is larger than the 10 the client requested",
        ),
    ],
)
def test_client_fails_on_bad_response(settings, response, fragment):
    """RFC 7692 §5: a client fails the connection on a response it didn't allow."""
    with pytest.raises(NegotiationError, match=fragment) as exc_info:
        ClientDeflateFactory(settings).accept(response)
    assert "permessage-deflate response" in str(exc_info.value)


def test_client_accepts_what_a_server_may_add_unasked():
    """RFC 7692 §7.1.1.1, §7.1.1.2, §7.1.2.1: these may come unrequested."""
    codec = ClientDeflateFactory().accept(
        [
            ("server_no_context_takeover", None),
            ("client_no_context_takeover", None),
            ("server_max_window_bits", "9"),
            ("client_max_window_bits", "8"),
        ]
    )
    assert codec.is_client
    assert codec.local_no_context_takeover and codec.remote_no_context_takeover
    assert codec.remote_max_window_bits == 9
    assert codec.local_max_window_bits == 8


def test_client_accepts_empty_response():
    codec = ClientDeflateFactory().accept([])
    assert codec.params == []
    assert codec.local_max_window_bits == codec.remote_max_window_bits == 15
    assert not codec.local_no_context_takeover and not codec.remote_no_context_takeover


def test_client_keeps_its_own_window_limit_over_a_larger_answer():
    """RFC 7692 §7.1.2.2: an offered value is a promise the client keeps even
    if the server answers with a larger one."""
    codec = ClientDeflateFactory(DeflateSettings(client_max_window_bits=10)).accept(
        [("client_max_window_bits", "13")]
    )
    assert codec.local_max_window_bits == 10
    codec = ClientDeflateFactory(DeflateSettings(client_max_window_bits=10)).accept(
        [("client_max_window_bits", "9")]
    )
    assert codec.local_max_window_bits == 9


def test_client_keeps_its_no_context_takeover_when_not_echoed():
    codec = ClientDeflateFactory(
        DeflateSettings(client_no_context_takeover=True)
    ).accept([])
    assert codec.local_no_context_takeover
    assert ("client_no_context_takeover", None) in codec.params


def test_client_accepts_smaller_server_window_than_requested():
    codec = ClientDeflateFactory(DeflateSettings(server_max_window_bits=12)).accept(
        [("server_max_window_bits", "8")]
    )
    assert codec.remote_max_window_bits == 8


def test_negotiation_through_header_text():
    """The module's structures round-trip through syncws.handshake's header grammar."""
    handshake = pytest.importorskip("syncws.handshake")
    client_factory = ClientDeflateFactory(
        DeflateSettings(server_no_context_takeover=True)
    )
    request_header = handshake.build_extension_list([client_factory.offer()])
    assert (
        request_header
        == "permessage-deflate; server_no_context_takeover; client_max_window_bits"
    )
    offers = [
        params
        for name, params in handshake.parse_extension_list(request_header)
        if name == EXTENSION_NAME
    ]
    accepted = ServerDeflateFactory().accept(offers)
    assert accepted is not None
    response_header = handshake.build_extension_list([(EXTENSION_NAME, accepted[0])])
    ((name, params),) = handshake.parse_extension_list(response_header)
    codec = client_factory.accept(params)
    assert codec.params == accepted[1].params


# Negotiation and codec against websockets, an independent implementation.


def websockets_modules():
    permessage_deflate = pytest.importorskip("websockets.extensions.permessage_deflate")
    frames = pytest.importorskip("websockets.frames")
    return permessage_deflate, frames


def websockets_send(extension, fragments: Sequence[bytes]) -> List[bytes]:
    """Compress one message with a websockets PerMessageDeflate.

    Returns the frames' payloads.
    """
    _, frames = websockets_modules()
    payloads = []
    for index, fragment in enumerate(fragments):
        opcode = frames.Opcode.BINARY if index == 0 else frames.Opcode.CONT
        frame = extension.encode(
            frames.Frame(opcode, fragment, fin=index == len(fragments) - 1)
        )
        assert frame.rsv1 == (index == 0)
        payloads.append(bytes(frame.data))
    return payloads


def websockets_receive(extension, payloads: Sequence[bytes]) -> bytes:
    """Decompress one message with a websockets PerMessageDeflate."""
    _, frames = websockets_modules()
    out = b""
    for index, payload in enumerate(payloads):
        opcode = frames.Opcode.BINARY if index == 0 else frames.Opcode.CONT
        frame = frames.Frame(
            opcode, payload, fin=index == len(payloads) - 1, rsv1=index == 0
        )
        out += bytes(extension.decode(frame, max_size=None).data)
    return out


@pytest.mark.parametrize("client_no_context_takeover", [False, True])
@pytest.mark.parametrize("server_max_window_bits", [None, 9, 12])
def test_websockets_client_against_our_server(
    client_no_context_takeover, server_max_window_bits
):
    permessage_deflate, _ = websockets_modules()
    theirs = permessage_deflate.ClientPerMessageDeflateFactory(
        client_no_context_takeover=client_no_context_takeover,
        server_max_window_bits=server_max_window_bits,
    )
    accepted = ServerDeflateFactory().accept([list(theirs.get_request_params())])
    assert accepted is not None
    response, ours = accepted
    their_codec = theirs.process_response_params(response, [])
    for message in (
        sample_text(5000, 1),
        sample_text(5000, 1),
        b"",
        sample_text(20, 2),
    ):
        fragments = [message[:1000], message[1000:1001], message[1001:]]
        assert (
            websockets_receive(
                their_codec, [ours.compress(f, i == 2) for i, f in enumerate(fragments)]
            )
            == message
        )
        payloads = websockets_send(their_codec, fragments)
        assert (
            b"".join(ours.decompress(p, i == 2) for i, p in enumerate(payloads))
            == message
        )


@pytest.mark.parametrize(
    "settings",
    [
        CLIENT_DEFAULTS,
        DeflateSettings(
            server_no_context_takeover=True, client_no_context_takeover=True
        ),
        DeflateSettings(server_max_window_bits=10, client_max_window_bits=11),
    ],
    ids=settings_id,
)
def test_our_client_against_websockets_server(settings):
    permessage_deflate, _ = websockets_modules()
    theirs = permessage_deflate.ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12
    )
    factory = ClientDeflateFactory(settings)
    response, their_codec = theirs.process_request_params(factory.offer()[1], [])
    ours = factory.accept(list(response))
    for message in (sample_text(5000, 3), sample_text(5000, 3), b"x" * 100_000):
        payloads = [ours.compress(message, fin=True)]
        assert websockets_receive(their_codec, payloads) == message
        payloads = websockets_send(their_codec, [message])
        assert ours.decompress(payloads[0], fin=True) == message


# Codec: basics.


def test_codec_attributes_and_repr():
    client, server, _ = negotiate()
    assert client.name == server.name == PerMessageDeflate.name == "permessage-deflate"
    assert repr(server) == (
        "<PerMessageDeflate server "
        "[server_max_window_bits=12; client_max_window_bits=12] "
        "level=6 mem_level=5 threshold=128>"
    )
    assert repr(PerMessageDeflate(is_client=True)) == (
        "<PerMessageDeflate client [no parameters] level=6 mem_level=5 threshold=128>"
    )
    assert server.threshold == client.threshold == DEFAULT_THRESHOLD


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"server_max_window_bits": 16}, "server_max_window_bits"),
        ({"client_max_window_bits": 7}, "client_max_window_bits"),
        ({"compress_level": 11}, "compress_level"),
        ({"mem_level": 0}, "mem_level"),
        ({"threshold": -5}, "threshold must be >= 0"),
    ],
)
def test_codec_rejects_bad_parameters(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        PerMessageDeflate(is_client=True, **kwargs)


@pytest.mark.parametrize("client_nct", [False, True])
@pytest.mark.parametrize("server_nct", [False, True])
def test_round_trips_both_ways(client_nct, server_nct):
    client, server, _ = negotiate(
        DeflateSettings(
            client_no_context_takeover=client_nct, server_no_context_takeover=server_nct
        )
    )
    messages = [
        sample_text(n, seed) for seed, n in enumerate((1, 50, 500, 5000, 50000, 500))
    ]
    for message in messages:
        assert send(client, server, [message])[0] == message
        assert send(server, client, [message])[0] == message


@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_context_takeover_shrinks_a_repeated_message(no_context_takeover):
    client, server, _ = negotiate(
        DeflateSettings(client_no_context_takeover=no_context_takeover)
    )
    message = sample_text(2000, 7)
    first = client.compress(message, fin=True)
    second = client.compress(message, fin=True)
    if no_context_takeover:
        assert second == first
        assert client._compressor is None  # nothing held between messages
    else:
        # The second copy is one back-reference into the window.
        assert len(second) < len(first) // 10
    assert server.decompress(first, fin=True) == message
    assert server.decompress(second, fin=True) == message


def test_remote_no_context_takeover_drops_the_decompressor():
    client, server, _ = negotiate(DeflateSettings(server_no_context_takeover=True))
    message = sample_text(1000)
    assert send(server, client, [message])[0] == message
    assert client._decompressor is None
    # Independently compressed messages decode, one after the other.
    for _ in range(3):
        assert client.decompress(deflate_with_zlib(message, 12), fin=True) == message


def test_context_takeover_keeps_the_window_across_messages():
    """With context takeover, a message may refer to the previous one's data."""
    _, server, _ = negotiate()
    compressor = zlib.compressobj(6, zlib.DEFLATED, -12)
    message = sample_text(1500, 9)
    payloads = []
    for _ in range(3):
        payload = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        payloads.append(payload[:-4])
    assert len(payloads[1]) < 50  # a back-reference into the first message
    for payload in payloads:
        assert server.decompress(payload, fin=True) == message


def test_fragmented_message_in_three_frames():
    client, server, _ = negotiate()
    message = sample_text(30000, 4)
    fragments = [message[:10000], message[10000:10001], message[10001:]]
    received, frames = send(client, server, fragments)
    assert received == message
    # Non-final frames keep their sync-flush tail; only the last one loses it.
    assert frames[0].endswith(TAIL) and frames[1].endswith(TAIL)
    assert not frames[2].endswith(TAIL)
    assert inflate_with_zlib(b"".join(frames), 12) == message
    # Each frame inflates on arrival, without waiting for the next.
    decompressor = zlib.decompressobj(-12)
    assert decompressor.decompress(frames[0]) == fragments[0]


@pytest.mark.parametrize(
    "fragments",
    [
        [b""],
        [b"", b""],
        [b"abc", b""],
        [b"", b"abc"],
        [b"", b"", b"abc", b"", b""],
        [b"abc", b"", b"def"],
    ],
)
def test_empty_messages_and_fragments(fragments):
    client, server, _ = negotiate()
    received, frames = send(client, server, fragments)
    assert received == b"".join(fragments)
    assert inflate_with_zlib(b"".join(frames), 12) == b"".join(fragments)
    # Again with a compressor and decompressor that have history.
    assert send(client, server, fragments)[0] == b"".join(fragments)


def test_empty_message_is_a_single_zero_byte():
    """RFC 7692 §7.2.3.6: an empty message compresses to the single byte 00."""
    client, server, _ = negotiate()
    assert client.compress(b"", fin=True) == b"\x00"
    assert client.compress(b"", fin=True) == b"\x00"
    assert server.decompress(b"\x00", fin=True) == b""


def test_empty_final_fragment_when_zlib_emits_nothing():
    """Some zlib versions emit nothing for an empty sync flush right after one;
    the final frame must still close the message with 00."""

    class SilentOnEmptyFlush:
        def __init__(self, compressor):
            self.compressor = compressor
            self.pending = False

        def compress(self, data):
            self.pending = bool(data)
            return self.compressor.compress(data)

        def flush(self, mode):
            out = self.compressor.flush(mode)
            return out if self.pending else b""

    client, server, _ = negotiate()
    client.compress(b"warm up", fin=True)
    silent = SilentOnEmptyFlush(client._compressor)
    client._compressor = silent  # type: ignore[assignment]
    received, frames = send(client, server, [b"hello ", b""])
    assert frames[1] == b"\x00"
    assert received == b"hello "


def test_rfc_7692_examples():
    """The payloads of RFC 7692 §7.2.3.1 and §7.2.3.2 ("Hello")."""
    codec = PerMessageDeflate(is_client=False)
    hello = bytes.fromhex("f248cdc9c90700")
    assert codec.decompress(hello, fin=True) == b"Hello"
    # Context takeover: the second "Hello" refers to the first.
    assert codec.decompress(bytes.fromhex("f200110000"), fin=True) == b"Hello"
    # §7.2.3.1, fragmented: the same compressed data split in two frames.
    codec = PerMessageDeflate(is_client=False)
    assert (
        codec.decompress(bytes.fromhex("f248cd"), fin=False)
        + codec.decompress(bytes.fromhex("c9c90700"), fin=True)
        == b"Hello"
    )
    # Our own compression of "Hello" is exactly the RFC's.
    assert PerMessageDeflate(is_client=True).compress(b"Hello", fin=True) == hello


def test_uncompressed_stored_block_and_bfinal_block():
    """RFC 7692 §7.2.3.3 and §7.2.3.4: a stored block, and a block with BFINAL set."""
    codec = PerMessageDeflate(is_client=False)
    # No compression: a stored block holding "Hello".
    assert (
        codec.decompress(
            bytes.fromhex("0005") + b"\x00\xfa\xff" + b"Hello" + b"\x00", fin=True
        )
        == b"Hello"
    )
    # BFINAL=1, then the 00 a sender following §7.2.1 appends.
    assert (
        codec.decompress(bytes.fromhex("f348cdc9c90700") + b"\x00", fin=True)
        == b"Hello"
    )
    # BFINAL=1 ends the zlib stream: the next message gets a new decompressor.
    assert codec._decompressor is None
    assert codec.decompress(bytes.fromhex("f348cdc9c90700"), fin=True) == b"Hello"
    assert codec.decompress(bytes.fromhex("f248cdc9c90700"), fin=True) == b"Hello"


def test_data_after_bfinal_block_is_an_error():
    codec = PerMessageDeflate(is_client=False)
    with pytest.raises(
        WebSocketProtocolError, match="data after the final DEFLATE block"
    ) as exc_info:
        codec.decompress(bytes.fromhex("f348cdc9c90700") + b"garbage", fin=True)
    assert exc_info.value.code == 1007


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # reserved block type 11
        b"\x00\x05\x00\x00\x00",  # stored block whose NLEN is not ~LEN
        bytes.fromhex("f200110000"),  # refers to a window that is empty
    ],
)
def test_corrupt_data_is_1007(payload):
    codec = PerMessageDeflate(is_client=True)
    with pytest.raises(
        WebSocketProtocolError, match="invalid compressed data"
    ) as exc_info:
        codec.decompress(payload, fin=True)
    assert exc_info.value.code == INVALID_DATA_CLOSE_CODE == 1007
    assert isinstance(exc_info.value.__cause__, zlib.error)


@pytest.mark.parametrize("bits", range(8, 16))
def test_window_sizes_8_to_15(bits):
    """Each window size both ways, with data long enough to need the whole window."""
    client, server, response = negotiate(
        DeflateSettings(server_max_window_bits=bits, client_max_window_bits=bits),
        DeflateSettings(),
    )
    assert response == [
        ("server_max_window_bits", str(bits)),
        ("client_max_window_bits", str(bits)),
    ]
    # Repeats at distances around the window size.
    rnd = random.Random(bits)
    block = bytes(rnd.getrandbits(8) for _ in range((1 << bits) - 300))
    message = (block + sample_text(600, bits)) * 4
    for sender, receiver in ((client, server), (server, client)):
        for _ in range(2):
            received, frames = send(sender, receiver, [message[:5000], message[5000:]])
            assert received == message
    # Plain zlib agrees on a fresh codec's output, inflating byte by byte so
    # that no back-reference can reach past the window into the same output.
    payload = PerMessageDeflate(is_client=True, client_max_window_bits=bits).compress(
        message, fin=True
    )
    decompressor = zlib.decompressobj(-bits)
    data = payload + TAIL
    assert (
        b"".join(decompressor.decompress(data[i : i + 1]) for i in range(len(data)))
        == message
    )


def test_window_8_output_fits_a_256_byte_window():
    """zlib can't compress with an 8-bit raw window, so the codec uses 9; that
    stays within the peer's 256 bytes (zlib's distances stop at window - 262)."""
    codec = PerMessageDeflate(is_client=False, server_max_window_bits=8)
    assert codec.local_max_window_bits == 8
    rnd = random.Random(8)
    for size in (100, 200, 250, 256, 300, 400, 511):
        block = bytes(rnd.getrandbits(8) for _ in range(size))
        message = block * 5 + sample_text(3000, size)
        payload = codec.compress(message, fin=True)
        decompressor = zlib.decompressobj(-8)
        data = payload + TAIL
        out = b"".join(
            decompressor.decompress(data[i : i + 1]) for i in range(len(data))
        )
        assert out == message
    # The check is not vacuous: a 10-bit window does break a 256-byte one.
    compressor = zlib.compressobj(6, zlib.DEFLATED, -10)
    block = bytes(rnd.getrandbits(8) for _ in range(300))
    data = compressor.compress(block * 2) + compressor.flush(zlib.Z_SYNC_FLUSH)
    decompressor = zlib.decompressobj(-8)
    with pytest.raises(zlib.error, match="too far back"):
        for i in range(len(data)):
            decompressor.decompress(data[i : i + 1])


def test_big_message():
    client, server, _ = negotiate()
    rnd = random.Random(5)
    message = sample_text(MiB // 2) + bytes(rnd.getrandbits(8) for _ in range(MiB // 2))
    assert send(client, server, [message], max_size=MiB)[0] == message
    fragments = [message[i : i + 300_000] for i in range(0, MiB, 300_000)]
    assert send(server, client, fragments, max_size=MiB)[0] == message


def test_accepts_bytearray_and_memoryview():
    client, server, _ = negotiate()
    payload = client.compress(bytearray(b"hello" * 50), fin=True)
    assert server.decompress(memoryview(payload), fin=True) == b"hello" * 50
    payload = client.compress(memoryview(b"hello" * 50), fin=True)
    assert server.decompress(bytearray(payload), fin=True) == b"hello" * 50


# Codec: interoperability with plain zlib (RFC 7692 §7.2.1, §7.2.2).


@pytest.mark.parametrize("size", [0, 1, 100, 10000, 200000])
def test_our_output_inflates_with_plain_zlib(size):
    codec = PerMessageDeflate(is_client=True)
    message = sample_text(size, size)
    payload = codec.compress(message, fin=True)
    assert not payload.endswith(TAIL) or size == 0
    assert inflate_with_zlib(payload) == message


@pytest.mark.parametrize("size", [0, 1, 100, 10000, 200000])
@pytest.mark.parametrize("wbits", [9, 15])
def test_plain_zlib_output_inflates_with_ours(size, wbits):
    codec = PerMessageDeflate(is_client=True, server_max_window_bits=wbits)
    message = sample_text(size, size)
    assert codec.decompress(deflate_with_zlib(message, wbits), fin=True) == message


# Codec: size limits and decompression bombs.


def test_max_size_is_exact():
    client, server, _ = negotiate()
    message = sample_text(10000)
    assert (
        server.decompress(client.compress(message, fin=True), fin=True, max_size=10000)
        == message
    )
    payload = client.compress(message, fin=True)
    with pytest.raises(PayloadTooBig, match="more than 9999 bytes after decompression"):
        server.decompress(payload, fin=True, max_size=9999)


def test_max_size_zero_allows_only_empty():
    client, server, _ = negotiate()
    assert (
        server.decompress(client.compress(b"", fin=True), fin=True, max_size=0) == b""
    )
    with pytest.raises(PayloadTooBig, match="more than 0 bytes"):
        server.decompress(client.compress(b"x", fin=True), fin=True, max_size=0)


def test_max_size_across_fragments():
    """The caller passes what is left; the limit holds over the whole message."""
    client, server, _ = negotiate()
    fragments = [sample_text(4000, i) for i in range(3)]
    assert send(client, server, fragments, max_size=12000)[0] == b"".join(fragments)
    with pytest.raises(PayloadTooBig, match="more than 3999 bytes"):
        send(client, server, fragments, max_size=11999)


def test_negative_max_size_is_a_bug():
    with pytest.raises(ValueError, match="max_size must be >= 0"):
        PerMessageDeflate(is_client=True).decompress(b"\x00", fin=True, max_size=-1)


def test_max_size_none_is_unlimited():
    client, server, _ = negotiate()
    message = bytes(8 * MiB)
    assert (
        server.decompress(client.compress(message, fin=True), fin=True, max_size=None)
        == message
    )


def make_bomb() -> Tuple[bytes, int]:
    """About 1 MiB of DEFLATE data that inflates to 1 GiB of zeros, built without
    allocating 1 GiB: outputs of fresh compressors ending in a sync flush are
    concatenable DEFLATE block sequences, so one 1 MiB unit is repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert unit.endswith(TAIL)
    assert len(zlib.decompressobj(-15).decompress(unit)) == MiB
    count = 1024
    return (unit * count)[:-4], count * MiB


def peak_memory_while(function) -> int:
    """Peak traced memory, in bytes above the start, while function() runs."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        function()
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def test_decompression_bomb_in_one_frame():
    bomb, inflated_size = make_bomb()
    assert inflated_size >= 1 << 30
    assert len(bomb) < 1.1 * MiB
    codec = PerMessageDeflate(is_client=True)

    def run():
        with pytest.raises(
            PayloadTooBig, match=f"more than {MiB} bytes after decompression"
        ):
            codec.decompress(bomb, fin=True, max_size=MiB)

    assert peak_memory_while(run) < 8 * MiB


def test_decompression_bomb_in_many_frames():
    bomb, _ = make_bomb()
    codec = PerMessageDeflate(is_client=True)
    frames = [bomb[i : i + 65536] for i in range(0, len(bomb), 65536)]

    def run():
        received = 0
        with pytest.raises(PayloadTooBig):
            for index, frame in enumerate(frames):
                received += len(
                    codec.decompress(
                        frame, fin=index == len(frames) - 1, max_size=MiB - received
                    )
                )
        assert received <= MiB

    assert peak_memory_while(run) < 8 * MiB


# Properties.

settings_strategy = st.builds(
    DeflateSettings,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=st.one_of(st.none(), st.integers(8, 15)),
    client_max_window_bits=st.one_of(st.none(), st.integers(8, 15)),
    compress_level=st.integers(-1, 9),
    mem_level=st.integers(1, 9),
    threshold=st.integers(0, 700),
)
messages_strategy = st.lists(
    st.lists(
        st.binary(max_size=300) | st.sampled_from([b"", b"abc" * 200]),
        min_size=1,
        max_size=4,
    ),
    min_size=1,
    max_size=5,
)


@FAST
@given(
    client_settings=settings_strategy,
    server_settings=settings_strategy,
    messages=messages_strategy,
)
def test_any_settings_any_fragmentation_round_trip(
    client_settings, server_settings, messages
):
    client, server, _ = negotiate(client_settings, server_settings)
    for fragments in messages:
        message = b"".join(fragments)
        assert send(client, server, fragments)[0] == message
        assert send(server, client, fragments, max_size=len(message))[0] == message


@FAST
@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "server_no_context_takeover",
                    "client_no_context_takeover",
                    "server_max_window_bits",
                    "client_max_window_bits",
                    "other",
                ]
            ),
            st.one_of(
                st.none(), st.sampled_from(["8", "9", "12", "15", "16", "08", ""])
            ),
        ),
        max_size=5,
    )
)
def test_server_never_raises_and_its_answers_satisfy_the_client(params):
    """Whatever the offer, the server accepts or declines; when it accepts, a
    client that made that offer accepts the answer."""
    accepted = ServerDeflateFactory(DeflateSettings()).accept([params])
    if accepted is None:
        return
    response, server = accepted
    # Rebuild the settings of a client that would have made this offer.
    offer = dict(params)
    client_settings = DeflateSettings(
        server_no_context_takeover="server_no_context_takeover" in offer,
        client_no_context_takeover="client_no_context_takeover" in offer,
        server_max_window_bits=(
            int(offer["server_max_window_bits"])
            if "server_max_window_bits" in offer
            else None
        ),
        client_max_window_bits=(
            int(offer["client_max_window_bits"])
            if offer.get("client_max_window_bits")
            else None
        ),
    )
    client = ClientDeflateFactory(client_settings).accept(response)
    message = sample_text(3000)
    assert send(client, server, [message])[0] == message
    assert send(server, client, [message])[0] == message
