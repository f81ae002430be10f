"""A chunk's request body: read whole, with its exact length enforced as it arrives, before any
database connection is taken, then stored as one bind parameter.

Why not streamed into a COPY as it arrives (as chunkd did first): measured on 8 MiB chunks, PostgreSQL
spends about 15 % more CPU on a row that comes as binary COPY data than on the same bytes as a bind
parameter (the COPY data passes through two more of its buffers), and that costs more than the
overlap of transfer and insert gains: a sequential client's chunks went through about 10 % faster
(bench/upload.py, x1). A slow client also never holds a pooled connection this way.

Memory is the body, plus the driver's encoded copy of it while it is stored: ChunkMemory counts both,
for all of a process's requests together (CHUNK_MEMORY). Hashing the body (only when a checksum was
declared, or to compare with a stored chunk) runs in a thread, off the event loop."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator

from aiohttp import web

from service.errors import ChecksumMismatch, ChunkSizeMismatch, ChunkStalled, ChunkTooLarge, ServerBusy

# A body silent this long is abandoned (408): it holds its share of CHUNK_MEMORY. The client resends
# the chunk.
STALL_TIMEOUT = 10.0


class ChunkMemory:
    """The bytes of chunk bodies one process holds at once (CHUNK_MEMORY): a body is kept whole until
    its request ends, so without a bound, many slow clients sending large chunks would take all memory.
    A PUT reserves what its chunk will take before reading the body. One that does not fit waits with its
    body unread (TCP holds the client back) and is refused with 503 after `wait` seconds.

    No lock: the event loop runs one task at a time, and neither taking room nor giving it back awaits
    in between, so a cancelled request can neither take room it never gives back nor leak what it has."""

    def __init__(self, limit: int, wait: float) -> None:
        self.limit, self.wait, self.used = limit, wait, 0
        self._freed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def reserve(self, length: int) -> AsyncIterator[None]:
        length = min(length, self.limit)  # a chunk larger than the whole budget waits until it is all free
        try:
            async with asyncio.timeout(self.wait):
                while self.used + length > self.limit:
                    self._freed.clear()
                    await self._freed.wait()  # every release wakes every waiter; each checks again
        except TimeoutError:
            raise ServerBusy(f"{self.used} bytes of chunks are in flight (CHUNK_MEMORY is {self.limit}); "
                             "retry shortly", headers={"Retry-After": "1"}) from None
        self.used += length
        try:
            yield
        finally:
            self.used -= length
            self._freed.set()


class ChunkBody:
    def __init__(self, request: web.Request, expected: int, max_chunk: int, index: int,
                 declared_sha256: str | None) -> None:
        length = request.content_length
        if length is not None and length > max_chunk:
            raise ChunkTooLarge(f"Content-Length {length} is more than MAX_CHUNK_SIZE ({max_chunk})")
        if length is not None and length != expected:
            raise ChunkSizeMismatch(f"chunk {index} must be exactly {expected} bytes, Content-Length is {length}")
        self.content, self.expected, self.index, self.declared = request.content, expected, index, declared_sha256
        self.data = bytearray()
        self._sha256: str | None = None

    async def read(self) -> bytearray:
        """The whole body, its checksum verified. Raises on a wrong length, a stall or a mismatch."""
        self.data = bytearray(self.expected)
        view, received = memoryview(self.data), 0
        while piece := await self._next_piece():
            if received + len(piece) > self.expected:  # stop reading at once: the rest is never buffered
                raise ChunkSizeMismatch(f"chunk {self.index} must be exactly {self.expected} bytes, "
                                        "the body is longer")
            view[received:received + len(piece)] = piece
            received += len(piece)
        if received != self.expected:
            raise ChunkSizeMismatch(f"chunk {self.index} must be exactly {self.expected} bytes, "
                                    f"the body has {received}")
        if self.declared and await self.sha256() != self.declared:
            raise ChecksumMismatch(f"Content-SHA256 is {self.declared}, the body's is {await self.sha256()}; "
                                   "nothing stored")
        return self.data

    async def sha256(self) -> str:
        """Of the whole body (read first)."""
        if self._sha256 is None:
            self._sha256 = await asyncio.to_thread(_sha256, self.data)
        return self._sha256

    async def _next_piece(self) -> bytes:
        """The next piece as the socket delivered it (readany would join what is buffered into one more
        copy); b"" at the end of the body."""
        try:
            async with asyncio.timeout(STALL_TIMEOUT):
                piece, boundary = await self.content.readchunk()
                while not piece and boundary:  # the end of one HTTP chunk of a chunked body, not of the body
                    piece, boundary = await self.content.readchunk()
        except TimeoutError:
            raise ChunkStalled(f"no byte of chunk {self.index} for {STALL_TIMEOUT:g} s; nothing stored") from None
        return piece


def _sha256(data: bytearray) -> str:
    return hashlib.sha256(data).hexdigest()  # releases the GIL on large inputs: the loop keeps serving
