"""Type stub of the optional C accelerator (syncws/speedups.c) for masking."""

from typing import Union

BytesLike = Union[bytes, bytearray, memoryview]

def apply_mask(data: BytesLike, mask: BytesLike, /) -> bytes: ...
def apply_mask_inplace(buffer: BytesLike, mask: BytesLike, /) -> None: ...
