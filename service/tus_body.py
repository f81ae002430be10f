"""A tus request body, streamed into chunk rows: never held whole, at most one chunk in memory.

Without Upload-Checksum every chunk row commits together with the offset it advances, so when the
client disconnects, times out or is taken over, the bytes received so far are kept and the offset says
exactly how many (the spec's "store as much as possible"). With Upload-Checksum nothing may become
visible before the whole body is verified: the rows go into one transaction that commits only on a
matching digest, and a mismatch or a cut-off body leaves the upload as it was."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg
from aiohttp import StreamReader
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.http_exceptions import HttpProcessingError

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

_BODY_BROKEN = (OSError, HttpProcessingError, ClientPayloadError)


@dataclass(frozen=True)
class Received:
    """Where the upload stands after a body: its committed offset and expiry, and the error to answer
    with once the caller has looked at them (kept bytes may have completed the upload), or None."""
    offset: int
    expires_at: datetime | None
    error: ApiError | None


Progress = Callable[[int], Awaitable[None]]


class Verifier(Protocol):
    """A digest the whole body must match (tus Upload-Checksum, the draft's Content-Digest)."""
    @property
    def digest(self) -> bytes: ...

    def new(self) -> hashlib._Hash: ...

    def mismatch(self) -> ApiError: ...


@dataclass
class Limits:
    room: int              # bytes the upload can still take
    idle_timeout: float    # seconds without a byte before the body counts as cut off
    expiry_seconds: int    # an upload being written stays alive this long after each write


class _Stopped(Exception):
    def __init__(self, error: ApiError, leftover: bytes = b"") -> None:
        self.error, self.leftover = error, leftover


def _leftover(content: StreamReader) -> bytes:
    """What arrived before the connection broke but was not read yet. aiohttp makes every read raise
    once the connection is lost, buffer or not; its unchecked reader is the one way to keep those bytes."""
    try:
        return content._read_nowait(-1)
    except Exception:  # an aiohttp without it: those few bytes are resent after the HEAD
        return b""


async def _read(content: StreamReader, writer: Writer, size: int, idle_timeout: float) -> bytes:
    """Up to `size` bytes, b"" at the end; _Stopped when the body breaks, idles or is taken over."""
    if writer.stop.is_set():
        raise _Stopped(_interrupted(writer))
    try:
        data = content.read_nowait(size)
        if data or content.is_eof():
            return data
        read = asyncio.ensure_future(content.read(size))
        stop = asyncio.ensure_future(writer.stop.wait())
        done, _ = await asyncio.wait((read, stop), timeout=idle_timeout, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if read in done:
            return read.result()
        read.cancel()
        with contextlib.suppress(asyncio.CancelledError, *_BODY_BROKEN):
            await read
    except _BODY_BROKEN as e:
        # A connection lost mid-body (a browser's abort, a dead link) is the client leaving, not a bad request.
        kind = ClientClosedRequest if isinstance(e, ConnectionError) else BadRequest
        raise _Stopped(kind(f"the request body broke off ({type(e).__name__}); "
                            "HEAD the upload for the offset that was kept"), _leftover(content)) from None
    if writer.stop.is_set():
        raise _Stopped(_interrupted(writer))
    raise _Stopped(TusUploadTimeout(f"no bytes for {idle_timeout:g} seconds; what arrived before is kept"))


def _interrupted(writer: Writer) -> ApiError:
    if writer.forced:
        return UploadNotFound("the upload was terminated while this request was writing it")
    return TusUploadInterrupted("this request stalled and a newer one took the upload over; "
                                "what arrived before is kept")


class _ChunkSink:
    """Appends chunk rows after the upload's last one; commits each with its offset, or all at the end."""

    def __init__(self, conn: asyncpg.Connection, upload: File, expiry_seconds: int, verified: bool,
                 on_stored: Progress | None) -> None:
        self.conn, self.upload_id, self.expiry = conn, upload.id, expiry_seconds
        self.on_stored = on_stored
        self.protocol = upload.protocol
        self.offset, self.expires_at = upload.offset, upload.expires_at
        self.verified = verified
        self.pending = 0           # bytes inserted but not yet committed (verified mode)
        self.index = 0
        self.transaction: asyncpg.transaction.Transaction | None = None

    async def open(self) -> None:
        self.index = await store.get_next_chunk_index(self.conn, self.upload_id)
        if self.verified:
            self.transaction = self.conn.transaction()
            await self.transaction.start()

    async def write(self, data: memoryview) -> None:
        if not data:
            return
        try:
            if self.verified:
                await store.insert_chunk(self.conn, self.upload_id, self.index, data)
                self.pending += len(data)
            else:
                async with self.conn.transaction():
                    await store.insert_chunk(self.conn, self.upload_id, self.index, data)
                    await self._advance(len(data))
                BYTES_RECEIVED.labels(self.protocol).inc(len(data))
                if self.on_stored is not None:
                    await self.on_stored(self.offset)
        except asyncpg.ForeignKeyViolationError:
            raise UploadNotFound("the upload was removed while this request was writing it") from None
        self.index += 1

    async def commit(self) -> None:
        if self.transaction is None:
            return
        if self.pending:
            await self._advance(self.pending)
        await self.transaction.commit()
        self.transaction = None
        BYTES_RECEIVED.labels(self.protocol).inc(self.pending)

    async def discard(self) -> None:
        if self.transaction is not None:
            await self.transaction.rollback()
            self.transaction = None

    async def _advance(self, count: int) -> None:
        moved = await store.advance_offset(self.conn, self.upload_id, self.offset, count, self.expiry)
        if moved is None:  # raises inside the transaction: the chunk goes with it
            raise UploadNotFound("the upload is no longer being uploaded")
        self.offset, self.expires_at = moved


async def receive(content: StreamReader, conn: asyncpg.Connection, writer: Writer, upload: File,
                  limits: Limits, checksum: Verifier | None, on_stored: Progress | None = None) -> Received:
    """Stores the body from the upload's offset on; says where the upload stands after it. on_stored
    hears each new committed offset (the draft's progress 104s)."""
    sink = _ChunkSink(conn, upload, limits.expiry_seconds, verified=checksum is not None, on_stored=on_stored)
    hasher = checksum.new() if checksum else None
    # One row's bytes, filled in place and handed to the driver as they are (it copies them into its
    # message as it sends), then filled again: no slicing, joining or re-allocating per row.
    row = bytearray(min(upload.chunk_size, limits.room))
    view, filled = memoryview(row), 0
    received = 0
    error: ApiError | None = None
    await sink.open()
    try:
        while error is None:
            # One byte past the room is enough to know the body is too long.
            want = max(1, min(len(row) - filled, limits.room - received + 1))
            try:
                piece = await _read(content, writer, want, limits.idle_timeout)
            except _Stopped as stopped:
                piece, error = stopped.leftover, stopped.error
            if not piece and error is None:
                break
            writer.progressed()
            received += len(piece)
            if received > limits.room:
                piece = piece[:len(piece) - (received - limits.room)]
                error = TusLengthExceeded(f"the body goes past the upload's length ({limits.room} bytes were left)")
            if hasher is not None:
                hasher.update(piece)
            rest = memoryview(piece)
            while rest:  # a piece fits the row, but what arrived before a break may be longer
                taken = min(len(rest), len(row) - filled)
                view[filled:filled + taken] = rest[:taken]
                filled, rest = filled + taken, rest[taken:]
                if filled == len(row):
                    await sink.write(view)
                    filled = 0
        if hasher is not None and checksum is not None:
            if error is None and hasher.digest() != checksum.digest:
                error = checksum.mismatch()
            if error is not None:  # an unverified body is never kept, even in part
                await sink.discard()
                return Received(sink.offset, sink.expires_at, error)
        await sink.write(view[:filled])
        await sink.commit()
    except BaseException:
        await sink.discard()
        raise
    return Received(sink.offset, sink.expires_at, error)
