"""Helpers for the socket-free tests of :mod:`syncws.core`.

They play the peer of a :class:`~syncws.core.ConnectionCore`: build the bytes
it would send (masked when the core is a server, since its peer is then a
client) and parse what the core wants to send (checking that a client masks
every frame and a server none).
"""

from __future__ import annotations

import io
import socket
import struct
from typing import Any, Callable, Iterator, List, Optional, Union

import pytest
from hypothesis import HealthCheck, settings

from syncws.core import ConnectionCore, Fragment
from syncws.extensions.permessage_deflate import PerMessageDeflate
from syncws.framing import Frame, Opcode, encode_frame, serialize_close
from syncws.masking import apply_mask

MASK = b"\x37\xfa\x21\x3d"

Data = Union[str, bytes]


def make(
    side: str = "server",
    *,
    deflate: bool = False,
    max_message_size: Optional[int] = 2**20,
    max_fragment_size: Optional[int] = None,
    threshold: int = 0,
    opened: bool = True,
) -> ConnectionCore:
    """A core on ``side`` ("client" or "server"), open unless ``opened`` is false."""
    is_client = side == "client"
    codec = PerMessageDeflate(is_client=is_client, threshold=threshold) if deflate else None
    core = ConnectionCore(
        is_client=is_client,
        max_message_size=max_message_size,
        max_fragment_size=max_fragment_size,
        deflate=codec,
    )
    if opened:
        core.open()
    return core


def peer_deflate(core: ConnectionCore) -> PerMessageDeflate:
    """A permessage-deflate codec for the peer of ``core``."""
    return PerMessageDeflate(is_client=not core.is_client)


def peer_frame(
    core: ConnectionCore,
    opcode: int,
    payload: Union[bytes, str] = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
) -> bytes:
    """The bytes of one frame as the peer of ``core`` sends it."""
    if isinstance(payload, str):
        payload = payload.encode()
    mask_key = None if core.is_client else MASK
    header, body = encode_frame(fin, opcode, payload, rsv1=rsv1, mask_key=mask_key)
    return header + bytes(body)


def raw_frame(
    core: ConnectionCore,
    first: int,
    payload: bytes = b"",
    *,
    masked: Optional[bool] = None,
    length: Optional[int] = None,
) -> bytes:
    """A frame with any first byte (RSV2, reserved opcodes, long control frames...).

    ``masked`` defaults to what the peer of ``core`` must do; ``length``
    overrides the announced length (the payload is then what follows).
    """
    if masked is None:
        masked = not core.is_client
    if length is None:
        length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 0x10000:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if masked:
        return header + MASK + apply_mask(payload, MASK)
    return header + payload


def property_settings(max_examples: int, derandomize: bool = True) -> settings:
    """Hypothesis settings for the parsers' property tests: no deadline and no
    example database, and (by default) the same examples on every run."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def reader(data: bytes) -> Callable[[int], bytes]:
    """A ``read_exact(n)`` over ``data``, for :func:`~syncws.framing.read_frame`: EOFError at the end."""
    stream = io.BytesIO(data)

    def read_exact(size: int) -> bytes:
        chunk = stream.read(size)
        if len(chunk) < size:
            raise EOFError
        return chunk

    return read_exact


def parse_frames(data: bytes, *, masked: bool) -> List[Frame]:
    """Parse serialized frames, checking that each is masked iff ``masked``."""
    frames = []
    position = 0
    while position < len(data):
        first, second = data[position], data[position + 1]
        assert bool(second & 0x80) == masked, f"mask bit {bool(second & 0x80)}, expected {masked}"
        length = second & 0x7F
        position += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, position)
            position += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, position)
            position += 8
        key = None
        if masked:
            key = data[position : position + 4]
            position += 4
        payload = data[position : position + length]
        assert len(payload) == length, "truncated frame"
        position += length
        if key is not None:
            payload = apply_mask(payload, key)
        frames.append(
            Frame(
                bool(first & 0x80),
                Opcode(first & 0x0F),
                bytes(payload),
                bool(first & 0x40),
                bool(first & 0x20),
                bool(first & 0x10),
            )
        )
    return frames


def output(core: ConnectionCore) -> bytes:
    """Take the bytes ``core`` wants to send, and tell it they were written, as a writer does."""
    data = core.data_to_send()
    core.data_written(data)
    return b"".join(bytes(chunk) for chunk in data)


def sent(core: ConnectionCore) -> List[Frame]:
    """Take the frames ``core`` wants to send, unmasked (masking checked)."""
    return parse_frames(output(core), masked=core.is_client)


def close_frame(code: int, reason: str = "") -> Frame:
    """The frame a close with ``code`` and ``reason`` is."""
    return Frame(True, Opcode.CLOSE, serialize_close(code, reason))


def join_messages(events: List[Any]) -> Iterator[Data]:
    """Whole messages from events: a str/bytes, or fragments joined up to ``fin``."""
    pieces: List[Data] = []
    for event in events:
        if isinstance(event, (str, bytes)):
            assert not pieces, "a whole message inside a fragmented one"
            yield event
        elif isinstance(event, Fragment):
            pieces.append(event.data)
            if event.fin:
                yield pieces[0][:0].join(pieces)  # type: ignore[arg-type]
                pieces = []


def _no_socket(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the core tests must not use sockets")


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sockets unusable, to prove the core needs none."""
    monkeypatch.setattr(socket, "socket", _no_socket)
    monkeypatch.setattr(socket, "create_connection", _no_socket)
    monkeypatch.setattr(socket, "socketpair", _no_socket)
