"""What the worker does to a file's bytes itself: assemble them, and store the thumbnail that
service/media made of them (in its child processes). Synchronous by design: the worker runs every
function here with asyncio.to_thread (hashlib releases the GIL)."""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from service.media.thumbnail import Thumbnail, suffix


class CorruptContent(Exception):
    """The bytes themselves are wrong: FAILED at once, no retry helps."""


class Assembly:
    """A blob being written: temporary name beside its final place, SHA-256 on the way, fsync,
    atomic rename. Nobody ever sees a partial file under the final name."""

    def __init__(self, final: Path, tag: str, sync_every: int = 0) -> None:
        self.final = final
        self.temp = final.with_name(f".{final.name}.{tag}.part")
        final.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.temp, "wb", buffering=0)  # noqa: SIM115 - closed by close()/discard()
        self._hash = hashlib.sha256()
        self.size = 0
        # Written while an upload arrives, the file is synced as it grows, so that the fsync after the
        # last byte has little left to write (the kernel would otherwise keep most of it dirty).
        self._sync_every, self._synced = sync_every, 0

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        view = memoryview(data)
        while view:  # unbuffered writes may be short
            view = view[self._file.write(view):]
        self.size += len(data)
        if self._sync_every and self.size - self._synced >= self._sync_every:
            os.fdatasync(self._file.fileno())
            self._synced = self.size

    def finish(self) -> str:
        """Durable under the temporary name; returns the SHA-256 (hex)."""
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hash.hexdigest()

    def commit(self) -> None:
        os.replace(self.temp, self.final)
        fsync_dir(self.final.parent)

    def discard(self) -> None:
        self._file.close()
        self.temp.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_thumbnail(thumbnail_base: Path, thumbnail: Thumbnail) -> None:
    """At thumbnail_base + the format's suffix, atomically (a disk error here is an OSError the worker retries)."""
    final = thumbnail_base.with_name(thumbnail_base.name + suffix(thumbnail.mimetype))
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
    temp.write_bytes(thumbnail.data)
    os.replace(temp, final)
