"""Masking and unmasking of frame payloads (RFC 6455, section 5.3).

Theory of operation
-------------------

Every byte a client sends is XORed with a 4-byte key, ``payload[i] ^
mask[i % 4]``, and every byte a server receives is XORed back.  Masking is an
involution: the same function masks and unmasks.  It is the hot loop of the
client-to-server direction, so this module is only about doing it fast.

Two public functions:

* :func:`apply_mask` returns a new :class:`bytes` object; the writer uses it
  to mask an outgoing payload.
* :func:`apply_mask_inplace` XORs a writable buffer in place; the reader
  thread uses it to unmask a payload it read into a preallocated
  :class:`bytearray`, which saves one copy per frame.

Both come in two implementations with identical behaviour:

* a C accelerator, ``syncws._speedups`` (built from ``speedups.c`` when a
  compiler is available at install time), which XORs 16 bytes at a time and
  releases the GIL on large payloads so other threads keep running;
* a pure-Python fallback, :func:`py_apply_mask` and
  :func:`py_apply_mask_inplace`, always importable under those names so that
  tests and benchmarks can compare both paths.

:data:`HAS_SPEEDUPS` says which one :func:`apply_mask` and
:func:`apply_mask_inplace` are; :mod:`syncws.accelerator` picks it (and
explains ``SYNCWS_NO_SPEEDUPS``, which forces the pure-Python path).

The pure-Python path uses two strategies, picked by payload size (the
crossover was measured with ``python bench/mask.py``):

* below :data:`_LANES_MIN_SIZE` bytes, the *big-integer* trick: turn the
  payload and the repeated key into two integers, XOR them, and turn the
  result back into bytes.  Few Python-level operations, so little overhead
  on the tiny payloads that make up most WebSocket traffic;
* from :data:`_LANES_MIN_SIZE` bytes up, the *lane* strategy: bytes ``j``,
  ``j + 4``, ``j + 8``... all meet the same key byte, so each of the four
  lanes is gathered with an extended slice, XORed by :meth:`bytes.translate`
  with a precomputed 256-byte table, and scattered back.  All three steps run
  as tight C loops inside CPython, faster than the big-integer
  conversions, which walk the payload byte by byte twice more.

Argument rules, shared by both implementations:

* ``data`` may be any bytes-like object (:class:`bytes`, :class:`bytearray`,
  :class:`memoryview`, :mod:`array`...).  Its raw bytes are masked in C
  order, so a non-contiguous :class:`memoryview` is accepted and the result
  has ``nbytes`` bytes.
* ``buffer`` must be writable and C-contiguous; anything else raises
  :exc:`TypeError`, because a read-only buffer cannot be masked in place and
  a strided one is never what the reader thread hands over.
* ``mask`` may be any bytes-like object of exactly 4 bytes; another length
  raises :exc:`ValueError`.
* Arguments are positional-only, as in the C functions.
"""

from __future__ import annotations

import functools
from typing import Callable, Union

from .accelerator import SPEEDUPS

__all__ = [
    "HAS_SPEEDUPS",
    "apply_mask",
    "apply_mask_inplace",
    "py_apply_mask",
    "py_apply_mask_inplace",
]

#: Anything exposing the buffer protocol; spelled out because
#: ``collections.abc.Buffer`` only exists from Python 3.12.
BytesLike = Union[bytes, bytearray, memoryview]

#: True when :func:`apply_mask` and :func:`apply_mask_inplace` are the C
#: implementations from ``syncws._speedups``.
HAS_SPEEDUPS: bool = SPEEDUPS is not None

#: Payload size from which the pure-Python path switches from the big-integer
#: trick to the four-lane :meth:`bytes.translate` strategy, where the two
#: cross (``python bench/mask.py``); below, the lanes' twelve slicing
#: operations cost more than the big-integer conversions they replace.
_LANES_MIN_SIZE = 512

