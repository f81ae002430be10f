"""A native chunk's request body: received whole (service/bodies.py) with its exact length enforced as
it arrives, before any database connection is taken, then stored as one bind parameter.

Why not streamed into a COPY as it arrives (as chunkd did first): measured on 8 MiB chunks, PostgreSQL
spends about 15 % more CPU on a row that comes as binary COPY data than on the same bytes as a bind
parameter (the COPY data passes through two more of its buffers), and that costs more than the
overlap of transfer and insert gains: a sequential client's chunks went through about 10 % faster
(bench/upload.py, x1). A slow client also never holds a pooled connection this way.

A chunk that ends badly keeps nothing: the client sends it again. Its SHA-256 is computed as the bytes
arrive when the client declared one (Content-SHA256); otherwise only to compare it with a stored chunk,
in a thread, off the event loop."""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import web

from service.bodies import Body, BodyEnded, BodyTooLong, BodyTooSlow, Pace, Share
from service.errors import BadRequest, ChecksumMismatch, ChunkSizeMismatch, ChunkStalled, ChunkTooLarge
from service.keys import settings_key


class ChunkBody:
    def __init__(
        self, request: web.Request, expected: int, max_chunk: int, index: int, declared_sha256: str | None
    ) -> None:
        length = request.content_length
        if length is not None and length > max_chunk:
            raise ChunkTooLarge(f"Content-Length {length} is more than MAX_CHUNK_SIZE ({max_chunk})")
        if length is not None and length != expected:
            raise ChunkSizeMismatch(f"chunk {index} must be exactly {expected} bytes, Content-Length is {length}")
        self.request, self.expected, self.index, self.declared = request, expected, index, declared_sha256
        self.data = bytearray()
        self._sha256: str | None = None

    async def read(self, share: Share) -> bytearray:
        """The whole body, its checksum verified; its memory is the share's until the request ends.
        Raises on a wrong length, a body too slow or broken, or a mismatch."""
        hasher = hashlib.sha256() if self.declared else None
        pace = Pace.from_settings(self.request.app[settings_key])
        try:
            async with Body(
                self.request.content,
                share,
                pace,
                max_bytes=self.expected,
                hasher=hasher,
                transport=self.request.transport,
            ) as body:
                self.data = await body.read_all()
        except BodyTooLong:
            raise ChunkSizeMismatch(
                f"chunk {self.index} must be exactly {self.expected} bytes, the body is longer"
            ) from None
        except BodyTooSlow as e:
            raise ChunkStalled(f"chunk {self.index}: {e}; nothing stored") from None
        except BodyEnded as e:  # broken off (no stop event is given: nothing else ends it)
            raise BadRequest(f"chunk {self.index}: {e}; nothing stored") from None
        if len(self.data) != self.expected:
            raise ChunkSizeMismatch(
                f"chunk {self.index} must be exactly {self.expected} bytes, the body has {len(self.data)}"
            )
        if hasher is not None:
            self._sha256 = hasher.hexdigest()
            if self._sha256 != self.declared:
                raise ChecksumMismatch(
                    f"Content-SHA256 is {self.declared}, the body's is {self._sha256}; nothing stored"
                )
        return self.data

    async def sha256(self) -> str:
        """Of the whole body (read first)."""
        if self._sha256 is None:
            self._sha256 = await asyncio.to_thread(_sha256, self.data)
        return self._sha256


def _sha256(data: bytearray) -> str:
    return hashlib.sha256(data).hexdigest()  # releases the GIL on large inputs: the loop keeps serving
