"""A tus request body, stored as chunk rows from the upload's offset on (service/bodies.py receives it).

Without Upload-Checksum every piece (one row of up to chunk_size bytes) commits together with the
offset it advances, on a pooled connection taken for that one statement pair: when the client
disconnects, is too slow or is taken over, the bytes received so far are kept and the offset says
exactly how many (the spec's "store as much as possible"). With Upload-Checksum nothing may become
visible before the whole body is verified: the pieces wait in a temporary file (past the first) and
go into one transaction once the digest matches; a mismatch or a cut-off body leaves the upload as it
was. Either way no connection waits on the client's link."""
from __future__ import annotations

import asyncio
import tempfile
from typing import IO

import asyncpg

from service.bodies import Body, BodyBroken, BodyEnded, BodyStopped, BodyTooLong, BodyTooSlow
from service.db import Pool
from service.errors import (ApiError, BadRequest, TusChecksumMismatch, TusLengthExceeded, TusUploadInterrupted,
                            TusUploadTimeout, UploadNotFound)
from service.metrics import BYTES_RECEIVED
from service.store import tus as store
from service.store.tus import TusUpload
from service.tus import Checksum
from service.tus_locks import Writer


async def receive(body: Body, writer: Writer, pool: Pool, upload: TusUpload, expiry_seconds: int,
                  checksum: Checksum | None) -> ApiError | None:
    """Stores the body after the upload's last row. Returns the error to answer with once the caller
    has looked at the new state (kept bytes may have completed the upload), or None."""
    rows = _Rows(pool, upload, expiry_seconds)
    async with pool.acquire() as conn:
        rows.index = await store.next_chunk_index(conn, upload.id)
    if checksum is None:
        return await _receive(body, writer, rows, upload.chunk_size)
    return await _receive_verified(body, writer, rows, upload.chunk_size, checksum)


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


async def _receive_verified(body: Body, writer: Writer, rows: _Rows, chunk_size: int,
                            checksum: Checksum) -> ApiError | None:
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
        if body.hasher.digest() != checksum.digest:
            return TusChecksumMismatch(f"the body's {checksum.algorithm} does not match Upload-Checksum; "
                                       "it was discarded")
        if spool is None:
            await rows.store_together([piece] if piece else [], body)
        else:
            await asyncio.to_thread(spool.seek, 0)
            await rows.store_together(_pieces(spool, chunk_size), body)
        return None
    finally:
        if spool is not None:
            await asyncio.to_thread(spool.close)


async def _pieces(spool: IO[bytes], size: int):  # type: ignore[no-untyped-def]
    while piece := await asyncio.to_thread(spool.read, size):
        yield piece


def _error(ended: BodyEnded, writer: Writer, body: Body) -> ApiError:
    if isinstance(ended, BodyStopped):
        if writer.forced:
            return UploadNotFound("the upload was terminated while this request was writing it")
        return TusUploadInterrupted("this request stalled and a newer one took the upload over; "
                                    "what arrived before is kept")
    if isinstance(ended, BodyTooLong):
        return TusLengthExceeded(f"the body goes past the upload's length ({body.max_bytes} bytes were left)")
    if isinstance(ended, BodyTooSlow):
        return TusUploadTimeout(f"{ended}; what arrived before is kept")
    assert isinstance(ended, BodyBroken)
    return BadRequest(f"{ended}; HEAD the upload for the offset that was kept")


class _Rows:
    """Appends chunk rows after the upload's last one, each committed with the offset it advances, or
    all in one transaction."""

    def __init__(self, pool: Pool, upload: TusUpload, expiry_seconds: int) -> None:
        self.pool, self.upload_id, self.expiry = pool, upload.id, expiry_seconds
        self.offset = upload.offset
        self.index = 0

    async def store(self, piece: bytearray) -> None:
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await self._insert(conn, piece)
                await self._advance(conn, len(piece))
        BYTES_RECEIVED.labels("tus").inc(len(piece))

    async def store_together(self, pieces, body: Body) -> None:  # type: ignore[no-untyped-def]
        """Every piece, or none: one connection, one transaction (the pieces come from memory or a local
        file, never from the client). Memory is taken for each piece read back."""
        count = 0
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                if isinstance(pieces, list):
                    for piece in pieces:
                        await self._insert(conn, piece)
                        count += len(piece)
                else:
                    async for piece in pieces:
                        await body.share.take(2 * len(piece))
                        try:
                            await self._insert(conn, piece)
                        finally:
                            body.share.give(2 * len(piece))
                        count += len(piece)
                if count:
                    await self._advance(conn, count)
        BYTES_RECEIVED.labels("tus").inc(count)

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
        self.offset = moved[0]