# Little-endian keeps byte i of the payload at bits 8*i..8*i+7 of the integer,
# so the repeated key lines up with the payload from its first byte.  Either
# order measured the same speed; this one needs no reasoning about padding.
_from_bytes = int.from_bytes


@functools.lru_cache(maxsize=None)
def _xor_tables() -> tuple[bytes, ...]:
    """The 256 translation tables, ``table[k][b] == b ^ k``, built on first use.

    Built when the pure-Python path first masks a large payload, not at
    import: 256 tables of 256 bytes, which a process using the C
    accelerator never needs. Built with big-integer XORs, much faster than
    a per-byte generator.

    Returns:
        A tuple indexed by key byte, each item a 256-byte table for
        :meth:`bytes.translate`.
    """
    identity = _from_bytes(bytes(range(256)), "little")
    ones = _from_bytes(b"\x01" * 256, "little")
    # ones * k repeats byte k 256 times: k <= 255 never carries into the
    # neighbouring byte.
    return tuple(
        (identity ^ (ones * k)).to_bytes(256, "little") for k in range(256)
    )


def _checked_mask(mask: BytesLike) -> bytes:
    """Return ``mask`` as 4 bytes, or raise; the slow path of the mask check.

    Callers test ``type(mask) is bytes and len(mask) == 4`` inline first, so
    the usual case pays no function call.

    Args:
        mask: The masking key given by the caller.

    Returns:
        The key as a :class:`bytes` object of length 4.

    Raises:
        TypeError: If ``mask`` is not a bytes-like object.
        ValueError: If ``mask`` is not exactly 4 bytes long.
    """
    # memoryview() rejects what is not bytes-like: bytes(4) would silently
    # give four zero bytes and bytes([1, 2, 3, 4]) would accept a list.
    key = memoryview(mask).tobytes()
    if len(key) != 4:
        raise ValueError(f"mask must be exactly 4 bytes long, got {len(key)} bytes")
    return key


def _writable_byte_view(buffer: BytesLike) -> memoryview:
    """Return a flat, writable view of unsigned bytes over ``buffer``.

    Args:
        buffer: The object given to :func:`py_apply_mask_inplace`.

    Returns:
        A one-dimensional memoryview of format ``"B"`` covering the whole
        buffer.

    Raises:
        TypeError: If ``buffer`` is not bytes-like, is read-only, or is not
            C-contiguous.
    """
    view = memoryview(buffer)
    if view.readonly:
        raise TypeError(
            f"buffer must be writable (e.g. a bytearray), "
            f"got a read-only {type(buffer).__name__}"
        )
    if not view.c_contiguous:
        raise TypeError("buffer must be C-contiguous, got a strided memoryview")
    # Items wider than a byte (array("I"), ctypes arrays...) are masked as
    # their raw bytes, like the C implementation does.
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


def _xor_lanes(buffer: bytearray, mask: bytes) -> None:
    """XOR ``buffer`` with the repeated ``mask`` in place, lane by lane.

    Each extended slice below is a gather (or scatter) loop in C, and
    :meth:`bytes.translate` a table lookup loop in C: the per-byte work never
    reaches the interpreter.

    Args:
        buffer: The bytes to mask; modified in place.
        mask: The 4-byte key, already checked.
    """
    tables = _xor_tables()
    buffer[0::4] = buffer[0::4].translate(tables[mask[0]])
    buffer[1::4] = buffer[1::4].translate(tables[mask[1]])
    buffer[2::4] = buffer[2::4].translate(tables[mask[2]])
    buffer[3::4] = buffer[3::4].translate(tables[mask[3]])


def _masked_copy_lanes(data: BytesLike, mask: bytes) -> bytes:
    """Return masked ``data`` using the lane strategy (large payloads).

    Args:
        data: The bytes to mask; any bytes-like object.
        mask: The 4-byte key, already checked.

    Returns:
        The masked bytes.
    """
    # bytearray() copies the raw bytes of any buffer, strided or not, with
    # one memcpy in the common contiguous case.
    buffer = bytearray(data)
    _xor_lanes(buffer, mask)
    return bytes(buffer)


