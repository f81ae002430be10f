"""An appended upload's request body (tus, the IETF draft), stored as chunk rows from the upload's offset
on; service/bodies.py receives it in pieces.

Without a digest to match, every piece (one row of up to chunk_size bytes) commits together with the
offset it advances, on a pooled connection taken for that one transaction: when the client disconnects,
is too slow or is taken over, the bytes received so far are kept and the offset says exactly how many
(the spec's "store as much as possible"). With one (tus Upload-Checksum, the draft's Content-Digest)
nothing may become visible before the whole body is verified: past its first piece the body waits in
a temporary file, and goes into one transaction once the digest matches; a mismatch or a cut-off
body leaves the upload as it was. Either way no connection waits on the client's link."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Protocol

import asyncpg

from service.bodies import COPIES, Body, BodyBroken, BodyDisconnected, BodyEnded, BodyStopped, BodyTooLong, BodyTooSlow
from service.db import Pool
from service.errors import (
    ApiError,
    BadRequest,
    ClientClosedRequest,
    TusLengthExceeded,
    TusUploadInterrupted,
    TusUploadTimeout,
    UploadNotFound,
)
from service.metrics import BYTES_RECEIVED
from service.models import File
from service.store import tus as store
from service.tus_locks import Writer


@dataclass(frozen=True)
class Received:
    """Where the upload stands after a body: its committed offset and expiry, and the error to answer
    with once the caller has looked at them (kept bytes may have completed the upload), or None."""

    offset: int
    expires_at: datetime | None
    error: ApiError | None


Progress = Callable[[int], Awaitable[None]]
Committed = Callable[[int, bytearray], None]  # a row's index and bytes, once its transaction committed


class Verifier(Protocol):
    """A digest the whole body must match (tus Upload-Checksum, the draft's Content-Digest)."""

    @property
    def digest(self) -> bytes: ...

    def new(self) -> hashlib._Hash: ...

    def mismatch(self) -> ApiError: ...


async def receive(
    body: Body,
    writer: Writer,
    pool: Pool,
    upload: File,
    expiry_seconds: int,
    verifier: Verifier | None,
    on_stored: Progress | None = None,
    on_committed: Committed | None = None,
) -> Received:
    """Stores the body after the upload's last row; says where the upload stands after it. The Body
    must have been made with `hasher=verifier.new()` when there is a verifier. on_stored hears each new
    committed offset (the draft's progress 104s); on_committed each row stored on its own, with its
    bytes (service.streaming.offer_chunk: the streamer need not read them back)."""
    rows = _Rows(pool, upload, expiry_seconds, on_stored, on_committed)
    async with pool.acquire() as conn:
        rows.index = await store.get_next_chunk_index(conn, upload.id)
    if verifier is None:
        error = await _receive(body, writer, rows, upload.chunk_size)
    else:
        error = await _receive_verified(body, writer, rows, upload.chunk_size, verifier)
    return Received(rows.offset, rows.expires_at, error)


async def _receive(body: Body, writer: Writer, rows: _Rows, chunk_size: int) -> ApiError | None:
    while True:
        error = None
        try:
            piece = await body.read_piece(chunk_size)
        except BodyEnded as e:
            piece, error = body.partial, _error(e, writer, body)
        if piece:
            await rows.store(piece)
            body.release(piece)
        if error is not None or len(piece) < chunk_size:
            return error


async def _receive_verified(
    body: Body, writer: Writer, rows: _Rows, chunk_size: int, verifier: Verifier
) -> ApiError | None:
    """One piece is kept in memory; a longer body goes to a temporary file until it is verified."""
    spool: IO[bytes] | None = None
    try:
        while True:
            try:
                piece = await body.read_piece(chunk_size)
            except BodyEnded as e:  # an unverified body is never kept, even in part
                return _error(e, writer, body)
            if spool is None and len(piece) < chunk_size:  # the whole body in one piece
                break
            if spool is None:
                spool = await asyncio.to_thread(tempfile.TemporaryFile)
            await asyncio.to_thread(spool.write, piece)
            body.release(piece)
            if len(piece) < chunk_size:
                break
        assert body.hasher is not None
        if body.hasher.digest() != verifier.digest:
            return verifier.mismatch()
        if spool is None:
            await rows.store_together(_held(piece), body)
        else:
            await asyncio.to_thread(spool.seek, 0)
            await rows.store_together(_read_back(spool, chunk_size, body), body)
        return None
    finally:
        if spool is not None:
            await asyncio.to_thread(spool.close)


async def _held(piece: bytearray) -> AsyncIterator[bytearray]:
    """The one piece of a short body, whose memory the body already holds."""
    if piece:
        yield piece


async def _read_back(spool: IO[bytes], size: int, body: Body) -> AsyncIterator[bytes]:
    """The spooled pieces, each counted in the body's memory while it is stored."""
    while piece := await asyncio.to_thread(spool.read, size):
        await body.share.take(COPIES * len(piece))
        try:
            yield piece
        finally:
            body.share.give(COPIES * len(piece))


def _error(ended: BodyEnded, writer: Writer, body: Body) -> ApiError:
    if isinstance(ended, BodyStopped):
        if writer.forced:
            return UploadNotFound("the upload was terminated while this request was writing it")
        return TusUploadInterrupted(
            "this request stalled and a newer one took the upload over; what arrived before is kept"
        )
    if isinstance(ended, BodyTooLong):
        return TusLengthExceeded(f"the body goes past the upload's length ({body.max_bytes} bytes were left)")
    if isinstance(ended, BodyTooSlow):
        return TusUploadTimeout(f"{ended}; what arrived before is kept")
    assert isinstance(ended, BodyBroken)
    # A connection lost mid-body is the client leaving (499), not a bad request; a body that cannot be
    # framed is (400).
    kind = ClientClosedRequest if isinstance(ended, BodyDisconnected) else BadRequest
    return kind(f"{ended}; HEAD the upload for the offset that was kept")


class _Rows:
    """Appends chunk rows after the upload's last one, each committed with the offset it advances, or
    all in one transaction."""

    def __init__(
        self, pool: Pool, upload: File, expiry_seconds: int, on_stored: Progress | None, on_committed: Committed | None
    ) -> None:
        self.pool, self.upload_id, self.protocol, self.expiry = pool, upload.id, upload.protocol, expiry_seconds
        self.on_stored, self.on_committed = on_stored, on_committed
        self.offset, self.expires_at = upload.offset, upload.expires_at
        self.index = 0

    async def store(self, piece: bytearray) -> None:
        async with self.pool.acquire_bulk() as conn, conn.transaction():
            await self._insert(conn, piece)
            await self._advance(conn, len(piece))
        if self.on_committed is not None:
            self.on_committed(self.index - 1, piece)
        BYTES_RECEIVED.labels(self.protocol).inc(len(piece))
        if self.on_stored is not None:
            await self.on_stored(self.offset)

    async def store_together(self, pieces: AsyncIterator[bytes | bytearray], body: Body) -> None:
        """Every piece, or none: one connection, one transaction; the pieces come from memory or a local
        file, never from the client."""
        count = 0
        async with self.pool.acquire_bulk() as conn, conn.transaction():
            async for piece in pieces:
                await self._insert(conn, piece)
                count += len(piece)
            if count:
                await self._advance(conn, count)
        BYTES_RECEIVED.labels(self.protocol).inc(count)
        if count and self.on_stored is not None:
            await self.on_stored(self.offset)

    async def _insert(self, conn: asyncpg.Connection, piece: bytes | bytearray) -> None:
        try:
            await store.insert_chunk(conn, self.upload_id, self.index, piece)
        except asyncpg.ForeignKeyViolationError:
            raise UploadNotFound("the upload was removed while this request was writing it") from None
        self.index += 1

    async def _advance(self, conn: asyncpg.Connection, count: int) -> None:
        moved = await store.advance_offset(conn, self.upload_id, self.offset, count, self.expiry)
        if moved is None:  # raises inside the transaction: the chunk goes with it
            raise UploadNotFound("the upload is no longer being uploaded")
        self.offset, self.expires_at = moved
