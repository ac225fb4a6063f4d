"""Benchmark the core's receive and send paths on the common frames.

Run it as ``python bench/core_parse.py`` (add ``SYNCWS_NO_SPEEDUPS=1`` for the
pure-Python path); it takes about ten seconds.  This is a benchmark, not a
test: it prints numbers and never fails on them.

It measures, in microseconds per message, the best of seven rounds (noise only
ever adds time):

* ``batch 1 KiB masked``: 64 masked 1 KiB text frames joined into one chunk,
  fed to a server-side :class:`~syncws.core.ConnectionCore` by one
  ``receive_data`` call, 2000 times;
* ``one 16 B masked``: one masked 16-byte text frame per ``receive_data``;
* ``batch 1 KiB unmasked`` and ``one 16 B unmasked``: the same, unmasked,
  into a client-side core;
* ``encode 16 B masked``: serializing one masked 16-byte text frame into one
  ``bytes`` object, with :func:`~syncws.framing.encode_frame` (then joined)
  and with :func:`~syncws.framing.pack_frame`.
"""

from __future__ import annotations

import os
import sys
import timeit
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from syncws import framing  # noqa: E402
from syncws.core import ConnectionCore  # noqa: E402
from syncws.framing import Opcode, encode_frame  # noqa: E402
from syncws.masking import HAS_SPEEDUPS  # noqa: E402

ROUNDS = 7


def best(function: Callable[[], object], number: int, messages: int) -> float:
    """The best of :data:`ROUNDS` rounds, in µs per message."""
    times = timeit.repeat(function, number=number, repeat=ROUNDS)
    return min(times) / (number * messages) * 1e6


def frame(payload: bytes, masked: bool) -> bytes:
    """One text frame's bytes."""
    header, data = encode_frame(True, Opcode.TEXT, payload, mask_key=os.urandom(4) if masked else None)
    return header + bytes(data)


def receive(masked: bool, size: int, count: int, number: int) -> float:
    """µs per message: ``count`` frames of ``size`` bytes per receive_data call."""
    chunk = b"".join(frame(b"x" * size, masked) for _ in range(count))
    core = ConnectionCore(is_client=not masked)
    core.open()
    receive_data = core.receive_data
    result = best(lambda: receive_data(chunk), number, count)
    assert core.messages_received == count * number * ROUNDS
    return result


def main() -> None:
    print(f"{sys.implementation.name} {sys.version.split()[0]}, C speedups: {'yes' if HAS_SPEEDUPS else 'no'}")
    for masked in (True, False):
        side = "masked" if masked else "unmasked"
        print(f"batch 1 KiB {side:9}  {receive(masked, 1024, 64, 2000):6.3f} µs/message")
        print(f"one 16 B {side:12}  {receive(masked, 16, 1, 200_000):6.3f} µs/message")
    payload = b"x" * 16
    key = os.urandom(4)

    def joined() -> bytes:
        header, data = encode_frame(True, Opcode.TEXT, payload, mask_key=key)
        return header + data  # type: ignore[operator]

    print(f"encode 16 B masked, encode_frame + join  {best(joined, 200_000, 1):6.3f} µs/frame")
    pack_frame = getattr(framing, "pack_frame", None)
    if pack_frame is not None:
        print(f"encode 16 B masked, pack_frame           {best(lambda: pack_frame(0x81, payload, key), 200_000, 1):6.3f} µs/frame")


if __name__ == "__main__":
    main()