def _masked_copy_int(data: bytes | bytearray, size: int, mask: bytes) -> bytes:
    """Return masked ``data`` using the big-integer trick (small payloads).

    Args:
        data: The bytes to mask.
        size: ``len(data)``, which every caller has already computed.
        mask: The 4-byte key, already checked.

    Returns:
        The masked bytes.
    """
    # One key repetition too many, then a slice, measured cheaper than
    # mask * (size // 4) + mask[: size % 4] (two slices and a concatenation).
    key = (mask * ((size >> 2) + 1))[:size]
    return (_from_bytes(data, "little") ^ _from_bytes(key, "little")).to_bytes(
        size, "little"
    )


def py_apply_mask(data: BytesLike, mask: BytesLike, /) -> bytes:
    """Mask or unmask ``data`` with ``mask``; pure-Python implementation.

    Args:
        data: The payload; any bytes-like object, masked as its raw bytes.
        mask: The 4-byte masking key; any bytes-like object.

    Returns:
        A new :class:`bytes` object, ``data[i] ^ mask[i % 4]`` for each byte.

    Raises:
        TypeError: If ``data`` or ``mask`` is not a bytes-like object.
        ValueError: If ``mask`` is not exactly 4 bytes long.
    """
    if type(mask) is not bytes or len(mask) != 4:
        mask = _checked_mask(mask)
    if type(data) is not bytes:
        # memoryview() rejects non-buffers, which int.from_bytes() would
        # accept as iterables of ints, and gives the raw size as nbytes.
        view = memoryview(data)
        if view.nbytes >= _LANES_MIN_SIZE:
            return _masked_copy_lanes(view, mask)
        data = view.tobytes()
    size = len(data)
    if size >= _LANES_MIN_SIZE:
        return _masked_copy_lanes(data, mask)
    return _masked_copy_int(data, size, mask)


def py_apply_mask_inplace(buffer: BytesLike, mask: BytesLike, /) -> None:
    """XOR ``buffer`` with ``mask`` in place; pure-Python implementation.

    Not safe against concurrent changes to ``buffer`` from another thread:
    the caller owns the buffer while it is being unmasked.

    Args:
        buffer: A writable, C-contiguous bytes-like object, such as a
            :class:`bytearray` or a writable :class:`memoryview` of one.
        mask: The 4-byte masking key; any bytes-like object.

    Raises:
        TypeError: If ``buffer`` is not a writable C-contiguous bytes-like
            object, or ``mask`` is not bytes-like.
        ValueError: If ``mask`` is not exactly 4 bytes long.
    """
    if type(mask) is not bytes or len(mask) != 4:
        mask = _checked_mask(mask)
    if type(buffer) is bytearray:
        size = len(buffer)
        if size >= _LANES_MIN_SIZE:
            _xor_lanes(buffer, mask)
        else:
            # Same length, so this is a memcpy, never a resize: it works
            # even while other views of the bytearray are exported.
            buffer[:] = _masked_copy_int(buffer, size, mask)
        return
    # Memoryviews have no translate() and slow strided copies, so mask a
    # contiguous copy and write it back in one memcpy.
    view = _writable_byte_view(buffer)
    view[:] = py_apply_mask(view, mask)


# Annotated so that type checkers see the same signature whichever
# implementation is picked (SPEEDUPS is typed as any module).
apply_mask: Callable[[BytesLike, BytesLike], bytes]
apply_mask_inplace: Callable[[BytesLike, BytesLike], None]
if SPEEDUPS is not None:
    apply_mask = SPEEDUPS.apply_mask
    apply_mask_inplace = SPEEDUPS.apply_mask_inplace
else:
    apply_mask = py_apply_mask
    apply_mask_inplace = py_apply_mask_inplace
