"""The local-directory store (the default): keys are paths under one root. A write goes to a hidden
temporary file beside its final place, is fsynced, and renamed into place on commit, so nobody ever sees a
partial object under its key. Blocking IO runs in threads; an OSError becomes StorageUnavailable (a full or
failing disk is the environment's fault), except a missing object."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from service.storage.base import BlobInfo, BlobNotFound, StorageMissing, StorageUnavailable, Unfinished

READ_SIZE = 1024 * 1024
# A file written over minutes (issue 16 appends an upload while it arrives) is synced as it grows, so
# that the fsync on commit has little left to write (the kernel would otherwise keep most of it dirty).
# The synced part then leaves the page cache: nothing reads it back soon (processing looks at the head
# of a file, downloads come later), and keeping it cost the writing threads more than writing it
# (bench: chunkd's threads 1.2 CPU-s per GiB with the pages dropped, 2.7-3.1 without; see README).
SYNC_EVERY = 64 * 1024 * 1024


def _is_temporary(name: str) -> bool:
    return name.startswith(".") or name.endswith(".tmp")


@contextlib.contextmanager
def _unavailable(what: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageUnavailable(f"{what}: {e.strerror or e}") from e


class LocalWriter:
    def __init__(self, final: Path, key: str) -> None:
        self.key, self.final = key, final
        self.local_path: Path | None = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.part")
        self._file: io.FileIO | None = None
        self._written = self._synced = 0

    def open(self) -> None:
        assert self.local_path is not None
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.local_path, "wb", buffering=0)  # noqa: SIM115 - closed by commit/abort

    async def write(self, data: bytes | bytearray) -> None:
        with _unavailable(f"writing {self.key}"):
            await asyncio.to_thread(self._write, data)

    def _write(self, data: bytes | bytearray) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:  # unbuffered writes may be short
            view = view[self._file.write(view) :]
        self._written += len(data)
        if self._written - self._synced >= SYNC_EVERY:
            os.fdatasync(self._file.fileno())
            with contextlib.suppress(OSError):  # advice only: a file system without it loses nothing
                os.posix_fadvise(
                    self._file.fileno(), self._synced, self._written - self._synced, os.POSIX_FADV_DONTNEED
                )
            self._synced = self._written

    async def commit(self) -> None:
        with _unavailable(f"storing {self.key}"):
            await asyncio.to_thread(self._commit)

    def _commit(self) -> None:
        assert self._file is not None and self.local_path is not None
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.local_path, self.final)
        self.local_path = None
        fsync_dir(self.final.parent)

    async def abort(self) -> None:
        await asyncio.to_thread(self._abort)

    def _abort(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.local_path is not None:
            self.local_path.unlink(missing_ok=True)


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root.resolve())

    def path(self, key: str) -> Path:
        """An absolute path inside the root; refuses anything that would leave it."""
        root = self.root.resolve()
        path = (root / key).resolve()
        if root not in path.parents:
            raise ValueError(f"{key!r} is outside the storage directory")
        return path

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    async def writer(self, key: str, size_hint: int | None = None) -> LocalWriter:
        writer = LocalWriter(self.path(key), key)
        if not await asyncio.to_thread(self.root.is_dir):  # an unmounted disk: never write in its place
            raise StorageMissing(f"writing {key}: the storage directory {self.description} is missing")
        opening = asyncio.ensure_future(asyncio.to_thread(writer.open))  # at once: an empty blob has its file too
        try:
            with _unavailable(f"writing {key}"):
                await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The thread goes on and opens the file for a writer nobody holds: close and remove it then.
            opening.add_done_callback(lambda _: writer._abort())
            raise
        return writer

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        try:
            with _unavailable(f"reading {key}"):
                f = await asyncio.to_thread(open, self.path(key), "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        return self._read(f, offset, length)

    async def _read(self, f, offset: int, length: int | None) -> AsyncIterator[bytes]:  # type: ignore[no-untyped-def]
        try:
            f.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                size = READ_SIZE if remaining is None else min(READ_SIZE, remaining)
                with _unavailable("reading a blob"):
                    data = await asyncio.to_thread(f.read, size)
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            f.close()

    async def head(self, key: str) -> BlobInfo | None:
        try:
            with _unavailable(f"reading {key}"):
                info = await asyncio.to_thread(self.path(key).stat)
        except FileNotFoundError:
            return None
        return BlobInfo(key, info.st_size, info.st_mtime) if stat.S_ISREG(info.st_mode) else None

    async def delete(self, key: str) -> None:
        with _unavailable(f"deleting {key}"):
            await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def objects(self, prefix: str) -> AsyncIterator[BlobInfo]:
        with _unavailable(f"listing {prefix}"):
            found = await asyncio.to_thread(self._walk, prefix, False)
        for key, info in found:
            yield BlobInfo(key, info.st_size, info.st_mtime)

    async def unfinished(self, prefix: str) -> list[Unfinished]:
        """Temporary files: ours (.<name>.<tag>.part), and any other hidden or .tmp file a crash left."""
        directory = prefix.rpartition("/")[0]
        with _unavailable(f"listing {prefix}"):
            found = await asyncio.to_thread(self._walk, directory + "/" if directory else "", True)
        writes = []
        for temp_key, info in found:
            where, _, name = temp_key.rpartition("/")
            final = name[1:].split(".")[0] if name.startswith(".") and name.endswith(".part") else name
            key = f"{where}/{final}" if where else final
            if key.startswith(prefix) or temp_key.startswith(prefix):
                writes.append(Unfinished(key, info.st_mtime, temp_key, temp_key))
        return writes

    async def abort(self, write: Unfinished) -> None:
        with _unavailable(f"removing {write.label}"):
            await asyncio.to_thread(self.path(write.token).unlink, missing_ok=True)

    def _walk(self, prefix: str, temporary: bool) -> list[tuple[str, os.stat_result]]:
        """(key, stat) of regular files under the prefix's directory: committed ones or temporary ones."""
        directory = prefix.rpartition("/")[0]
        base = self.path(directory) if directory else self.root.resolve()
        root = self.root.resolve()
        found = []
        for where, dirs, names in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # scratch space (.work), not blobs
            for name in names:
                if _is_temporary(name) != temporary:
                    continue
                path = Path(where, name)
                key = str(path.relative_to(root))
                if not temporary and not key.startswith(prefix):
                    continue
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue  # removed meanwhile
                if stat.S_ISREG(info.st_mode):
                    found.append((key, info))
        return found

    async def presign_get(self, key: str, expires: int, content_type: str, disposition: str | None) -> str | None:
        return None

    async def check(self) -> str:
        with _unavailable(f"{self.description} is not writable"):
            await asyncio.to_thread(self._probe)
        return f"{self.description} writable"

    def _probe(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".doctor-{uuid.uuid4().hex[:8]}"
        try:
            with open(probe, "wb") as f:
                f.write(b"ok")
                f.flush()
                os.fsync(f.fileno())
            if probe.read_bytes() != b"ok":
                raise OSError(f"{probe} read back wrong bytes")
        finally:
            probe.unlink(missing_ok=True)

    async def close(self) -> None:
        pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
