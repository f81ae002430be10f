"""A chunk's request body on its way to the database: exact length enforced piece by piece, and
either buffered or streamed depending on how fast it arrives.

A fast client's body is streamed into the COPY as it arrives, so that the transfer overlaps the
insert (on a LAN that is most of the difference to a raw INSERT). A slow client's body is read
whole first, so that no pooled database connection waits on a slow link. Memory is one chunk per
request either way (at most MAX_CHUNK_SIZE), and CHUNK_MEMORY for all of a process's requests
together (ChunkMemory). The pieces are never joined either way, and are kept until
the request ends: hashing them (only when a checksum was declared, or to compare with a stored chunk)
runs in a thread, off the event loop."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import AsyncIterator

from aiohttp import web

from service.errors import ChecksumMismatch, ChunkSizeMismatch, ChunkStalled, ChunkTooLarge, ServerBusy

# A client that delivers its first FAST_START bytes within FAST_START_SECONDS (20 MB/s) is streamed.
FAST_START = 1024 * 1024
FAST_START_SECONDS = 0.05
# While streamed, a body silent this long is abandoned: it holds a database connection.
STALL_TIMEOUT = 10.0


class ChunkMemory:
    """The bytes of chunk bodies one process holds at once (CHUNK_MEMORY): a body is kept whole until
    its request ends, so without a bound, many slow clients sending large chunks would take all memory.
    A PUT reserves its chunk's length before reading the body. One that does not fit waits with its body
    unread (TCP holds the client back) and is refused with 503 after `wait` seconds.

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
        self.received = 0
        self.ended = False
        self._pieces: list[bytes] = []
        self._sha256: str | None = None

    async def start(self) -> None:
        """Reads what arrives quickly. A slow client's body is then read whole (and its checksum
        verified) before the caller takes a database connection; a fast one's rest is streamed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FAST_START_SECONDS
        while not self.ended and self.received < FAST_START:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._read()
            except TimeoutError:
                break
        if self.ended or self.received < FAST_START:
            while not self.ended:
                await self._read()
            await self.verify()

    async def pieces(self) -> AsyncIterator[bytes]:
        """Every byte once, in order: what was read already, then the rest as it arrives. Raises (and
        so aborts the COPY it feeds, storing nothing) on a wrong length, a stall, or a checksum mismatch."""
        sent = 0
        while sent < len(self._pieces) or not self.ended:
            if sent == len(self._pieces):
                try:
                    async with asyncio.timeout(STALL_TIMEOUT):
                        await self._read()
                except TimeoutError:
                    raise ChunkStalled(f"no byte of chunk {self.index} for {STALL_TIMEOUT:g} s; nothing stored") from None
                continue
            yield self._pieces[sent]
            sent += 1
        await self.verify()

    async def sha256(self) -> str:
        """Of the whole body (read to its end first)."""
        if self._sha256 is None:
            self._sha256 = await asyncio.to_thread(_sha256, self._pieces)
        return self._sha256

    async def verify(self) -> None:
        if self.declared and await self.sha256() != self.declared:
            raise ChecksumMismatch(f"Content-SHA256 is {self.declared}, the body's is {await self.sha256()}; "
                                   "nothing stored")

    async def _read(self) -> None:
        # One piece as the socket delivered it: readany would join everything buffered into a new
        # bytes object, copying each chunk once more on its way to the database.
        piece, boundary = await self.content.readchunk()
        while not piece and boundary:  # the end of one HTTP chunk of a chunked body, not of the body
            piece, boundary = await self.content.readchunk()
        if not piece:
            if self.received != self.expected:
                raise ChunkSizeMismatch(f"chunk {self.index} must be exactly {self.expected} bytes, "
                                        f"the body has {self.received}")
            self.ended = True
            return
        self.received += len(piece)
        if self.received > self.expected:  # stop reading at once: the rest is never buffered
            raise ChunkSizeMismatch(f"chunk {self.index} must be exactly {self.expected} bytes, the body is longer")
        self._pieces.append(piece)


def _sha256(pieces: list[bytes]) -> str:
    digest = hashlib.sha256()  # releases the GIL on large inputs: the loop keeps serving
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()
