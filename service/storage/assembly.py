"""A blob being assembled by the worker: streamed into the store's writer, hashed on the way, and kept as a
local file for analysis (libmagic, Pillow, the media decoders read a path). The local directory store's own
temporary file is that file; with any other store the bytes are also copied under the work directory.
Nothing is visible under the key before commit(); discard() leaves nothing behind, here or in the store."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path

from service.storage.base import BlobStore, BlobWriter


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


class Assembly:
    def __init__(self, writer: BlobWriter, copy: Path | None) -> None:
        self._writer, self._copy_path = writer, copy
        self._copy = open(copy, "wb", buffering=0) if copy is not None else None  # noqa: SIM115 - closed by finish/discard
        self._hash = hashlib.sha256()
        self.size = 0

    @classmethod
    async def begin(cls, store: BlobStore, key: str, work_dir: Path, size: int | None = None) -> Assembly:
        """Aborts what an earlier, killed attempt left under this key, then starts the write."""
        for stale in await store.unfinished(key):
            await store.abort(stale)
        writer = await store.writer(key, size)
        if writer.local_path is not None:
            return cls(writer, None)
        await asyncio.to_thread(work_dir.mkdir, parents=True, exist_ok=True)
        return await asyncio.to_thread(cls, writer, work_dir / f"{key.rpartition('/')[2]}.{uuid.uuid4().hex[:8]}")

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
