"""Type stub of the optional C accelerator (syncws/speedups.c).

Each function mirrors a pure-Python one: masking.py_apply_mask,
masking.py_apply_mask_inplace, framing.py_parse_simple_frames,
framing.py_pack_frame and transport.py_send_nowait (POSIX only);
PayloadBuffer mirrors payload.PyPayloadBuffer.
"""

from typing import Any, List, Optional, Union

BytesLike = Union[bytes, bytearray, memoryview]

def apply_mask(data: BytesLike, mask: BytesLike, /) -> bytes: ...
def apply_mask_inplace(buffer: BytesLike, mask: BytesLike, /) -> None: ...
def parse_simple_frames(
    buffer: BytesLike,
    position: int,
    end: int,
    masked: bool,
    limit: int,
    out: List[Any],
    /,
) -> int: ...
def pack_frame(
    first: int, payload: Union[BytesLike, str], mask_key: Optional[BytesLike], key_offset: Optional[int] = None, /
) -> bytes: ...

def send_nowait(sock: Any, data: BytesLike, /) -> Optional[memoryview]: ...

class PayloadBuffer:
    def __init__(self, size: int, /) -> None: ...
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...
    def take(self) -> bytes: ...
