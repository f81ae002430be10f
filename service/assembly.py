"""The assembly loop: a file's chunks, read from PostgreSQL in index order, appended to its blob's
write in the store (hashed on the way, service.storage.assembly). The worker runs it once a file is
complete, the streamer while it is still arriving."""

from __future__ import annotations

import asyncio

import asyncpg

from service.config import MiB
from service.processing import CorruptContent
from service.storage.assembly import Assembly
from service.store import workers as store

ASSEMBLY_SLICE = 4 * MiB  # bytes fetched per query while assembling: memory stays flat for any chunk size


async def assemble(conn: asyncpg.Connection, file_id: str, chunks: list[tuple[int, int]], assembly: Assembly) -> str:
    """Chunks in index order appended. Returns the SHA-256; the caller commits (durable and visible
    under its key) or discards."""
    await append_chunks(conn, file_id, chunks, assembly)
    return await assembly.finish()


async def append_chunks(
    conn: asyncpg.Connection, file_id: str, chunks: list[tuple[int, int]], assembly: Assembly
) -> None:
    """Chunks in index order, a slice at a time; fetching the next slice overlaps writing and hashing
    the previous one."""
    writing: asyncio.Future[None] | None = None
    try:
        for index, length in chunks:
            for offset in range(0, length, ASSEMBLY_SLICE):
                size = min(ASSEMBLY_SLICE, length - offset)
                data = await store.get_chunk_slice(conn, file_id, index, offset, size)
                if data is None or len(data) != size:
                    raise CorruptContent(f"chunk {index} vanished during assembly")
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(assembly.write(data))
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():  # never discard under a running write
            await asyncio.wait([writing])
