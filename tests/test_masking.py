"""Tests for syncws.masking: both implementations, against a reference and each other.

Every test runs on the pure-Python implementation and, whenever
``syncws._speedups`` imports, on the C one too.  No test is skipped when the
extension is missing; instead CI sets ``SYNCWS_REQUIRE_SPEEDUPS=1`` and
:func:`test_speedups_available_when_required` fails if it was not built.
"""

from __future__ import annotations

import array
import os
import random
import subprocess
import sys
from typing import Callable, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncws import masking

try:
    from syncws import _speedups
except ImportError as exc:
    _speedups = None
    SPEEDUPS_IMPORT_ERROR: str = repr(exc)
else:
    SPEEDUPS_IMPORT_ERROR = ""


class Impl(NamedTuple):
    """One implementation of the two masking functions."""

    name: str
    apply_mask: Callable[..., bytes]
    apply_mask_inplace: Callable[..., None]


IMPLS = [Impl("python", masking.py_apply_mask, masking.py_apply_mask_inplace)]
if _speedups is not None:
    IMPLS.append(Impl("c", _speedups.apply_mask, _speedups.apply_mask_inplace))


@pytest.fixture(params=IMPLS, ids=[impl.name for impl in IMPLS])
def impl(request: pytest.FixtureRequest) -> Impl:
    """Each available implementation in turn."""
    return request.param


