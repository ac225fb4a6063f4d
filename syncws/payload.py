"""The buffer a large frame's payload is received into, then delivered from.

Theory of operation
-------------------

A binary message of a megabyte arrives over many reads. The reader thread
receives it straight into one buffer of the frame's size (``recv_into``),
the core unmasks it there, and ``recv()`` must return it as :class:`bytes`.
With a :class:`bytearray`, that costs two passes over the payload that carry
nothing: zeroing the buffer when it is made, and copying it into a
:class:`bytes` object at the end.

:class:`PayloadBuffer` avoids both: it is a writable buffer of a fixed size,
and :meth:`~PayloadBuffer.take` turns it into the :class:`bytes` object, once,
and empties it. Two implementations with identical behaviour:

* the C accelerator's (``syncws._speedups.PayloadBuffer``), which receives
  into a :class:`bytes` object that no one else has seen yet, left
  uninitialized, and hands that very object over (the only way to fill a
  :class:`bytes` object after creating it, which Python code can't do);
* :class:`PyPayloadBuffer`, a :class:`bytearray` that copies on
  :meth:`~PyPayloadBuffer.take`: the pure-Python fallback, always importable
  under that name so that tests can compare both.

Rules they share: the buffer is written through :class:`memoryview`; its
size never changes until :meth:`take`; :meth:`take` raises
:exc:`BufferError` while a memoryview of it is alive (which could otherwise
change the bytes after they were delivered), and once it was taken; a taken
buffer is empty.

Threads: a buffer belongs to the one thread that fills it (the reader
thread, under the core's lock); nothing here is shared.
"""

from __future__ import annotations

from typing import Type

from .accelerator import SPEEDUPS

__all__ = ["PayloadBuffer", "PyPayloadBuffer"]


class PyPayloadBuffer(bytearray):
    """A writable buffer of ``size`` bytes that becomes :class:`bytes`; pure-Python implementation.

    Args:
        size: the buffer's size in bytes; its content starts zeroed (the C
            version's starts undefined: write it all before :meth:`take`).

    Raises:
        ValueError: ``size`` is negative.
    """

    __slots__ = ("_taken",)

    def __init__(self, size: int, /) -> None:
        if size < 0:
            raise ValueError(f"size must not be negative, got {size}")
        super().__init__(size)
        self._taken = False

    def take(self) -> bytes:
        """Return the buffer's bytes, as a :class:`bytes` object; the buffer is then empty.

        Raises:
            BufferError: a memoryview of the buffer is alive (as when a
                :class:`bytearray` with one is resized), or the bytes were
                taken already.
        """
        if self._taken:
            raise BufferError("the payload buffer was taken already")
        data = bytes(self)
        del self[:]  # raises BufferError while a memoryview is alive
        self._taken = True
        return data


#: The implementation in use: the C one when the accelerator is built (see
#: :mod:`syncws.accelerator`), else :class:`PyPayloadBuffer`.
PayloadBuffer: Type[PyPayloadBuffer]
if SPEEDUPS is not None:
    PayloadBuffer = SPEEDUPS.PayloadBuffer
else:
    PayloadBuffer = PyPayloadBuffer
