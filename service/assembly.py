"""A file's blob assembled from its chunks: the Assembly (the store's write, hashed on the way, with a local copy
for analysis) and the loop that fills it with the chunks, read from PostgreSQL in index order. The worker runs
it once a file is complete (assemble), the streamer while it is still arriving (append_chunks into a Prefix).

The local directory store's own temporary file is the local copy; with any other store the bytes are also
copied under the work directory. Nothing is visible under the key before commit(); discard() leaves nothing
behind, here or in the store."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from service.config import MiB
from service.db import Pool
from service.models import File
from service.outcomes import CorruptContent
from service.storage import BlobStore, BlobWriter, blob_key
from service.store import workers as store

ASSEMBLY_SLICE = 4 * MiB  # bytes fetched per query while assembling: memory stays flat for any chunk size


class Assembly:
    def __init__(self, writer: BlobWriter, copy: Path | None) -> None:
        self._writer, self._copy_path = writer, copy
        self._copy = open(copy, "wb", buffering=0) if copy is not None else None  # noqa: SIM115 - closed by finish/discard
        self._hash = hashlib.sha256()
        self.size = 0

    @classmethod
    async def begin(cls, store: BlobStore, key: str, work_dir: Path, size: int | None = None) -> Assembly:
        """Removes what an earlier, killed attempt left under this key (the store's unfinished write, a local
        copy), then starts the write."""
        for stale in await store.unfinished(key):
            await store.abort(stale)
        writer = await store.writer(key, size)
        if writer.local_path is not None:
            return cls(writer, None)
        name = key.rpartition("/")[2]
        await asyncio.to_thread(_remove_copies_of, work_dir, name)
        return await asyncio.to_thread(cls, writer, work_dir / f"{name}.{uuid.uuid4().hex[:8]}")

    @property
    def path(self) -> Path:
        """The local file of the bytes written so far (complete after finish())."""
        path = self._copy_path or self._writer.local_path
        assert path is not None
        return path

    async def write(self, data: bytes | bytearray) -> None:
        await asyncio.gather(asyncio.to_thread(self._hash_and_copy, data), self._writer.write(data))
        self.size += len(data)

    def _hash_and_copy(self, data: bytes | bytearray) -> None:
        self._hash.update(data)
        if self._copy is not None:
            view = memoryview(data)
            while view:  # unbuffered writes may be short
                view = view[self._copy.write(view) :]

    async def finish(self) -> str:
        """Every byte written; returns the SHA-256 (hex). The object is not visible yet."""
        if self._copy is not None:
            await asyncio.to_thread(self._copy.close)
        return self._hash.hexdigest()

    async def commit(self) -> None:
        await self._writer.commit()
        await asyncio.to_thread(self._drop_copy)

    async def discard(self) -> None:
        try:
            await self._writer.abort()
        finally:
            await asyncio.to_thread(self._drop_copy)

    def _drop_copy(self) -> None:
        if self._copy is not None:
            self._copy.close()
            assert self._copy_path is not None
            self._copy_path.unlink(missing_ok=True)


def _remove_copies_of(work_dir: Path, name: str) -> None:
    """The local copies an earlier attempt at this blob left (a worker killed mid-file)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for path in work_dir.glob(f"{name}.*"):
        path.unlink(missing_ok=True)


def remove_stale_copies(work_dir: Path, older_than: float) -> int:
    """Working copies a killed worker left (blocking: run it in a thread); returns how many were removed."""
    removed, now = 0, time.time()
    for path in work_dir.glob("*") if work_dir.is_dir() else []:
        try:
            if path.is_file() and now - path.stat().st_mtime > older_than:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # another worker sharing the directory was quicker
    return removed


@dataclass
class Prefix:
    """The first `next_index` chunks of a file, appended (and hashed) in `assembly` while it arrived."""

    assembly: Assembly
    next_index: int


async def assemble(
    pool: Pool, store_: BlobStore, work_dir: Path, file: File, prefix: Prefix | None = None
) -> tuple[Assembly, str]:
    """Every chunk of a complete file appended (after what `prefix` holds already), checked for gaps and size.
    Returns the assembly and its SHA-256; the caller commits it (durable and visible under its key) or discards
    it. On any error nothing is left of it, prefix included."""
    try:
        async with pool.acquire_bulk() as conn:  # the chunks stream out on it: bulk work
            chunks = await store.list_chunk_lengths(conn, file.id)
            check_chunks(chunks, file.size)
            if prefix is None:
                assembly = await Assembly.begin(store_, blob_key(file.filename), work_dir, file.size)
            else:  # the chunks before prefix.next_index are in it already (and still in the database)
                assembly, chunks = prefix.assembly, chunks[prefix.next_index :]
                prefix = None  # the assembly is ours to commit or discard now
            try:
                await append_chunks(conn, file.id, chunks, assembly)
                return assembly, await assembly.finish()
            except BaseException:
                await asyncio.shield(assembly.discard())
                raise
    finally:
        if prefix is not None:  # failed before taking it over
            await asyncio.shield(prefix.assembly.discard())


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


def check_chunks(chunks: list[tuple[int, int]], size: int) -> None:
    """Chunks may have any lengths (tus writes what it receives), but must be 0..n-1 with no gap and
    hold exactly the declared size."""
    gaps = [i for i, (index, _) in enumerate(chunks) if index != i]
    if gaps:
        raise CorruptContent(f"chunks are not contiguous from 0: expected index {gaps[0]}, found {chunks[gaps[0]][0]}")
    total = sum(length for _, length in chunks)
    if total != size:
        raise CorruptContent(f"chunks hold {total} bytes, the upload declared {size}")