def reference_mask(data: bytes, mask: bytes) -> bytes:
    """RFC 6455 section 5.3, written for obviousness, not speed."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def payload(size: int) -> bytes:
    """Deterministic pseudo-random bytes, so failures reproduce."""
    # Random bytes rather than a counting pattern, whose period could hide a
    # lane mix-up.
    return random.Random(size).randbytes(size)


MASK = b"\x9a\x3c\x01\xf7"

# 0..40 covers every tail length around the 8- and 16-byte blocks of the C
# code; the larger sizes straddle the pure-Python strategy switch
# (_LANES_MIN_SIZE), the C unrolled loop, and the C GIL release (64 KiB).
SMALL_SIZES = list(range(41))
LARGE_SIZES = [
    63,
    64,
    65,
    125,
    126,
    masking._LANES_MIN_SIZE - 1,
    masking._LANES_MIN_SIZE,
    masking._LANES_MIN_SIZE + 1,
    4099,
    64 * 1024,
    64 * 1024 + 3,
    1024 * 1024 + 5,
]
REFERENCE = {
    size: reference_mask(payload(size), MASK) for size in SMALL_SIZES + LARGE_SIZES
}


# Which implementation the public names point to.


def test_speedups_available_when_required() -> None:
    """CI sets SYNCWS_REQUIRE_SPEEDUPS=1: a missing extension must fail there."""
    if os.environ.get("SYNCWS_REQUIRE_SPEEDUPS", "") in ("", "0"):
        return
    assert masking.HAS_SPEEDUPS, (
        "SYNCWS_REQUIRE_SPEEDUPS is set but syncws.masking uses pure Python: "
        f"importing syncws._speedups gave {SPEEDUPS_IMPORT_ERROR or 'no error'}, "
        f"SYNCWS_NO_SPEEDUPS={os.environ.get('SYNCWS_NO_SPEEDUPS', '')!r}"
    )


def test_public_names_match_has_speedups() -> None:
    if masking.HAS_SPEEDUPS:
        assert _speedups is not None
        assert masking.apply_mask is _speedups.apply_mask
        assert masking.apply_mask_inplace is _speedups.apply_mask_inplace
    else:
        assert masking.apply_mask is masking.py_apply_mask
        assert masking.apply_mask_inplace is masking.py_apply_mask_inplace


@pytest.mark.parametrize("value, expected", [("1", False), ("0", _speedups is not None)])
def test_no_speedups_environment_variable(value: str, expected: bool) -> None:
    # A fresh interpreter: the variable is read once, at import time.
    code = (
        "from syncws import masking\n"
        "print(masking.HAS_SPEEDUPS, masking.apply_mask is masking.py_apply_mask)\n"
    )
    env = dict(os.environ, SYNCWS_NO_SPEEDUPS=value)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.split() == [str(expected), str(not expected)]


# Correctness against the reference, all argument types.


@pytest.mark.parametrize("size", SMALL_SIZES + LARGE_SIZES)
def test_apply_mask_bytes(impl: Impl, size: int) -> None:
    result = impl.apply_mask(payload(size), MASK)
    assert type(result) is bytes
    assert result == REFERENCE[size]


@pytest.mark.parametrize("size", SMALL_SIZES + LARGE_SIZES)
def test_apply_mask_bytearray_and_memoryview(impl: Impl, size: int) -> None:
    data = payload(size)
    for arg in (bytearray(data), memoryview(data), memoryview(bytearray(data))):
        result = impl.apply_mask(arg, MASK)
        assert type(result) is bytes
        assert result == REFERENCE[size]
        assert arg == data  # the argument is left alone


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 33, 4099, 64 * 1024 + 3])
@pytest.mark.parametrize("offset", range(16))
def test_apply_mask_any_alignment(impl: Impl, size: int, offset: int) -> None:
    data = payload(size + offset)
    expected = reference_mask(data[offset:], MASK)
    assert impl.apply_mask(memoryview(data)[offset:], MASK) == expected


@pytest.mark.parametrize("size", SMALL_SIZES + LARGE_SIZES)
def test_apply_mask_inplace_bytearray(impl: Impl, size: int) -> None:
    buffer = bytearray(payload(size))
    assert impl.apply_mask_inplace(buffer, MASK) is None
    assert buffer == REFERENCE[size]


@pytest.mark.parametrize("size", SMALL_SIZES + LARGE_SIZES)
def test_apply_mask_inplace_memoryview(impl: Impl, size: int) -> None:
    buffer = bytearray(payload(size))
    impl.apply_mask_inplace(memoryview(buffer), MASK)
    assert buffer == REFERENCE[size]


@pytest.mark.parametrize("size", [0, 5, 33, masking._LANES_MIN_SIZE + 3, 70000])
@pytest.mark.parametrize("offset", range(9))
def test_apply_mask_inplace_slice_leaves_rest_alone(
    impl: Impl, size: int, offset: int
) -> None:
    # The reader thread unmasks a payload read into part of a larger buffer.
    data = payload(offset + size + 5)
    buffer = bytearray(data)
    impl.apply_mask_inplace(memoryview(buffer)[offset : offset + size], MASK)
    assert buffer[:offset] == data[:offset]
    assert buffer[offset : offset + size] == reference_mask(
        data[offset : offset + size], MASK
    )
    assert buffer[offset + size :] == data[offset + size :]


def test_apply_mask_inplace_with_exported_views(impl: Impl) -> None:
    # A live memoryview forbids resizing the bytearray; masking must not try.
    for size in (10, 5000):
        buffer = bytearray(payload(size))
        view = memoryview(buffer)
        impl.apply_mask_inplace(buffer, MASK)
        assert view == reference_mask(payload(size), MASK)
        view.release()


@pytest.mark.parametrize("size", [6, 5000])
def test_apply_mask_inplace_mask_aliasing_buffer(impl: Impl, size: int) -> None:
    # The key is read before the buffer changes, even when they share memory.
    data = payload(size)
    buffer = bytearray(data)
    impl.apply_mask_inplace(buffer, memoryview(buffer)[:4])
    assert buffer == reference_mask(data, data[:4])


def test_mask_any_bytes_like(impl: Impl) -> None:
    data = payload(125)
    expected = REFERENCE[125]
    for mask in (bytearray(MASK), memoryview(MASK), array.array("B", MASK)):
        assert impl.apply_mask(data, mask) == expected
        buffer = bytearray(data)
        impl.apply_mask_inplace(buffer, mask)
        assert buffer == expected
    # A 4-byte mask made of one 32-bit item counts as 4 bytes.
    wide = array.array("I", [int.from_bytes(MASK, sys.byteorder)])
    assert impl.apply_mask(data, wide) == expected


def test_mask_strided_memoryview(impl: Impl) -> None:
    spread = bytes(b for byte in MASK for b in (byte, 0))
    assert impl.apply_mask(payload(125), memoryview(spread)[::2]) == REFERENCE[125]


# Non-contiguous and multi-byte buffers: apply_mask masks their raw bytes;
# apply_mask_inplace accepts multi-byte contiguous ones, rejects strided ones.


@pytest.mark.parametrize("size", [0, 1, 30, 2 * masking._LANES_MIN_SIZE + 7, 140001])
def test_apply_mask_strided_memoryview(impl: Impl, size: int) -> None:
    data = payload(size)
    strided = memoryview(data)[::2]
    assert not strided.c_contiguous or size <= 2
    assert impl.apply_mask(strided, MASK) == reference_mask(data[::2], MASK)


def test_apply_mask_multibyte_items(impl: Impl) -> None:
    items = array.array("I", range(1000, 1300))
    raw = items.tobytes()
    result = impl.apply_mask(items, MASK)
    assert len(result) == len(raw) == 1200
    assert result == reference_mask(raw, MASK)
    # Also through a multi-dimensional view of the same bytes.
    assert impl.apply_mask(memoryview(raw).cast("B", (40, 30)), MASK) == result


def test_apply_mask_inplace_multibyte_items(impl: Impl) -> None:
    for count in (3, 300):
        items = array.array("I", range(count))
        raw = items.tobytes()
        impl.apply_mask_inplace(items, MASK)
        assert items.tobytes() == reference_mask(raw, MASK)


def test_apply_mask_inplace_rejects_strided(impl: Impl) -> None:
    buffer = bytearray(payload(100))
    with pytest.raises(TypeError, match="C-contiguous"):
        impl.apply_mask_inplace(memoryview(buffer)[::2], MASK)
    assert buffer == payload(100)


# Errors.


@pytest.mark.parametrize("mask", [b"", b"\x01", b"abc", b"abcde", bytes(8)])
def test_mask_wrong_length(impl: Impl, mask: bytes) -> None:
    message = f"mask must be exactly 4 bytes long, got {len(mask)} bytes"
    with pytest.raises(ValueError, match=message):
        impl.apply_mask(b"data", mask)
    with pytest.raises(ValueError, match=message):
        impl.apply_mask(bytearray(b"data"), bytearray(mask))
    with pytest.raises(ValueError, match=message):
        impl.apply_mask_inplace(bytearray(b"data"), mask)


@pytest.mark.parametrize("mask", ["abcd", 4, [1, 2, 3, 4], None])
def test_mask_not_bytes_like(impl: Impl, mask: object) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask(b"data", mask)
    with pytest.raises(TypeError):
        impl.apply_mask_inplace(bytearray(b"data"), mask)


@pytest.mark.parametrize("data", ["text", 4, [1, 2, 3, 4], None])
def test_apply_mask_data_not_bytes_like(impl: Impl, data: object) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask(data, MASK)


@pytest.mark.parametrize(
    "buffer", [b"read-only", memoryview(b"read-only"), memoryview(bytearray(9)).toreadonly()]
)
def test_apply_mask_inplace_rejects_read_only(impl: Impl, buffer: object) -> None:
    with pytest.raises(TypeError, match="buffer must be writable"):
        impl.apply_mask_inplace(buffer, MASK)


@pytest.mark.parametrize("buffer", ["text", 4, [1, 2, 3, 4], None])
def test_apply_mask_inplace_not_bytes_like(impl: Impl, buffer: object) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask_inplace(buffer, MASK)


def test_positional_only(impl: Impl) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask(data=b"data", mask=MASK)
    with pytest.raises(TypeError):
        impl.apply_mask(b"data")
    with pytest.raises(TypeError):
        impl.apply_mask_inplace(bytearray(b"data"), MASK, MASK)


# Properties, and C against pure Python.


@given(data=st.binary(max_size=3000), mask=st.binary(min_size=4, max_size=4))
def test_masking_is_an_involution(data: bytes, mask: bytes) -> None:
    for impl in IMPLS:
        assert impl.apply_mask(impl.apply_mask(data, mask), mask) == data


@given(
    data=st.binary(max_size=3000),
    mask=st.binary(min_size=4, max_size=4),
    offset=st.integers(min_value=0, max_value=15),
)
def test_implementations_agree(data: bytes, mask: bytes, offset: int) -> None:
    # Runs whenever the C module imports; with one implementation it still
    # checks pure Python against the reference.
    view = memoryview(data)[offset:]
    expected = reference_mask(data[offset:], mask)
    for impl in IMPLS:
        assert impl.apply_mask(view, mask) == expected, impl.name
        buffer = bytearray(data)
        impl.apply_mask_inplace(memoryview(buffer)[offset:], mask)
        assert buffer[offset:] == expected, impl.name
        assert buffer[:offset] == data[:offset], impl.name


def test_large_payload_c_matches_python() -> None:
    # Beyond hypothesis's sizes: a 3 MiB payload with a ragged end, through
    # the GIL-releasing path of the C code and the lane path of Python.
    data = os.urandom(3 * 1024 * 1024 + 3)
    mask = os.urandom(4)
    expected = masking.py_apply_mask(data, mask)
    assert masking.py_apply_mask(expected, mask) == data
    for impl in IMPLS:
        assert impl.apply_mask(data, mask) == expected
        buffer = bytearray(data)
        impl.apply_mask_inplace(buffer, mask)
        assert buffer == expected
