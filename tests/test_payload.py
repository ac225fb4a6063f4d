"""Tests for syncws.payload: both PayloadBuffer implementations, alike.

Every test runs on the pure-Python implementation and, whenever
``syncws._speedups`` imports, on the C one too (CI requires the extension:
see tests/test_masking.py).
"""

from __future__ import annotations

import gc
import sys
from typing import Any, List

import pytest

from syncws import payload
from syncws.core import ConnectionCore
from syncws.framing import Opcode

try:
    from syncws import _speedups
except ImportError:
    _speedups = None

IMPLS: List[Any] = [payload.PyPayloadBuffer]
if _speedups is not None:
    IMPLS.append(_speedups.PayloadBuffer)


@pytest.fixture(params=IMPLS, ids=["python", "c"][: len(IMPLS)])
def impl(request: pytest.FixtureRequest) -> Any:
    """Each available implementation in turn."""
    return request.param


def test_public_name_is_the_accelerated_one() -> None:
    expected = _speedups.PayloadBuffer if payload.SPEEDUPS is not None else payload.PyPayloadBuffer
    assert payload.PayloadBuffer is expected


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 2**20 + 3])
def test_filled_through_a_memoryview_then_taken(impl: Any, size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    buffer = impl(size)
    assert len(buffer) == size
    with memoryview(buffer) as view:
        assert not view.readonly and view.nbytes == size and view.format == "B"
        view[:] = data
    taken = buffer.take()
    assert type(taken) is bytes and taken == data
    assert hash(taken) == hash(data)  # no stale cached hash


def test_filled_in_pieces(impl: Any) -> None:
    buffer = impl(10)
    with memoryview(buffer) as view:
        view[:4] = b"abcd"
        view[4:10] = b"efghij"
    assert buffer.take() == b"abcdefghij"


def test_take_refuses_while_a_view_is_alive(impl: Any) -> None:
    buffer = impl(4)
    view = memoryview(buffer)
    view[:] = b"abcd"
    with pytest.raises(BufferError):
        buffer.take()
    view.release()
    assert buffer.take() == b"abcd"


def test_a_slice_of_a_view_keeps_it_exported(impl: Any) -> None:
    buffer = impl(4)
    part = memoryview(buffer)[1:3]
    with pytest.raises(BufferError):
        buffer.take()
    part.release()
    assert len(buffer.take()) == 4


def test_taken_once_then_empty(impl: Any) -> None:
    buffer = impl(3)
    memoryview(buffer)[:] = b"xyz"
    assert buffer.take() == b"xyz"
    assert len(buffer) == 0
    assert memoryview(buffer).nbytes == 0
    with pytest.raises(BufferError):
        buffer.take()


def test_the_taken_bytes_are_not_kept(impl: Any) -> None:
    buffer = impl(100)
    taken = buffer.take()
    del buffer
    gc.collect()
    assert sys.getrefcount(taken) == 2  # the name and the call's argument


def test_negative_size(impl: Any) -> None:
    with pytest.raises(ValueError):
        impl(-1)


def test_core_copies_when_a_view_outlives_its_read() -> None:
    """A reader that keeps get_buffer()'s view must not be able to change a delivered message."""
    core = ConnectionCore(is_client=True)
    core.open()
    payload_bytes = b"p" * 5000
    core.receive_data(bytes([0x80 | Opcode.BINARY, 126]) + len(payload_bytes).to_bytes(2, "big") + b"p")
    view = core.get_buffer()
    assert view is not None
    view[:] = payload_bytes[1:]
    (message,) = core.buffer_updated(len(view))
    assert message == payload_bytes
    view[:1] = b"!"  # the kept view writes into the buffer, not the message
    assert message == payload_bytes
